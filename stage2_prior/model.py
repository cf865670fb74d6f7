"""A class-conditional autoregressive prior over code maps (van den Oord et al. 2017, section
3.2, with a transformer as in Esser et al. 2021, "Taming Transformers"), with class dropout for
classifier-free guidance (Ho & Salimans 2022).

The sequence is `[class token] + codes` in raster order. The input vocabulary is the K codes,
then one token per class, then the null class; the output head has only K logits, so class and
null tokens can never be sampled.

Shape legend: b - batch, n - sequence, h w - code grid, k - codebook size.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from x_transformers import Decoder, TransformerWrapper

from vq.stage2_prior.config import PriorConfig


@dataclass
class PriorOutput:
    logits: torch.Tensor  # (b, n, k)
    loss: torch.Tensor  # mean cross-entropy in nats per code
    metrics: dict[str, torch.Tensor]


class CodePrior(nn.Module):
    name = "transformer"
    config_class = PriorConfig

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
            attn_layers=Decoder(
                dim=c.dim, depth=c.depth, heads=c.heads, attn_dim_head=dim_head, rotary_pos_emb=True,
                rotary_emb_dim=min(dim_head, max(32, dim_head // 2)),
                attn_dropout=c.dropout, ff_dropout=c.dropout, ff_mult=c.ff_mult,
                attn_flash=True,  # F.scaled_dot_product_attention: flash / memory-efficient kernels on GPUs
            ),
        )

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def class_tokens(self, labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """(b,) class indices (or None / -1 for unconditional) -> (b, 1) input tokens."""
        if labels is None:
            labels = torch.full((batch,), self.null_class, device=device)
        labels = torch.where(labels < 0, torch.full_like(labels, self.null_class), labels)
        return (self.config.codebook_size + labels).long().unsqueeze(1)

    def logits(self, codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Teacher-forced logits: (b, h, w) codes -> (b, h*w, k), position i predicting code i."""
        flat = rearrange(codes, "b h w -> b (h w)").long()
        tokens = torch.cat([self.class_tokens(labels, flat.shape[0], flat.device), flat[:, :-1]], dim=1)
        return self.net(tokens)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None, step: int = 0) -> PriorOutput:
        if self.training and labels is not None and self.config.class_dropout > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.config.class_dropout
            labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        logits = self.logits(codes, labels)
        target = rearrange(codes, "b h w -> b (h w)").long()
        loss = F.cross_entropy(logits.float().transpose(1, 2), target)
        return PriorOutput(logits, loss, {"nll": loss.detach()})
