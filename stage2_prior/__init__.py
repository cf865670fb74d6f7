"""Stage 2: a class-conditional autoregressive transformer prior over code maps."""

from vq.stage2_prior.config import PriorConfig
from vq.stage2_prior.model import CodePrior, PriorOutput
from vq.stage2_prior.fast import sample_codes_fast
from vq.stage2_prior.sampling import sample_codes, score_codes

PRIORS = {"transformer": CodePrior}

__all__ = ["PRIORS", "CodePrior", "PriorConfig", "PriorOutput", "sample_codes", "sample_codes_fast", "score_codes"]
