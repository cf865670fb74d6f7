"""Sampling from the code prior: a KV-cached loop of our own, because x-transformers' `generate`
has no classifier-free guidance.

Guidance (Ho & Salimans 2022) runs the conditional rows and their null-class twins as one batch
through the cache and mixes their logits: `cond + (scale - 1) * (cond - null)`, which equals the
plain conditional logits exactly at scale 1. Then temperature, top-k and top-p (Holtzman et al.
2020) filter, and a seeded generator draws. Known codes (completion) are forced in place of the
draw, so the prior conditions on them for everything after them in raster order.

Shape legend: b - batch, n - codes per map (h * w), k - codebook size.
"""

import torch
import torch.nn.functional as F
from einops import rearrange


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """(b, k) -> (b, k) with everything outside the top-k / the top-p nucleus set to -inf."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens before it already cover top_p; the first always stays.
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def draw(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
         generator: torch.Generator | None) -> torch.Tensor:
    """(b, k) logits -> (b,) tokens; temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def sample_codes(
    model,
    labels: torch.Tensor | None = None,
    *,
    num: int | None = None,
    cfg_scale: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    known: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    force_guidance_batch: bool = False,
) -> torch.Tensor:
    """Draw code maps from the prior.

    labels: (b,) class indices, or None (or -1 entries) for unconditional rows.
    known, known_mask: (b, h, w) codes and a bool mask of the positions to keep fixed.
    cfg_scale: 1 is plain conditional sampling; larger trades diversity for class fidelity.
    force_guidance_batch: run the null rows even at scale 1 (tests use it to check the mixing).
    Returns (b, h, w) int64 codes in [0, k).
    """
    c = model.config
    device = next(model.parameters()).device
    b = labels.shape[0] if labels is not None else num
    if b is None:
        raise ValueError("give labels or num")
    if labels is not None:
        labels = labels.to(device)
    n = c.seq_len
    guided = cfg_scale != 1.0 or force_guidance_batch
    if known is not None:
        known = rearrange(known, "b h w -> b (h w)").to(device)
        known_mask = rearrange(known_mask, "b h w -> b (h w)").to(device)

    x = model.class_tokens(labels, b, device)
    if guided:
        x = torch.cat([x, model.class_tokens(None, b, device)])
    out = torch.empty(b, n, dtype=torch.long, device=device)
    cache = None
    for t in range(n):
        logits, cache = model.net(x, cache=cache, return_intermediates=True, input_not_include_cache=cache is not None)
        logits = logits[:, -1].float()
        if guided:
            cond, null = logits[:b], logits[b:]
            logits = cond + (cfg_scale - 1.0) * (cond - null)
        token = draw(logits, temperature, top_k, top_p, generator)
        if known is not None:
            token = torch.where(known_mask[:, t], known[:, t], token)
        out[:, t] = token
        x = token[:, None]
        if guided:
            x = torch.cat([x, x])
    return rearrange(out, "b (h w) -> b h w", h=c.height, w=c.width)


@torch.no_grad()
def score_codes(model, codes: torch.Tensor, labels: torch.Tensor | None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Log-likelihood (nats) of the codes under the prior, summed over `mask`'s positions
    (all when None): (b, h, w) -> (b,). Used to rank completions by their fit to the known codes."""
    logp = F.log_softmax(model.logits(codes, labels).float(), dim=-1)
    flat = rearrange(codes, "b h w -> b (h w)").long()
    token_logp = logp.gather(-1, flat[..., None]).squeeze(-1)
    if mask is not None:
        token_logp = token_logp * rearrange(mask, "b h w -> b (h w)").to(token_logp.dtype)
    return token_logp.sum(-1)
