"""A masked prior over code maps with parallel decoding: MaskGIT (Chang et al. 2022, "MaskGIT:
Masked Generative Image Transformer"), class-conditional with class dropout for classifier-free
guidance (Ho & Salimans 2022), beside the autoregressive prior (`autoregressive.py`) over the same
codes.

A bidirectional x-transformers Encoder reads `[class token] + codes`, some codes replaced by a
mask token, and predicts every code at once. The input vocabulary is the K codes, one token per
class, the null class (as the autoregressive prior numbers them), then the mask token; the
output head has only K logits, so class, null and mask tokens can never be sampled. A sketch
prior reads the edge map by cross-attention with the autoregressive prior's `SketchEncoder` and
learned null sketch, and drops class, sketch or both in training the same way.

Training masks ceil(cos(pi/2 * r) * n) codes of each row, r ~ U(0, 1) (at least one), at random
positions, and takes the cross-entropy on the masked positions only.

Sampling (`sample_masked`, the readable reference loop, as google-research/maskgit's
`parallel_decode.py`): every unknown code starts masked; known codes (completion of any region)
are given from the start and are never masked or changed. Each of `steps` iterations predicts
every masked code at once (guided: the conditional rows and their null twins in one batch, their
logits mixed as the autoregressive sampler mixes them), draws through the same temperature /
top-k / top-p filters, scores each draw by its log-probability plus Gumbel noise that anneals to
zero (`confidence`), and re-masks the least confident draws so that the share of the unknown
codes still masked follows the cosine schedule (`masking.py`).
Codes once kept stay decided. There is no exact likelihood: `masked_ce` measures the masked-code
cross-entropy at a fixed masking ratio instead.

Sampling lives in `masked_sampling.py`; `sample_masked_fast` runs the same loop with the network's forward over static buffers: every
step has the same shapes, so on CUDA it is recorded once as a CUDA graph per batch size and
replayed (`fast.py`'s approach and fallback); on a CPU it runs eager.

Shape legend: b - batch (guided: rows, twice or three times the images), n - codes per map (h * w),
h w - code grid, k - codebook size, s - sketch side.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from x_transformers import Encoder

from vq.stage2_prior.autoregressive import PRESETS
from vq.stage2_prior.base import HeldOut, PriorOutput, SamplingOptions
from vq.stage2_prior.conditions import ConditionedPrior, layer_options
from vq.stage2_prior.config import PriorConfig
from vq.stage2_prior.masked_sampling import STEPS, sample_masked_fast
from vq.stage2_prior.masking import random_positions, training_count

EVAL_RATIO = 0.5  # `masked_ce`'s share of masked codes: one fixed ratio, so that runs compare


@dataclass
class MaskedPriorConfig(PriorConfig):
    """The masked prior's config: the autoregressive prior's fields, each meaning the same, and
    its checks. A type of its own, so a run's config names its prior and the two kinds' defaults
    can part without touching each other."""


@dataclass
class MaskedSettings:
    """A masked prior's own sampling settings (`SamplingOptions.settings`; `vq sample --steps`)."""

    steps: int = STEPS  # decoding iterations, each predicting every masked code at once

    RANGES: ClassVar[dict] = {"steps": (1, 1024)}


class MaskedPrior(ConditionedPrior):
    name = "masked"
    summary = "MaskGIT: all codes at once over a few steps, completing any region natively"
    config_class = MaskedPriorConfig
    settings_class = MaskedSettings
    # The autoregressive prior's sizes and budgets, so the two kinds compare at equal size and time.
    presets = PRESETS
    exact_likelihood = False  # no factorisation of p(codes): `masked_ce` is its measure
    any_mask = True  # known codes are simply never masked
    parallel_decoding = True  # all codes at once over `steps` iterations
    held_out = HeldOut("masked_bits_per_code", "test masked-code cross-entropy, bits (not a likelihood)",
                       "val_masked_bits")

    def __init__(self, config: MaskedPriorConfig):
        super().__init__(config)
        c = config
        # One more token, the mask; learned absolute positions, as MaskGIT's: every code sees every
        # other, and a table can learn the grid's two dimensions, which a raster-order rotary offset cannot.
        self.net = self.network(Encoder(**layer_options(c)), extra_tokens=1, abs_positions=True)
        self.add_conditions()

    @property
    def mask_token(self) -> int:
        return self.config.codebook_size + self.config.num_classes + 1

    def code_logits(self, tokens: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """(b, 1 + n) input tokens (class token first) -> (b, n, k) logits of every code."""
        logits = self.net(tokens) if context is None else self.net(tokens, context=context)
        return logits[:, 1:]

    def masked_logits(self, codes: torch.Tensor, masked: torch.Tensor, labels: torch.Tensor | None,
                      sketch: torch.Tensor | None = None, keep_sketch: torch.Tensor | None = None) -> torch.Tensor:
        """(b, h, w) codes with the (b, n) `masked` positions hidden -> (b, n, k) logits."""
        flat = rearrange(codes, "b h w -> b (h w)").long()
        tokens = torch.cat([self.class_tokens(labels, flat.shape[0], flat.device),
                            flat.masked_fill(masked, self.mask_token)], dim=1)
        return self.code_logits(tokens, self.context(sketch, flat.shape[0], keep_sketch))

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None, sketch: torch.Tensor | None = None,
                step: int = 0) -> PriorOutput:
        """The training objective: (b, h, w) codes -> logits (b, n, k), and as loss the mean
        cross-entropy in nats over the masked codes only (a cosine-scheduled share of each row)."""
        given, (labels, keep_sketch) = labels, self.drop_conditions(labels)
        b, n = codes.shape[0], self.config.seq_len
        masked = random_positions(training_count(b, n, codes.device), n)
        logits = self.masked_logits(codes, masked, labels, sketch, keep_sketch)
        loss = masked_code_ce(logits, codes, masked).sum() / masked.sum()
        return self.with_recognition(PriorOutput(logits, loss, {"masked_ce": loss.detach()}), sketch, given)

    @torch.no_grad()
    def masked_ce(self, codes: torch.Tensor, labels: torch.Tensor | None, sketch: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, ratio: float = EVAL_RATIO) -> torch.Tensor:
        """(b,) mean cross-entropy in nats of each row's masked codes given its other codes and
        its conditions, with round(ratio * n) codes (at least one) masked at positions drawn
        from `generator`. A masked prior's evaluation measure at a fixed masking ratio, not a
        likelihood: it is not comparable with an autoregressive prior's NLL."""
        b, n = codes.shape[0], self.config.seq_len
        count = torch.full((b,), min(n, max(1, round(ratio * n))), device=codes.device)
        masked = random_positions(count, n, generator)
        per_code = masked_code_ce(self.masked_logits(codes, masked, labels, sketch), codes, masked)
        return per_code.sum(-1) / count

    def held_out_nats(self, codes: torch.Tensor, labels: torch.Tensor | None, sketch: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """(b,) `masked_ce`: half of each map masked at positions drawn from `generator`."""
        return self.masked_ce(codes, labels, sketch, generator)

    def sample(self, labels: torch.Tensor | None, *, options: SamplingOptions, generator: torch.Generator | None = None,
               known: torch.Tensor | None = None, known_mask: torch.Tensor | None = None,
               sketch: torch.Tensor | None = None) -> torch.Tensor:
        """Draw (b, h, w) code maps through the fast static-shape path (`masked_sampling.sample_masked`
        says what each argument means), in its settings' `steps`."""
        return sample_masked_fast(self, labels, guidance=options.guidance, class_guidance=options.class_guidance,
                                  temperature=options.temperature, top_k=options.top_k, top_p=options.top_p,
                                  generator=generator, known=known, known_mask=known_mask, sketch=sketch,
                                  steps=self.settings(options).steps)


def masked_code_ce(logits: torch.Tensor, codes: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """(b, n, k) logits, (b, h, w) codes, (b, n) masked -> (b, n) cross-entropy, zero where not
    masked. Weighting every position, rather than indexing the masked ones, keeps the step free
    of a device sync."""
    target = rearrange(codes, "b h w -> b (h w)").long()
    ce = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
    return ce * masked
