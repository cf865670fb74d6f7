"""MaskGIT's masking (Chang et al. 2022, google-research/maskgit's `mask_schedule.py` and
`parallel_decode.py`), in small named steps: the cosine schedule of how many codes stay masked,
random positions to mask in training, and at each decoding step the confidence of every draw and
the least confident ones masked again.

Shape legend: b - batch, n - codes per map.
"""

import math

import torch
import torch.nn.functional as F


def mask_schedule(t: torch.Tensor | float) -> torch.Tensor:
    """The share of the unknown codes still masked at decoding progress t in [0, 1] (or drawn
    masked in training at t ~ U(0, 1)): MaskGIT's cosine, 1 at t = 0 and 0 at t = 1."""
    return torch.cos(torch.as_tensor(t) * (math.pi / 2)).clamp(0, 1)


def ranks(x: torch.Tensor) -> torch.Tensor:
    """(b, n) -> (b, n) each entry's rank within its row, smallest first (ties by position)."""
    return x.argsort(dim=-1, stable=True).argsort(dim=-1)


def random_positions(count: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(b,) counts -> (b, n) bool with `count` positions per row chosen uniformly at random."""
    scores = torch.rand(count.shape[0], n, device=count.device, generator=generator)
    return ranks(scores) < count[:, None]


def training_count(b: int, n: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """(b,) codes to mask per training row: ceil(cos(pi/2 * r) * n), r ~ U(0, 1), at least one."""
    r = torch.rand(b, device=device, generator=generator)
    return torch.ceil(mask_schedule(r) * n).long().clamp(1, n)


def masked_count(unknown: torch.Tensor, masked: torch.Tensor, t: int, steps: int) -> torch.Tensor:
    """(b,) codes to leave masked after step t of `steps` (1-based), for rows that began with
    `unknown` masked codes and have `masked` now: the cosine schedule's share of `unknown`, and
    at least one code decided per step while any is masked (so every code is decided by the end)."""
    scheduled = torch.floor(unknown * mask_schedule(t / steps)).long()
    return torch.minimum(scheduled, masked - 1).clamp(min=0)


def confidence(logits: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor, noise: float,
               generator: torch.Generator | None) -> torch.Tensor:
    """(b, n, k) logits, (b, n) drawn tokens -> (b, n): the log-probability of each draw plus
    Gumbel noise scaled by `noise`, which lets a less likely draw stay now and then (MaskGIT's
    annealed "choice temperature"). Positions not masked are +inf: never re-masked."""
    score = F.log_softmax(logits.float(), -1).gather(-1, tokens[..., None]).squeeze(-1)
    if noise > 0:
        exp = torch.empty_like(score).exponential_(generator=generator)
        score = score + noise * -exp.clamp_min(1e-20).log()  # -log(Exp(1)) is Gumbel(0, 1)
    return score.masked_fill(~masked, float("inf"))


def remask(score: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """(b, n) confidences, (b,) counts -> (b, n) bool: each row's `count` least confident positions."""
    return ranks(score) < count[:, None]
