"""Sampling from the autoregressive prior, the readable reference loop: a KV-cached loop of our own, because x-transformers' `generate`
has no classifier-free guidance, and its cache grows by concatenation and re-applies rotary
embeddings to every cached key at every step (quadratic work per sequence). `IncrementalDecoder`
runs the prior's own x-transformers modules (embedding, norms, projections, feed-forwards, head)
one position at a time, with keys rotated once and written into a preallocated cache. A test
checks that its logits equal the teacher-forced forward pass. With fewer key/value heads than
query heads (grouped-query attention, `kv_heads`) the cache holds only the shared heads. A sketch
prior's cross-attention keys and values are computed from the condition once, when the decoder
is made (a static cache), and every step attends to them.

Guidance (`guidance.py`) runs the conditional rows and their null-class twins as one batch
through the cache and mixes their logits. Then temperature, top-k and top-p (Holtzman et al.
2020) filter, and a seeded generator draws. Known codes (completion) are forced in place of the
draw, so the prior conditions on them for everything after them in raster order.

Shape legend: b - batch, n - codes per map (h * w), k - codebook size.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from x_transformers.x_transformers import apply_rotary_pos_emb

from vq.stage2_prior.guidance import Draw


def decoder_blocks(net, who: str) -> list[tuple]:
    """(kind, pre-norm, block) of each layer of a prior's x-transformers Decoder, for a decoder
    that runs them one position at a time: kinds "a" (attention), "c" (cross-attention), "f"."""
    layers = net.attn_layers
    blocks = [(kind, norms[0], block) for kind, (norms, block, _) in zip(layers.layer_types, layers.layers)]
    if not layers.pre_norm or any(kind not in ("a", "c", "f") for kind, _, _ in blocks):
        raise ValueError(f"{who} supports pre-norm attention / cross-attention / feed-forward stacks only")
    return blocks


def attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of one query position: q (b, h, 1, d) over k, v (b, kv, n, d), mask (n,) bool or
    None -> (b, h, 1, d). Query head i reads key/value head i % kv, as x-transformers' Attend
    tiles them (`b kvh n d -> b (r kvh) n d`; SDPA's enable_gqa would pair head i with i // g);
    the g query heads of a group become the g query rows of their key/value head, so each
    key/value head is read once."""
    grouped = rearrange(q, "b (g kv) 1 d -> b kv g d", kv=k.shape[1])
    out = F.scaled_dot_product_attention(grouped, k, v, attn_mask=None if mask is None else mask[None, None, None, :])
    return rearrange(out, "b kv g d -> b (g kv) 1 d")


class IncrementalDecoder:
    """One-token-at-a-time forward pass of a `AutoregressivePrior`'s pre-norm x-transformers Decoder."""

    def __init__(self, model, batch: int, context: torch.Tensor | None = None):
        self.net = model.net
        layers = self.net.attn_layers
        self.blocks = decoder_blocks(self.net, "IncrementalDecoder")
        if any(kind == "c" for kind, _, _ in self.blocks) and context is None:
            raise ValueError("this prior cross-attends: give its context")
        c = model.config
        self.heads = c.heads
        self.kv_heads = c.kv_heads or c.heads
        self.batch = batch
        self.max_len = c.seq_len + 1
        device = next(model.parameters()).device
        self.freqs, _ = layers.rotary_pos_emb(torch.arange(self.max_len, device=device))
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        # The static cache: each cross-attention's keys and values of the condition, once.
        self.cross = [tuple(self._heads(proj(context), self.kv_heads) for proj in (block.to_k, block.to_v))
                      for kind, _, block in self.blocks if kind == "c"]
        self.pos = 0

    @staticmethod
    def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
        return rearrange(x, "b n (h d) -> b h n d", h=heads)

    def _attend(self, index: int, attn, h: torch.Tensor) -> torch.Tensor:
        q = self._heads(attn.to_q(h), self.heads)
        k, v = self._heads(attn.to_k(h), self.kv_heads), self._heads(attn.to_v(h), self.kv_heads)
        freqs = self.freqs[:, self.pos : self.pos + 1]
        q, k = apply_rotary_pos_emb(q, freqs), apply_rotary_pos_emb(k, freqs)
        if index == len(self.keys):  # first step: allocate this layer's cache in the compute dtype
            self.keys.append(k.new_empty(self.batch, self.kv_heads, self.max_len, k.shape[-1]))
            self.values.append(v.new_empty(self.batch, self.kv_heads, self.max_len, v.shape[-1]))
        self.keys[index][:, :, self.pos] = k[:, :, 0]
        self.values[index][:, :, self.pos] = v[:, :, 0]
        t = self.pos + 1
        out = attend_one(q, self.keys[index][:, :, :t], self.values[index][:, :, :t], None)
        return attn.to_out(rearrange(out, "b h 1 d -> b 1 (h d)"))

    def _cross(self, index: int, attn, h: torch.Tensor) -> torch.Tensor:
        k, v = self.cross[index]
        out = attend_one(self._heads(attn.to_q(h), self.heads), k, v, None)
        return attn.to_out(rearrange(out, "b h 1 d -> b 1 (h d)"))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """(b,) tokens at the next position -> (b, k) logits for the position after it."""
        net = self.net
        x = net.project_emb(net.emb_dropout(net.post_emb_norm(net.token_emb(tokens[:, None]))))
        attn_index = cross_index = 0
        for kind, norm, block in self.blocks:
            h = norm(x)
            if kind == "a":
                h = self._attend(attn_index, block, h)
                attn_index += 1
            elif kind == "c":
                h = self._cross(cross_index, block, h)
                cross_index += 1
            else:
                h = block(h)
            x = x + h
        self.pos += 1
        return net.to_logits(net.attn_layers.final_norm(x))[:, 0]


def incremental_stepper(model, rows: int, context: torch.Tensor | None):
    decoder = IncrementalDecoder(model, rows, context)
    return lambda tokens, t: decoder.step(tokens)


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
def sample_codes(model, labels: torch.Tensor | None = None, *, stepper=None, **draw_args) -> torch.Tensor:
    """Draw code maps from the prior, one code at a time in raster order.

    labels: (b,) class indices, or None (or -1 entries) for unconditional rows.
    draw_args: what `guidance.Draw` names (num, guidance, class_guidance, temperature, top_k, top_p,
      generator, known, known_mask, sketch, force_guidance_batch). Known codes are forced in place
      of the draw, so the prior conditions on them for everything after them.
    stepper: (model, rows, context) -> step(tokens, t) -> logits, the decoder to run (default an
      `IncrementalDecoder`; `fast.sample_codes_fast` passes its static-shape one).
    Returns (b, h, w) int64 codes in [0, k).
    """
    d, c = Draw(**draw_args), model.config
    rows = d.rows(model, labels)
    n = c.seq_len
    known = rearrange(d.known, "b h w -> b (h w)").to(rows.device) if d.known is not None else None
    known_mask = rearrange(d.known_mask, "b h w -> b (h w)").to(rows.device) if d.known is not None else None
    x = rows.cls[:, 0]
    out = torch.empty(rows.b, n, dtype=torch.long, device=rows.device)
    step = (stepper or incremental_stepper)(model, x.shape[0], rows.context)
    for t in range(n):
        token = draw(d.mix(step(x, t).float(), rows), d.temperature, d.top_k, d.top_p, d.generator)
        if known is not None:
            token = torch.where(known_mask[:, t], known[:, t], token)
        out[:, t] = token
        x = token.repeat(rows.twins)
    return rearrange(out, "b (h w) -> b h w", h=c.height, w=c.width)


@torch.no_grad()
def score_codes(model, codes: torch.Tensor, labels: torch.Tensor | None, mask: torch.Tensor | None = None,
                sketch: torch.Tensor | None = None) -> torch.Tensor:
    """Log-likelihood (nats) of the codes under the prior, summed over `mask`'s positions
    (all when None): (b, h, w) -> (b,). Used to rank completions by their fit to the known codes."""
    logp = F.log_softmax(model.logits(codes, labels, sketch).float(), dim=-1)
    flat = rearrange(codes, "b h w -> b (h w)").long()
    token_logp = logp.gather(-1, flat[..., None]).squeeze(-1)
    if mask is not None:
        token_logp = token_logp * rearrange(mask, "b h w -> b (h w)").to(token_logp.dtype)
    return token_logp.sum(-1)
