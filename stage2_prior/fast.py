"""Launch-light sampling from the code prior: the same draws as `sampling.sample_codes`, with a
decode step whose shapes never change, so that on a GPU it can be recorded once and replayed.

`sample_codes` runs `IncrementalDecoder`, a Python loop that launches a few hundred small kernels
per code position; on a GPU the launches, not the arithmetic, bound it. `StaticDecoder` runs the
same x-transformers modules over preallocated caches whose shapes are fixed up front:

- the self-attention cache has room for every position (rounded up to a multiple of `SPAN`), and
  a step attends over the first `span` slots with a mask past its position instead of slicing to
  it, so a step's shapes depend on the span only. The position itself is a device tensor;
- a sketch prior's cross-attention keys and values are written once per batch into a static
  cache of their own;
- guidance runs the conditional rows and their null twins as one batch, as `sample_codes` does;
- with fewer key/value heads than query heads (grouped-query attention) each group of query
  heads attends as the rows of one key/value head, so the cache is read once, never repeated.
  The groups are x-transformers': query head i shares key/value head i % kv_heads, as in the
  prior's own forward pass.

How the step runs (`compile`): "fused" runs `fused.FusedDecoder`, the same arithmetic from folded
weights in about a tenth of the PyTorch calls, the cheapest on a CPU (a prior it does not cover
runs "eager"); "eager" calls the step directly with the exact span (t + 1, no mask); "graph" records it as one CUDA graph per span, the spans growing in
steps of `SPAN` (a step reads at most SPAN - 1 slots past its position, and a 14x14 map needs
13 graphs); "compile" runs it through `torch.compile` at the full span, one shape, with CUDA
graphs (`mode="reduce-overhead"`) on a GPU. "auto" is "graph" on CUDA and "fused" elsewhere.
Only the transformer step (tokens -> logits) is recorded: the loop itself is `sample_codes`'s
(guidance mixing, the filters, the seeded draw, known codes), so the same generator state gives
the same codes, up to floating-point rounding in the logits.

Recorded steps and their caches are kept per prior, batch size, dtype and mode, and reused by
later calls (a CUDA graph replays fixed addresses); moving or replacing the prior's weights
makes new ones.

Shape legend: b - batch (guided: twice or three times the images), h - query heads, g - query heads per
key/value head, n - cache slots, d - head dimension, k - codebook size.
"""

import warnings
import weakref

import torch
from einops import rearrange
from x_transformers.x_transformers import rotate_half

from vq.stage2_prior.fused import PROBE_TOLERANCE, FusedDecoder, Unsupported
from vq.stage2_prior.sampling import attend_one, decoder_blocks, sample_codes

SPAN = 16  # cache slots are allocated, and recorded spans grow, in multiples of this
MODES = ("eager", "fused", "graph", "compile")
KEEP = 4  # recorded decoders kept per prior (oldest dropped first)

_decoders: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def rotate(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of one position, as x-transformers' `apply_rotary_pos_emb`: the first
    rot dimensions of t (..., d) rotated by cos, sin (1, rot) (float32), the rest kept."""
    rot = cos.shape[-1]
    head, tail = t[..., :rot], t[..., rot:]
    return torch.cat((head * cos + rotate_half(head) * sin, tail), dim=-1).to(t.dtype)


def compute_dtype(model) -> torch.dtype:
    """The dtype the prior's projections produce here: autocast's when it is on, else the weights'."""
    device = next(model.parameters()).device
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(model.parameters()).dtype


class StaticDecoder:
    """The decode step of a `AutoregressivePrior`'s pre-norm Decoder over fixed-shape caches for `batch`
    rows. It holds the prior's x-transformers modules (never the prior itself), so their weights
    are the live ones."""

    def __init__(self, model, batch: int, dtype: torch.dtype | None = None):
        net = model.net
        layers = net.attn_layers
        self.net = net
        self.blocks = decoder_blocks(net, "StaticDecoder")
        c = model.config
        self.heads, self.kv_heads = c.heads, c.kv_heads or c.heads
        self.batch = batch
        self.max_len = c.seq_len + 1
        self.slots = round_up(self.max_len, SPAN)
        device = next(model.parameters()).device
        dtype = dtype or compute_dtype(model)
        freqs, _ = layers.rotary_pos_emb(torch.arange(self.max_len, device=device))
        self.cos, self.sin = freqs[0].float().cos(), freqs[0].float().sin()  # (max_len, rot)
        self.slot_index = torch.arange(self.slots, device=device)
        self.position_ids = torch.arange(self.slots, device=device)[:, None]  # [t]: position t as a (1,) tensor
        dim_head = c.dim // c.heads
        kinds = [kind for kind, _, _ in self.blocks]

        def cache(n: int) -> torch.Tensor:
            buf = torch.zeros(batch, self.kv_heads, n, dim_head, dtype=dtype, device=device)
            if device.type == "cuda":  # updated in place by compiled steps: a fixed address, not a graph input
                torch._dynamo.mark_static_address(buf)
            return buf

        self.keys = [cache(self.slots) for _ in range(kinds.count("a"))]
        self.values = [cache(self.slots) for _ in range(kinds.count("a"))]
        # A sketch prior's context has one token per code cell: seq_len of them.
        self.cross = [(cache(c.seq_len), cache(c.seq_len)) for _ in range(kinds.count("c"))]

    def set_context(self, context: torch.Tensor | None) -> None:
        """Write each cross-attention's keys and values of the context (b, m, dim) into the static
        cross cache (once per batch)."""
        if not self.cross:
            return
        if context is None:
            raise ValueError("this prior cross-attends: give its context")
        blocks = [block for kind, _, block in self.blocks if kind == "c"]
        for (keys, values), block in zip(self.cross, blocks):
            for buf, proj in ((keys, block.to_k), (values, block.to_v)):
                x = rearrange(proj(context), "b m (h d) -> b h m d", h=self.kv_heads)
                if x.shape != buf.shape:
                    raise ValueError(f"context gives cross keys of shape {tuple(x.shape)}, the cache holds {tuple(buf.shape)}")
                buf.copy_(x)

    def step(self, tokens: torch.Tensor, pos: torch.Tensor, span: int, masked: bool = True) -> torch.Tensor:
        """(b,) tokens at position `pos` ((1,) int64 tensor) -> (b, k) logits for the position
        after it. Self-attention reads the first `span` cache slots (pos < span <= slots), with
        the slots past pos masked out when `masked` (else span must be pos + 1)."""
        net = self.net
        x = net.project_emb(net.emb_dropout(net.post_emb_norm(net.token_emb(tokens[:, None]))))
        cos, sin = self.cos.index_select(0, pos), self.sin.index_select(0, pos)
        mask = self.slot_index[:span] <= pos if masked else None
        attn_index = cross_index = 0
        for kind, norm, block in self.blocks:
            h = norm(x)
            if kind == "f":
                x = x + block(h)
                continue
            q = rearrange(block.to_q(h), "b 1 (h d) -> b h 1 d", h=self.heads)
            if kind == "a":
                k = rearrange(block.to_k(h), "b 1 (h d) -> b h 1 d", h=self.kv_heads)
                v = rearrange(block.to_v(h), "b 1 (h d) -> b h 1 d", h=self.kv_heads)
                q, k = rotate(q, cos, sin), rotate(k, cos, sin)
                keys, values = self.keys[attn_index], self.values[attn_index]
                keys.index_copy_(2, pos, k)
                values.index_copy_(2, pos, v)
                out = attend_one(q, keys[:, :, :span], values[:, :, :span], mask)
                attn_index += 1
            else:
                keys, values = self.cross[cross_index]
                out = attend_one(q, keys, values, None)
                cross_index += 1
            x = x + block.to_out(rearrange(out, "b h 1 d -> b 1 (h d)"))
        return net.to_logits(net.attn_layers.final_norm(x))[:, 0]


class GraphRecordError(RuntimeError):
    """Recording a CUDA graph of the step failed (not running it)."""


class Stepper:
    """Runs a `StaticDecoder`'s step for position t in one of `MODES` (see the module's notes)."""

    def __init__(self, decoder: StaticDecoder | FusedDecoder, mode: str):
        self.decoder, self.mode = decoder, mode
        if mode == "fused":
            return
        device = decoder.slot_index.device
        if mode == "graph" and device.type != "cuda":
            raise ValueError("mode 'graph' records CUDA graphs: it needs a CUDA device")
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        if mode == "graph":
            self.tokens = torch.zeros(decoder.batch, dtype=torch.long, device=device)
            self.pos = torch.zeros(1, dtype=torch.long, device=device)
        if mode == "compile":
            self.compiled = torch.compile(decoder.step, mode="reduce-overhead" if device.type == "cuda" else None,
                                          fullgraph=True, dynamic=False)

    def __call__(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """(b,) tokens at position t -> (b, k) logits. In the recorded modes the logits live in
        a buffer that the next call overwrites: use them before then."""
        d = self.decoder
        if self.mode == "fused":
            return d.step(tokens, t)
        pos = d.position_ids[t]
        if self.mode == "eager":
            return d.step(tokens, pos, t + 1, masked=False)
        if self.mode == "compile":
            if pos.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            return self.compiled(tokens, pos, d.slots, True)
        span = min(round_up(t + 1, SPAN), d.slots)
        self.tokens.copy_(tokens)
        self.pos.copy_(pos)
        if span not in self.graphs:
            try:
                self.graphs[span] = self._record(span)
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as e:
                raise GraphRecordError(str(e).splitlines()[0] if str(e) else type(e).__name__) from e
        graph, logits = self.graphs[span]
        graph.replay()
        return logits

    def _record(self, span: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """Record the step at this span as a CUDA graph over the static inputs. The warm-up runs
        write the same keys and values at the same position as the replay that follows."""
        d = self.decoder
        device = d.slot_index.device
        # Autocast's weight-cast cache must be off while recording: the graph would keep reading
        # cast copies that the cache frees when the caller's autocast region ends.
        on = torch.is_autocast_enabled(device.type)
        cast = torch.autocast(device.type, dtype=torch.get_autocast_dtype(device.type), enabled=on, cache_enabled=False)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with cast, torch.cuda.stream(side):
            for _ in range(2):
                d.step(self.tokens, self.pos, span)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with cast, torch.cuda.graph(graph):
            logits = d.step(self.tokens, self.pos, span)
        return graph, logits


def resolve_mode(compile: bool | str, device: torch.device) -> str:
    """compile: "auto" (CUDA graphs on CUDA, fused elsewhere), True ("compile"), False ("eager"),
    or one of MODES."""
    if compile == "auto":  # "fused" answers a CPU's dispatch cost; other devices run the modules
        return "graph" if device.type == "cuda" else "fused" if device.type == "cpu" else "eager"
    if compile is True:
        return "compile"
    if compile is False:
        return "eager"
    if compile not in MODES:
        raise ValueError(f"compile must be 'auto', True, False or one of {MODES}, not {compile!r}")
    return compile


def weights_key(model, mode: str) -> tuple:
    """The addresses of the prior's parameters (a prior moved or reloaded gets new caches and
    graphs) and, for "fused", whose weights are folded copies, their versions too (a prior trained
    in place gets new ones; the other modes read the live weights)."""
    if mode != "fused":
        return tuple(p.data_ptr() for p in model.parameters())
    try:
        return tuple((p.data_ptr(), p._version) for p in model.parameters())
    except RuntimeError:  # inference tensors have no version counter; nothing can train them in place
        return tuple(p.data_ptr() for p in model.parameters())


def stepper_for(model, batch: int, mode: str) -> Stepper:
    """The prior's kept decoder for this batch size, compute dtype and mode, or a new one."""
    dtype = compute_dtype(model)
    device = next(model.parameters()).device
    key = (batch, dtype, mode, torch.is_autocast_enabled(device.type), weights_key(model, mode))
    kept = _decoders.setdefault(model, {})
    if key not in kept:
        if len(kept) >= KEEP:
            kept.pop(next(iter(kept)))
        kept[key] = new_stepper(model, batch, mode, dtype)
    return kept[key]


@torch.no_grad()
def new_stepper(model, batch: int, mode: str, dtype: torch.dtype) -> Stepper:
    """A Stepper in `mode`; "fused" falls back to "eager" for a prior FusedDecoder does not cover."""
    if mode == "fused":
        try:
            if dtype != torch.float32:
                raise Unsupported("autocast")
            return Stepper(probed(FusedDecoder(model, batch), model), "fused")
        except (Unsupported, NotImplementedError, RuntimeError):  # a layout, or a device kernel, it lacks
            mode = "eager"
    return Stepper(StaticDecoder(model, batch, dtype), mode)


def probed(fused: FusedDecoder, model, steps: int = 3) -> FusedDecoder:
    """`fused` if its logits match StaticDecoder's on random tokens (and a random context) for the
    first positions, else Unsupported. The probe's cache slots are rewritten before a draw reads them."""
    c = model.config
    reference = StaticDecoder(model, fused.rows, torch.float32)
    generator = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    if reference.cross:
        context = torch.randn(fused.rows, c.seq_len, c.dim, generator=generator).to(device)
        reference.set_context(context)
        fused.set_context(context)
    worst = 0.0
    for t in range(min(steps, c.seq_len)):
        tokens = torch.randint(0, c.codebook_size, (fused.rows,), generator=generator).to(device)
        want, got = reference.step(tokens, reference.position_ids[t], t + 1, masked=False), fused.step(tokens, t)
        worst = max(worst, float((want - got).abs().max() / (1.0 + want.abs().max())))
    if not worst <= PROBE_TOLERANCE:  # also refuses NaN
        raise Unsupported(f"folded logits differ by {worst:.2g}")
    return fused


_graphs_failed: list[str] = []  # why recording CUDA graphs failed here once: later calls skip them


@torch.no_grad()
def sample_codes_fast(model, labels: torch.Tensor | None = None, *, compile: bool | str = "auto", **kwargs) -> torch.Tensor:
    """Draw code maps from the prior: `sample_codes`'s arguments and draws (see there), through
    a static-shape decode step. compile: "auto" (CUDA graphs on CUDA, fused elsewhere), "fused", "eager",
    "graph" (CUDA only), "compile" / True (torch.compile; CUDA graphs on CUDA), False (eager).
    Under "auto", a GPU on which recording CUDA graphs fails samples without them, after one
    warning. Returns (b, h, w) int64 codes in [0, k)."""
    device = next(model.parameters()).device
    mode = resolve_mode(compile, device)
    if compile == "auto" and mode == "graph" and _graphs_failed:
        mode = "eager"

    def make(model, rows: int, context: torch.Tensor | None) -> Stepper:
        stepper = stepper_for(model, rows, mode)
        stepper.decoder.set_context(context)
        return stepper

    generator = kwargs.get("generator")
    start = generator.get_state() if generator is not None else None
    try:
        return sample_codes(model, labels, stepper=make, **kwargs)
    except GraphRecordError as e:
        if compile != "auto":
            raise
        _graphs_failed.append(str(e))
        warnings.warn(f"recording CUDA graphs failed ({e}); sampling without them", stacklevel=2)
        _decoders.pop(model, None)
        if generator is not None:  # the same draws as if graphs had never been tried
            generator.set_state(start)
        return sample_codes_fast(model, labels, compile="auto", **kwargs)
