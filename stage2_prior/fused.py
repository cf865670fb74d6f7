"""The autoregressive prior's decode step with as few PyTorch calls as it can have, for CPUs.

On a CPU a step of a small prior is bound by dispatch, not arithmetic: each PyTorch call costs a
few microseconds whatever its size, and `StaticDecoder.step` makes about a thousand calls per code
position through the x-transformers modules (einops rearranges, the rotary helpers, module
hooks). `FusedDecoder` runs the same arithmetic from the prior's weights, folded once when it is
made:

- each pre-norm's gain (x-transformers' `LayerNorm` gamma, with its unit offset) is multiplied
  into the projection after it, so a norm is one `layer_norm` call;
- the query, key and value projections are one matrix product, and the attention scale is folded
  into the queries;
- the rotary embedding (x-transformers' interleaved pairs, on the first `rot` dimensions of each
  head) is one complex multiplication each for the queries and the keys: each pair (a, b) is
  a + ib, turned by e^(i angle) (and by 1 past `rot`), with the keys written straight into their
  cache slot;
- query heads are reordered so that the g query heads of a key/value head are adjacent: one
  batched product per layer reads each cached key/value head once (grouped-query attention as
  x-transformers pairs heads: query head i with key/value head i % kv_heads);
- every buffer and every per-position view (cache slots, rotary rows) is made once, and matrix
  products write into them.

About 10 calls per attention layer and 5 per feed-forward. Measured on a 2-core CPU (README,
"Sampling speed"): one guided demo image 48 ms against 154 ms through the modules. What is left is
mostly reading the weights: a demo step reads 7 MB of them, at about 18 GB/s from one core. The draws are `sampling.sample_codes`'s
(its loop, guidance, filters and generator): the same codes as the plain loop up to rounding in
the logits. A prior this does not cover (another norm, gated or normalised attention, biases in
the attention projections) is refused when the decoder is made, and so is one whose folded step
does not reproduce `StaticDecoder`'s logits on a probe: `fast.py` then runs `StaticDecoder`.

The folded weights are a snapshot: a decoder is kept only while the prior's parameters keep their
addresses and versions (`fast.weights_key`).

Shape legend: r - rows (images times guidance twins), D - model width, h - query heads, kv -
key/value heads, g - query heads per key/value head, d - head dimension, n - cache slots, m -
context tokens, k - codebook size.
"""

import torch
import torch.nn.functional as F
from torch import nn
from x_transformers.x_transformers import Attention, FeedForward, LayerNorm

from vq.stage2_prior.sampling import decoder_blocks

PROBE_TOLERANCE = 1e-3  # largest |logit difference| against StaticDecoder on the probe, relative to the logits' scale


class Unsupported(ValueError):
    """This prior's layers are not ones FusedDecoder folds."""


def gain(norm) -> torch.Tensor:
    """The gain of an x-transformers pre-norm (D,)."""
    if type(norm) is not LayerNorm or norm.ln.elementwise_affine:
        raise Unsupported(f"norm {type(norm).__name__}")
    return norm.gamma.detach().float() + float(norm.unit_offset)


def pairs(x: torch.Tensor) -> torch.Tensor:
    """(..., d) real -> (..., d / 2) complex: each pair of neighbours (a, b) as a + ib (a view)."""
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)))


def grouped(w: torch.Tensor, heads: int, kv: int) -> torch.Tensor:
    """Query rows (h * d, ...) reordered from head i = j * kv + c (x-transformers' pairing: head i
    reads key/value head i % kv) to (c, j): each key/value head's query heads adjacent."""
    return w.reshape(heads // kv, kv, -1, *w.shape[1:]).transpose(0, 1).reshape(w.shape)


def checked_attention(block) -> Attention:
    plain = (type(block) is Attention and not block.qk_norm and not block.head_scale and block.num_mem_kv == 0
             and not block.laser and not block.gate_values_headwise and not block.output_gate_headwise
             and not block.use_latent_q and not block.use_latent_kv and not block.attn_on_attn
             and getattr(block, "to_v_gate", None) is None and getattr(block, "to_v_head_gate", None) is None
             and getattr(block, "to_out_gate", None) is None and getattr(block, "hard_alibi", None) is None)
    linears = [block.to_q, block.to_k, block.to_v, block.to_out]
    if not plain or any(type(m) is not nn.Linear or m.bias is not None for m in linears):
        raise Unsupported("attention with gates, norms, memory or biases")
    return block


def checked_feedforward(block) -> tuple[nn.Linear, nn.Linear]:
    try:
        (first, act), second = block.ff[0], block.ff[2]
    except (TypeError, ValueError, IndexError, AttributeError):
        raise Unsupported("feed-forward") from None
    if type(block) is not FeedForward or type(act) is not nn.GELU or act.approximate != "none" or len(block.ff) != 3:
        raise Unsupported("feed-forward other than Linear, GELU, Linear")
    if type(first) is not nn.Linear or type(second) is not nn.Linear:
        raise Unsupported("feed-forward other than Linear, GELU, Linear")
    return first, second


class FusedDecoder:
    """The decode step of an `AutoregressivePrior` for `rows` rows, over caches of its own, from
    weights folded when it is made (see the module's notes). `set_context` (a sketch prior),
    then `step(tokens, t)` for t = 0, 1, ... in order."""

    def __init__(self, model, rows: int):
        net, c = model.net, model.config
        blocks = decoder_blocks(net, "FusedDecoder")
        if any(type(m).__name__ != "Identity" for m in (net.post_emb_norm, net.project_emb)) or net.token_emb.l2norm_embed:
            raise Unsupported("embedding norms or projections")
        self.h, self.kv = c.heads, c.kv_heads or c.heads
        self.D, self.d, self.rows = c.dim, c.dim // c.heads, rows
        self.slots = c.seq_len + 1
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        if dtype != torch.float32:
            raise Unsupported("weights other than float32")
        freqs, _ = net.attn_layers.rotary_pos_emb(torch.arange(self.slots, device=device))
        if self.d % 2 or freqs.shape[-1] % 2:
            raise Unsupported("odd head or rotary dimensions")
        turn = torch.ones(self.slots, self.d // 2, dtype=torch.complex64, device=device)
        turn[:, : freqs.shape[-1] // 2] = torch.polar(torch.ones_like(freqs[0, :, ::2]).float(), freqs[0, :, ::2].float())
        self.turn = list(turn[:, None])  # [t]: (1, d / 2), e^(i angle) of each pair at position t
        self.emb = net.token_emb.emb.weight.detach()
        self.layers = [self._fold(kind, norm, block) for kind, norm, block in blocks]
        final = net.attn_layers.final_norm
        head = net.to_logits
        if type(head) is not nn.Linear:
            raise Unsupported("output head")
        self.head = (head.weight.detach() * gain(final)).t().contiguous()
        self.head_bias = head.bias.detach() if head.bias is not None else None
        self._buffers(device)

    def _fold(self, kind: str, norm, block) -> tuple:
        g, h, kv, d = gain(norm), self.h, self.kv, self.d
        if kind == "f":
            first, second = checked_feedforward(block)
            bias1 = first.bias.detach() if first.bias is not None else first.weight.new_zeros(first.out_features)
            bias2 = second.bias.detach() if second.bias is not None else second.weight.new_zeros(second.out_features)
            return ("f", (first.weight.detach() * g).t().contiguous(), bias1, second.weight.detach().t().contiguous(), bias2)
        block = checked_attention(block)
        scale = d ** -0.5
        wq = grouped(block.to_q.weight.detach(), h, kv) * scale
        out = grouped(block.to_out.weight.detach().t(), h, kv).contiguous()  # (h d, D), rows in the queries' order
        if kind == "c":
            return ("c", (wq * g).t().contiguous(), out, block)
        w = torch.cat([wq, block.to_k.weight.detach(), block.to_v.weight.detach()])
        return ("a", (w * g).t().contiguous(), out)

    def _buffers(self, device) -> None:
        r, h, kv, d, n = self.rows, self.h, self.kv, self.d, self.slots
        g = h // kv
        # Per attention layer, the projections' buffer, and its queries and keys as complex pairs
        # (r, heads, d / 2) and values (r, kv, d).
        self.y = [torch.empty(r, (h + 2 * kv) * d, device=device) if layer[0] == "a" else None for layer in self.layers]
        self.parts = [None if y is None else (pairs(y[:, : h * d].view(r, h, d)), pairs(y[:, h * d : (h + kv) * d].view(r, kv, d)),
                                              y[:, (h + kv) * d :].view(r, kv, d))
                      for y in self.y]
        self.q = torch.empty(r, h * d, device=device)
        self.q_pairs = pairs(self.q.view(r, h, d))
        self.q_groups = self.q.view(r * kv, g, d)
        # Per attention layer and position t: the cache slots (r, kv, d) to write, as complex
        # pairs for the keys, and the keys (r kv, d, t + 1) and values (r kv, t + 1, d) to read.
        self.key_slot, self.value_slot, self.key_span, self.value_span = [], [], [], []
        for layer in self.layers:
            if layer[0] != "a":
                continue
            keys, values = torch.zeros(r, kv, n, d, device=device), torch.zeros(r, kv, n, d, device=device)
            self.key_slot.append([pairs(keys[:, :, t]) for t in range(n)])
            self.value_slot.append([values[:, :, t] for t in range(n)])
            self.key_span.append([keys.view(r * kv, n, d)[:, : t + 1].transpose(1, 2) for t in range(n)])
            self.value_span.append([values.view(r * kv, n, d)[:, : t + 1] for t in range(n)])
        self.context = [None for layer in self.layers if layer[0] == "c"]

    def set_context(self, context: torch.Tensor | None) -> None:
        """Each cross-attention's keys (r kv, d, m) and values (r kv, m, d) of the context (r, m, D)."""
        cross = [layer for layer in self.layers if layer[0] == "c"]
        if not cross:
            return
        if context is None:
            raise ValueError("this prior cross-attends: give its context")
        r, kv, d = self.rows, self.kv, self.d
        for i, (_, _, _, block) in enumerate(cross):
            keys = block.to_k(context).reshape(r, -1, kv, d).permute(0, 2, 3, 1).reshape(r * kv, d, -1)
            values = block.to_v(context).reshape(r, -1, kv, d).transpose(1, 2).reshape(r * kv, -1, d)
            self.context[i] = (keys.contiguous(), values.contiguous())

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """(r,) tokens at position t -> (r, k) logits for the position after it."""
        r, D, hd = self.rows, self.D, self.h * self.d
        x = F.embedding(tokens, self.emb)
        attn = cross = 0
        for i, layer in enumerate(self.layers):
            h = F.layer_norm(x, (D,))
            if layer[0] == "f":
                x = torch.addmm(layer[4], F.gelu(torch.addmm(layer[2], h, layer[1])), layer[3]).add_(x)
                continue
            if layer[0] == "c":
                torch.mm(h, layer[1], out=self.q)
                keys, values = self.context[cross]
                cross += 1
            else:
                torch.mm(h, layer[1], out=self.y[i])
                q, k, v = self.parts[i]
                torch.mul(q, self.turn[t], out=self.q_pairs)
                torch.mul(k, self.turn[t], out=self.key_slot[attn][t])
                self.value_slot[attn][t].copy_(v)
                keys, values = self.key_span[attn][t], self.value_span[attn][t]
                attn += 1
            weights = torch.bmm(self.q_groups, keys).softmax(-1)
            x = torch.addmm(x, torch.bmm(weights, values).view(r, hd), layer[2])
        h = F.layer_norm(x, (D,))
        return torch.addmm(self.head_bias, h, self.head) if self.head_bias is not None else torch.mm(h, self.head)
