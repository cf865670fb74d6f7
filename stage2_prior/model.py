"""A class-conditional autoregressive prior over code maps (van den Oord et al. 2017, section
3.2, with a transformer as in Esser et al. 2021, "Taming Transformers"), with class dropout for
classifier-free guidance (Ho & Salimans 2022).

The sequence is `[class token] + codes` in raster order. The input vocabulary is the K codes,
then one token per class, then the null class; the output head has only K logits, so class and
null tokens can never be sampled.

A sketch prior (`condition = "sketch"`) also reads an edge map of the image (`pipeline.sketch`)
through cross-attention in every block (taming-transformers conditions on segmentation maps
with a prefix instead). Cross-attention keeps the sequence at h*w + 1 tokens, so training costs
one extra attention per block over h*w condition tokens rather than doubling the sequence, and
the sampler computes the condition's keys and values once per batch (a static cache). The edge
map enters as one token per code cell: a patch embedding, a 3x3 convolution that lets each cell
see its neighbours' lines, learned positions. A learned null sketch stands in when a row has
none; training replaces the class alone, the sketch alone, or both with their nulls, so
guidance can contrast any condition with the fully unconditional row.

Shape legend: b - batch, n - sequence, h w - code grid, k - codebook size.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from x_transformers import Decoder, TransformerWrapper

from vq.stage2_prior.config import PriorConfig


class SketchEncoder(nn.Module):
    """(b, c, S, S) sketch -> (b, h*w, dim): one condition token per code cell. Channel 0 holds
    the lines; an encoder with `channels` = 2 also reads channel 1, the drawing flag (1: a drawing,
    0: the detector's edge map), and takes a sketch without it as an edge map; a one-channel
    encoder reads the lines alone."""

    def __init__(self, dim: int, size: int, grid: int, channels: int = 1):
        super().__init__()
        patch = size // grid
        self.channels = channels
        self.patch = nn.Conv2d(channels, dim, patch, stride=patch)
        self.mix = nn.Conv2d(dim, dim, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, grid * grid, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)

    def forward(self, sketch: torch.Tensor) -> torch.Tensor:
        sketch = sketch[:, : self.channels].to(self.pos.dtype)
        if sketch.shape[1] < self.channels:
            sketch = F.pad(sketch, (0, 0, 0, 0, 0, self.channels - sketch.shape[1]))  # no flag: an edge map
        x = self.mix(F.gelu(self.patch(sketch)))
        return self.norm(rearrange(x, "b d h w -> b (h w) d") + self.pos)


@dataclass
class PriorOutput:
    logits: torch.Tensor  # (b, n, k)
    loss: torch.Tensor  # mean cross-entropy in nats per code
    metrics: dict[str, torch.Tensor]


def layer_options(c: PriorConfig) -> dict:
    """The x-transformers attention-layer arguments both prior kinds share: size, dropout, SDPA
    attention, cross-attention for a sketch prior, grouped-query heads."""
    return dict(
        dim=c.dim, depth=c.depth, heads=c.heads, attn_dim_head=c.dim // c.heads,
        attn_dropout=c.dropout, ff_dropout=c.dropout, ff_mult=c.ff_mult,
        attn_flash=True,  # F.scaled_dot_product_attention: flash / memory-efficient kernels on GPUs
        cross_attend="sketch" in c.conditions,
        **({"attn_kv_heads": c.kv_heads} if c.kv_heads not in (None, c.heads) else {}),
    )


def add_sketch_condition(prior: nn.Module) -> None:
    """A sketch prior's condition modules (either kind): the sketch encoder and the learned null sketch."""
    c = prior.config
    if "sketch" in c.conditions:
        prior.sketch_encoder = SketchEncoder(c.dim, c.sketch_size, c.height, c.sketch_channels)
        prior.null_sketch = nn.Parameter(torch.randn(1, c.seq_len, c.dim) * 0.02)


class CodePrior(nn.Module):
    name = "transformer"
    config_class = PriorConfig
    # What it can do, read by the pipeline instead of its name: an exact likelihood (raster-order
    # factorisation), and completion of a region that precedes known codes only by forcing them
    # and reranking whole draws (`score`), not natively.
    exact_likelihood = True
    any_mask = False
    parallel_decoding = False  # one code per step, in raster order

    def __init__(self, config: PriorConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        dim_head = c.dim // c.heads
        self.net = TransformerWrapper(
            num_tokens=c.codebook_size + c.num_classes + 1,
            logits_dim=c.codebook_size,
            max_seq_len=c.seq_len + 1,
            use_abs_pos_emb=False,
            emb_dropout=c.dropout,
            attn_layers=Decoder(rotary_pos_emb=True, rotary_emb_dim=min(dim_head, max(32, dim_head // 2)),
                                **layer_options(c)),
        )
        add_sketch_condition(self)

    @staticmethod
    def image_memory(c: PriorConfig) -> tuple[int, str]:
        """(bytes, what sets them) of the working memory to draw one image's codes (fp32): for each
        of up to three guided rows, the key/value cache of every layer, a teacher-forced pass
        (scoring completions: activations, logits and attention scores over the sequence)."""
        n = c.seq_len + 1
        per_row = 2 * c.depth * n * c.dim + n * (c.codebook_size + 10 * c.dim) + c.heads * n * n
        return 4 * 3 * per_row, f"{c.height}x{c.width} codes from {c.codebook_size}, dim {c.dim}, depth {c.depth}"

    @property
    def sketched(self) -> bool:
        return "sketch" in self.config.conditions

    @property
    def conditions(self) -> frozenset[str]:
        return self.config.conditions

    def sample(self, labels: torch.Tensor | None, *, generator: torch.Generator | None = None, **kwargs) -> torch.Tensor:
        """Draw (b, h, w) code maps: the prior interface every caller uses (see
        `sampling.sample_codes` for the arguments: cfg_scale, temperature, top_k, top_p, known,
        known_mask, sketch), through the fast static-shape path."""
        from vq.stage2_prior.fast import sample_codes_fast

        return sample_codes_fast(self, labels, generator=generator, **kwargs)

    def score(self, codes: torch.Tensor, labels: torch.Tensor | None, mask: torch.Tensor | None = None,
              sketch: torch.Tensor | None = None) -> torch.Tensor:
        """(b,) log-likelihood in nats of the codes (over `mask`'s positions)."""
        from vq.stage2_prior.sampling import score_codes

        return score_codes(self, codes, labels, mask, sketch)

    def context(self, sketch: torch.Tensor | None, batch: int, keep: torch.Tensor | None = None) -> torch.Tensor | None:
        """The cross-attention context of a sketch prior (None for a class prior): (b, c, S, S)
        sketches (the lines, and optionally the drawing flag: `SketchEncoder`), or None for the
        null sketch on every row; `keep` (b,) bool puts the null
        sketch on the rows where it is False."""
        if not self.sketched:
            return None
        null = self.null_sketch.expand(batch, -1, -1)
        if sketch is None:
            return null
        ctx = self.sketch_encoder(sketch)
        return ctx if keep is None else torch.where(keep[:, None, None], ctx, null.to(ctx.dtype))

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def class_tokens(self, labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """(b,) class indices (or None / -1 for unconditional) -> (b, 1) input tokens."""
        if labels is None:
            labels = torch.full((batch,), self.null_class, device=device)
        labels = torch.where(labels < 0, torch.full_like(labels, self.null_class), labels)
        return (self.config.codebook_size + labels).long().unsqueeze(1)

    def logits(self, codes: torch.Tensor, labels: torch.Tensor | None, sketch: torch.Tensor | None = None,
               keep_sketch: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits: (b, h, w) codes -> (b, h*w, k), position i predicting code i."""
        flat = rearrange(codes, "b h w -> b (h w)").long()
        tokens = torch.cat([self.class_tokens(labels, flat.shape[0], flat.device), flat[:, :-1]], dim=1)
        context = self.context(sketch, flat.shape[0], keep_sketch)
        return self.net(tokens) if context is None else self.net(tokens, context=context)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None, sketch: torch.Tensor | None = None,
                step: int = 0) -> PriorOutput:
        keep_sketch = None
        if self.training and labels is not None and (self.sketched or self.config.class_dropout > 0):
            # One draw per row: [0, c) drops both conditions, then [c, c + s) the sketch alone and
            # [c + s, 2c + s) the class alone (a class prior: the first range only).
            c, s = self.config.class_dropout, (self.config.sketch_dropout if self.sketched else 0.0)
            u = torch.rand(labels.shape, device=labels.device)
            drop_class = (u < c) | ((u >= c + s) & (u < 2 * c + s)) if self.sketched else u < c
            keep_sketch = u >= c + s if self.sketched else None
            labels = torch.where(drop_class, torch.full_like(labels, self.null_class), labels)
        logits = self.logits(codes, labels, sketch, keep_sketch)
        target = rearrange(codes, "b h w -> b (h w)").long()
        loss = F.cross_entropy(logits.float().transpose(1, 2), target)
        return PriorOutput(logits, loss, {"nll": loss.detach()})
