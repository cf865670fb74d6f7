"""Stage 2: priors over code maps behind one contract (`base.Prior`), each kind in a file of its
own: autoregressive (a transformer, KV-cached sampling) and masked (MaskGIT). The registry
`PRIORS` is the only place a kind's name meets its class; a new kind is its file plus
`register_prior(Kind)`.

Imports: torch, einops, x-transformers and this package only (never stage 1, the pipeline or the
command line): a prior depends on exported code maps alone."""

import warnings

with warnings.catch_warnings():
    # x-transformers decorates a helper with torch.jit.script when it is imported, which this torch
    # deprecates: a FutureWarning on every `import vq.pipeline` that no vq user can act on.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import x_transformers  # noqa: F401

from vq.stage2_prior.autoregressive import AutoregressivePrior
from vq.stage2_prior.base import PRIORS, HeldOut, NoSettings, Prior, PriorOutput, SamplingOptions, prior_kind, register_prior
from vq.stage2_prior.config import PriorConfig
from vq.stage2_prior.fast import sample_codes_fast
from vq.stage2_prior.masked import MaskedPrior, MaskedPriorConfig, MaskedSettings
from vq.stage2_prior.masked_sampling import sample_masked, sample_masked_fast
from vq.stage2_prior.sampling import sample_codes, score_codes

# The kinds vq ships, in the order commands list them (the first is the default).
for _kind in (AutoregressivePrior, MaskedPrior):
    register_prior(_kind)

__all__ = ["PRIORS", "AutoregressivePrior", "HeldOut", "MaskedPrior", "MaskedPriorConfig", "MaskedSettings", "NoSettings",
           "Prior", "PriorConfig", "PriorOutput", "SamplingOptions", "prior_kind", "register_prior", "sample_codes",
           "sample_codes_fast", "sample_masked", "sample_masked_fast", "score_codes"]
