"""Stage 2: class-conditional priors over code maps: autoregressive (a transformer) and masked (MaskGIT)."""

from vq.stage2_prior.config import PriorConfig
from vq.stage2_prior.model import CodePrior, PriorOutput
from vq.stage2_prior.fast import sample_codes_fast
from vq.stage2_prior.masked import MaskedPrior, MaskedPriorConfig, sample_masked, sample_masked_fast
from vq.stage2_prior.sampling import sample_codes, score_codes

PRIORS = {"transformer": CodePrior, "masked": MaskedPrior}
# `vq fit-prior --kind`: what users call each kind -> its registry name (runs store the latter).
PRIOR_KINDS = {"autoregressive": "transformer", "masked": "masked"}

__all__ = ["PRIORS", "PRIOR_KINDS", "CodePrior", "MaskedPrior", "MaskedPriorConfig", "PriorConfig", "PriorOutput", "sample_codes",
           "sample_codes_fast", "sample_masked", "sample_masked_fast", "score_codes"]
