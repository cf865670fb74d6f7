"""Quantizers: a vector quantizer with an exponential-moving-average codebook (`ema`, and `l2`:
the same on l2-normalised codes), and finite scalar quantization (`fsq`), which has no codebook.

van den Oord et al. 2017, "Neural Discrete Representation Learning" (VQ-VAE, EMA updates in
appendix A.1); k-means initialisation and the restart of dead codes from encoder outputs follow
Dhariwal et al. 2020 ("Jukebox") and Zeghidour et al. 2021 ("SoundStream"). Together they keep
every code in use, which is what makes the codes worth modelling with a prior.

Shape legend: b - batch, d - code dimension, h w - code grid, n - flattened vectors, k - codes.

Distances, argmin, EMA statistics and the straight-through step run in full fp32 even under bf16
autocast and with TF32 matmuls switched on elsewhere: nearest-neighbour search in bf16 (or TF32's
10-bit mantissa) flips indices between near-equidistant codes.

Under torchrun (torch.distributed initialised) the codebook stays identical on every rank: the
k-means initialisation is computed on rank 0 and broadcast, the EMA counts and sums are summed
over ranks before the update, and dead-code restarts use candidates drawn on rank 0. Nothing here
reads a value back to the host during training, so a GPU step never waits on the CPU.

`l2`: codes and encoder outputs live on the unit sphere, so the nearest code is the one of
highest cosine similarity, the distances do not grow with the encoder's scale, and codes of low
dimension (8) stay well used (Yu et al. 2022, "Vector-quantized Image Modeling with Improved
VQGAN"; LlamaGen's tokenizer ablation, Sun et al. 2024).

`fsq`: Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple". Each of d channels
is bounded and rounded to one of L_i levels; the code is the tuple, its index the mixed-radix
number. Nothing is learned, so nothing can collapse: K = prod(L_i).
"""

import math

from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class QuantizerOutput(NamedTuple):
    quantized: torch.Tensor  # (b, d, h, w) codebook vectors, gradients pass straight through to z
    indices: torch.Tensor  # (b, h, w) int64
    loss: torch.Tensor  # commitment loss (the codebook itself learns by EMA, not by gradient)
    perplexity: torch.Tensor  # exp(entropy) of the batch's code histogram
    usage: torch.Tensor  # fraction of the codebook used in the batch


def straight_through(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Value of q, gradient of z (exactly q in the forward pass: z - z.detach() is zero)."""
    return q + (z - z.detach())


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextmanager
def full_fp32():
    """No autocast and no TF32 inside: the distances must be exact fp32, whatever the caller set."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(n, d), (k, d) -> (n, k)"""
    return x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.t() + codebook.pow(2).sum(1)


def kmeans(x: torch.Tensor, k: int, iters: int) -> torch.Tensor:
    """Lloyd's k-means on (n, d); an empty cluster keeps its previous centre."""
    centres = x[torch.randint(0, x.shape[0], (k,), device=x.device)]
    for _ in range(iters):
        assign = squared_distances(x, centres).argmin(1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
    return centres


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        decay: float = 0.99,
        commitment: float = 0.25,
        dead_code_threshold: float = 1.0,
        kmeans_iters: int = 10,
        eps: float = 1e-5,
        normalize: bool = False,
    ):
        super().__init__()
        self.normalize = normalize  # the `l2` quantizer: codes and inputs on the unit sphere
        self.codebook_size = codebook_size
        self.decay = decay
        self.commitment = commitment
        self.dead_code_threshold = dead_code_threshold
        self.kmeans_iters = kmeans_iters
        self.eps = eps
        self.register_buffer("codebook", torch.randn(codebook_size, dim))
        self.register_buffer("ema_count", torch.ones(codebook_size))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.tensor(False))
        self._known_initialized = False  # host-side copy of `initialized`: no device read per step

    def _needs_init(self) -> bool:
        if not self._known_initialized:
            self._known_initialized = bool(self.initialized)  # one read, then never again
        return not self._known_initialized

    @torch.no_grad()
    def _init_codebook(self, x: torch.Tensor) -> None:
        if _distributed():
            centres = kmeans(x, self.codebook_size, self.kmeans_iters) if dist.get_rank() == 0 else torch.empty_like(self.codebook)
            dist.broadcast(centres, src=0)
        else:
            centres = kmeans(x, self.codebook_size, self.kmeans_iters)
        if self.normalize:
            centres = F.normalize(centres, dim=1)
        self.codebook.copy_(centres)
        self.ema_sum.copy_(centres)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)
        self._known_initialized = True

    @torch.no_grad()
    def _ema_update(self, x: torch.Tensor, indices: torch.Tensor) -> None:
        k = self.codebook_size
        counts = torch.bincount(indices, minlength=k).to(x.dtype)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, x)
        if _distributed():  # the statistics of the global batch, identical on every rank
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        # A non-finite batch (one the loop may skip) leaves the codebook as it was, without a host sync.
        finite = torch.isfinite(sums).all()
        counts = torch.where(finite, counts, self.ema_count)
        sums = torch.where(finite, sums, self.ema_sum)
        self.ema_count.lerp_(counts, 1 - self.decay)
        self.ema_sum.lerp_(sums, 1 - self.decay)
        # Laplace smoothing keeps never-chosen codes from dividing by zero.
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + k * self.eps) * n
        means = self.ema_sum / smoothed[:, None]
        self.codebook.copy_(torch.where(finite, F.normalize(means, dim=1) if self.normalize else means, self.codebook))
        self._restart_dead_codes(x, finite)

    @torch.no_grad()
    def _restart_dead_codes(self, x: torch.Tensor, finite: torch.Tensor) -> None:
        """Every code whose EMA count fell under the threshold moves onto a random encoder output.
        A candidate is drawn for every code and used where the code is dead: no data-dependent
        shapes, so no host sync."""
        dead = ((self.ema_count < self.dead_code_threshold) & finite)[:, None]
        fresh = x[torch.randint(0, x.shape[0], (self.codebook_size,), device=x.device)]
        if _distributed():
            dist.broadcast(fresh, src=0)
        self.codebook.copy_(torch.where(dead, fresh, self.codebook))  # (unit vectors already for `l2`)
        self.ema_sum.copy_(torch.where(dead, fresh * self.dead_code_threshold, self.ema_sum))
        self.ema_count.copy_(torch.where(dead[:, 0], torch.full_like(self.ema_count, self.dead_code_threshold), self.ema_count))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, _, h, w = z.shape
        with torch.autocast(z.device.type, enabled=False), full_fp32():
            z = z.float()
            if self.normalize:
                z = F.normalize(z, dim=1)
            x = rearrange(z, "b d h w -> (b h w) d")
            if self.training and self._needs_init():
                self._init_codebook(x.detach())
            indices = squared_distances(x.detach(), self.codebook).argmin(1)
            q = self.codebook[indices]
            if self.training:
                self._ema_update(x.detach(), indices)
            loss = self.commitment * F.mse_loss(x, q.detach())
            q = rearrange(q, "(b h w) d -> b d h w", b=b, h=h, w=w)
            counts = torch.bincount(indices, minlength=self.codebook_size).float()
            probs = counts / counts.sum()
            perplexity = torch.exp(-(probs * torch.log(probs.clamp(min=1e-10))).sum())
            usage = (counts > 0).float().mean()
        return QuantizerOutput(
            quantized=straight_through(z, q),
            indices=rearrange(indices, "(b h w) -> b h w", b=b, h=h, w=w),
            loss=loss,
            perplexity=perplexity,
            usage=usage,
        )

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(b, h, w) int -> (b, d, h, w): the inverse of the index half of `forward`."""
        return rearrange(self.codebook[indices], "b h w d -> b d h w")


class FSQ(nn.Module):
    """Finite scalar quantization: (b, d, h, w) with d = len(levels) -> the nearest of
    prod(levels) grid points, through a straight-through rounding."""

    def __init__(self, levels: list[int], eps: float = 1e-3):
        super().__init__()
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels must be at least 2 each, got {levels}")
        self.levels = list(levels)
        self.codebook_size = math.prod(levels)
        self.eps = eps
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        basis = [math.prod(levels[:i]) for i in range(len(levels))]
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.int64), persistent=False)

    def _bound(self, x: torch.Tensor) -> torch.Tensor:
        """Squash each channel into (-L/2, L/2), shifted by a half for even L, so that rounding
        gives exactly L integers."""
        half = (self._levels - 1) * (1 - self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(x + shift) * half - offset

    def _scale(self, q: torch.Tensor) -> torch.Tensor:
        """Integer levels -> codes in [-1, 1]."""
        return q / (self._levels // 2)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, d, h, w = z.shape
        if d != len(self.levels):
            raise ValueError(f"FSQ with {len(self.levels)} levels got {d} channels")
        with torch.autocast(z.device.type, enabled=False):
            x = rearrange(z.float(), "b d h w -> b h w d")
            bounded = self._bound(x)
            q = bounded.round()
            codes = self._scale(straight_through(bounded, q))
            indices = ((q + self._levels // 2).long() * self._basis).sum(-1)
            counts = torch.bincount(indices.flatten(), minlength=self.codebook_size).float()
            probs = counts / counts.sum()
            perplexity = torch.exp(-(probs * torch.log(probs.clamp(min=1e-10))).sum())
        return QuantizerOutput(
            quantized=rearrange(codes, "b h w d -> b d h w"),
            indices=indices,
            loss=torch.zeros((), device=z.device),
            perplexity=perplexity,
            usage=(counts > 0).float().mean(),
        )

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """(b, d, h, w) codes (grid points) -> (b, h, w) int64: the inverse of indices_to_codes."""
        q = (rearrange(codes.float(), "b d h w -> b h w d") * (self._levels // 2)).round()
        return ((q + self._levels // 2).long() * self._basis).sum(-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(b, h, w) int -> (b, d, h, w) codes in [-1, 1]."""
        levels = self._levels.long()
        digits = (indices[..., None] // self._basis) % levels
        return rearrange(self._scale((digits - levels // 2).float()), "b h w d -> b d h w")
