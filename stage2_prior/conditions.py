"""What both transformer prior kinds share: how they read their conditions, and the size of
their attention layers.

A class enters as one input token (one per class, then the null class), so the output head of
K code logits can never produce it. A sketch prior (`condition = "sketch"`) also reads an edge map
of the image (`pipeline.sketch`) through cross-attention in every block (taming-transformers
conditions on segmentation maps with a prefix instead): the sequence stays h*w + 1 tokens, and a
sampler computes the condition's keys and values once per batch. The edge map enters as one
token per code cell: a patch embedding, a 3x3 convolution that lets each cell see its
neighbours' lines, learned positions. A learned null sketch stands in when a row has none.
Training replaces the class alone, the sketch alone, or both with their nulls (class dropout for
classifier-free guidance, Ho & Salimans 2022), so guidance can contrast any condition with the
fully unconditional row.

A prior with a recogniser (`PriorConfig.recognises`) also carries `SketchRecogniser`, a small CNN
that tells a drawing's class from its lines, trained beside the transformer in the same steps (its
cross-entropy added to the loss; no weights shared) on free-hand sketches the batch preparer draws
for it (`pipeline.sketch.styles.recogniser_sketches`: proportions stretched, as people's are). A
drawing given without its class is then sampled as the class it reads as (`pipeline.generate.recognise`).

Shape legend: b - batch, n - sequence, h w - code grid, d - model width, S - sketch side.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from x_transformers import TransformerWrapper

from vq.stage2_prior.base import Prior, PriorOutput
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


class SketchRecogniser(nn.Module):
    """(b, 1, S, S) lines -> (b, classes) logits of the drawn class. Two stages of 3x3 convolutions
    (a strided 4x4 stem halves the side, a max-pool halves it again), mean and max pooled, a
    LayerNorm and a linear head. No batch norm: on a CPU it cost as much as the convolutions, and
    the prior's batches are small."""

    def __init__(self, classes: int, width: int = 32):
        super().__init__()
        conv = lambda i, o, k=3, s=1: nn.Sequential(nn.Conv2d(i, o, k, s, 1), nn.GELU())  # noqa: E731
        self.features = nn.Sequential(conv(1, width, 4, 2), conv(width, width), nn.MaxPool2d(2),
                                      conv(width, 2 * width), conv(2 * width, 2 * width))
        self.norm = nn.LayerNorm(4 * width)
        self.head = nn.Linear(4 * width, classes)

    def forward(self, lines: torch.Tensor) -> torch.Tensor:
        h = self.features(lines[:, :1].to(self.head.weight.dtype))
        return self.head(self.norm(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)))


def layer_options(c: PriorConfig) -> dict:
    """The x-transformers attention-layer arguments both prior kinds share: size, dropout, SDPA
    attention, cross-attention for a sketch prior, grouped-query heads."""
    return dict(
        dim=c.dim, depth=c.depth, heads=c.heads, attn_dim_head=c.dim // c.heads,
        attn_dropout=c.dropout, ff_dropout=c.dropout, ff_mult=c.ff_mult,
        attn_flash=True,  # F.scaled_dot_product_attention: flash / memory-efficient kernels on GPUs
        verbose=False,  # no advice printed for language models at every load (a small prior's rotary dimensions)
        cross_attend="sketch" in c.conditions,
        **({"attn_kv_heads": c.kv_heads} if c.kv_heads not in (None, c.heads) else {}),
    )


class ConditionedPrior(Prior):
    """A transformer prior that reads a class token and, for a sketch prior, a sketch by
    cross-attention. Subclasses build their network, then call `add_conditions()` (in that
    order: a seed decides the same initial weights as before)."""

    config_class = PriorConfig

    def network(self, attn_layers, extra_tokens: int = 0, abs_positions: bool = False) -> TransformerWrapper:
        """The prior's x-transformers network over `[class token] + codes`: its input vocabulary the
        K codes, one token per class, the null class and `extra_tokens` more; K logits out, so no
        other token can ever be sampled."""
        c = self.config
        return TransformerWrapper(num_tokens=c.codebook_size + c.num_classes + 1 + extra_tokens, logits_dim=c.codebook_size,
                                  max_seq_len=c.seq_len + 1, use_abs_pos_emb=abs_positions, emb_dropout=c.dropout,
                                  attn_layers=attn_layers)

    def add_conditions(self) -> None:
        """A sketch prior's condition modules: the sketch encoder and the learned null sketch, and
        with `PriorConfig.recognises` the recogniser (built last: the other weights a seed
        draws stay those of a prior without it)."""
        c = self.config
        if self.sketched:
            self.sketch_encoder = SketchEncoder(c.dim, c.sketch_size, c.height, c.sketch_channels)
            self.null_sketch = nn.Parameter(torch.randn(1, c.seq_len, c.dim) * 0.02)
        if c.recognises:
            self.recogniser = SketchRecogniser(c.num_classes)

    @property
    def recognises(self) -> bool:
        """Whether it tells a drawing's class (`recognise`)."""
        return self.config.recognises

    def recognise(self, lines: torch.Tensor) -> torch.Tensor:
        """(b, 1, S, S) lines of drawings, read as `vq sample --sketch` reads them -> (b, classes)
        probabilities of the drawn class (a prior with a recogniser only)."""
        return self.recogniser(lines).float().softmax(-1)

    def with_recognition(self, out: PriorOutput, sketch: torch.Tensor | None, labels: torch.Tensor | None) -> PriorOutput:
        """Training's output with the recogniser's cross-entropy added to the loss (and logged as
        `recognise`), on the recogniser's sketches the preparer put after the encoder's channels;
        `out` as it is without them (evaluation, or a prior without a recogniser). The two share
        no weights, but one loss: a run's logged training loss is the code loss plus this one, and
        gradient clipping sees both (the held-out figures are the codes' alone)."""
        if not (self.recognises and sketch is not None and labels is not None and sketch.shape[1] > self.config.sketch_channels):
            return out
        logits = self.recogniser(sketch[:, self.config.sketch_channels :])
        ce = F.cross_entropy(logits.float(), labels.long())
        return PriorOutput(out.logits, out.loss + ce, {**out.metrics, "recognise": ce.detach()})

    @staticmethod
    def image_memory(c: PriorConfig) -> tuple[int, str]:
        """(bytes, what sets them) of the working memory to draw one image's codes (fp32): for each
        of up to three guided rows, the key/value cache of every layer, and a full pass over the
        sequence (a masked prior's step, an autoregressive prior's scoring of completions:
        activations, logits and attention scores)."""
        n = c.seq_len + 1
        per_row = 2 * c.depth * n * c.dim + n * (c.codebook_size + 10 * c.dim) + c.heads * n * n
        return 4 * 3 * per_row, f"{c.height}x{c.width} codes from {c.codebook_size}, dim {c.dim}, depth {c.depth}"

    @classmethod
    def flops_per_token(cls, c: PriorConfig) -> float:
        """Training FLOPs per token (forward + backward): 6 x the matmul parameters, plus attention's
        12 x layers x dim x context (Kaplan et al. 2020; nanoGPT's estimate_mfu, averaged over a
        causal context, the whole sequence for a bidirectional one). Grouped-query attention shrinks
        the key/value projections; a sketch prior's cross-attention adds one more attention block
        per layer over h*w condition tokens (as many as the codes, so its key/value projections
        count once per token too)."""
        kv_dim = c.dim * (c.kv_heads or c.heads) // c.heads
        attention = 2 * c.dim * c.dim + 2 * c.dim * kv_dim
        cross = c.condition == "sketch"
        per_layer = attention * (2 if cross else 1) + 2 * c.ff_mult * c.dim * c.dim
        matmul_params = c.depth * per_layer + c.dim * c.codebook_size
        context = (c.seq_len + 1) / (1 if cls.parallel_decoding else 2) + (c.seq_len if cross else 0)
        return 6 * matmul_params + 12 * c.depth * c.dim * context

    @property
    def sketched(self) -> bool:
        return "sketch" in self.config.conditions

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def class_tokens(self, labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """(b,) class indices (or None / -1 for unconditional) -> (b, 1) input tokens."""
        if labels is None:
            labels = torch.full((batch,), self.null_class, device=device)
        labels = torch.where(labels < 0, torch.full_like(labels, self.null_class), labels)
        return (self.config.codebook_size + labels).long().unsqueeze(1)

    def context(self, sketch: torch.Tensor | None, batch: int, keep: torch.Tensor | None = None) -> torch.Tensor | None:
        """The cross-attention context of a sketch prior (None for a class prior): (b, c, S, S)
        sketches (the lines, and optionally the drawing flag: `SketchEncoder`), or None for the
        null sketch on every row; `keep` (b,) bool puts the null sketch on the rows where it is False."""
        if not self.sketched:
            return None
        null = self.null_sketch.expand(batch, -1, -1)
        if sketch is None:
            return null
        ctx = self.sketch_encoder(sketch)
        return ctx if keep is None else torch.where(keep[:, None, None], ctx, null.to(ctx.dtype))

    def drop_conditions(self, labels: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Training's condition dropout for guidance: one draw u per row; u in [0, c) drops the
        class and the sketch, [c, c + s) the sketch alone, [c + s, 2c + s) the class alone (a class
        prior: the first range only). -> (labels with the null class where dropped, (b,)
        keep-sketch or None). Outside training, or without labels, nothing is dropped."""
        if not (self.training and labels is not None and (self.sketched or self.config.class_dropout > 0)):
            return labels, None
        c = self.config.class_dropout
        s = self.config.sketch_dropout if self.sketched else 0.0
        u = torch.rand(labels.shape, device=labels.device)
        drop_class = u < c
        if self.sketched:
            drop_class |= (u >= c + s) & (u < 2 * c + s)
        labels = torch.where(drop_class, torch.full_like(labels, self.null_class), labels)
        return labels, (u >= c + s) if self.sketched else None
