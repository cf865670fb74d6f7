"""Sampling from a masked prior by MaskGIT's parallel decoding (Chang et al. 2022), as
google-research/maskgit's `parallel_decode.py`: `sample_masked` is the readable reference loop;
`sample_masked_fast` runs the same loop with the network's forward over static buffers, so that
every step has the same shapes and, on CUDA, is recorded once as a CUDA graph per batch size and
replayed (`fast.py`'s approach and fallback); on a CPU it runs eager.

Every unknown code starts masked; known codes (completion of any region) are given from the
start and are never masked or changed. Each step predicts every masked code at once (guided: the
conditional rows and their null twins in one batch, `guidance.py`), draws through the
autoregressive sampler's temperature / top-k / top-p filters, scores each draw by its
log-probability plus Gumbel noise that anneals to zero, and re-masks the least confident draws
so that the share still masked follows the cosine schedule (`masking.py`).

Shape legend: b - batch (guided: rows, twice or three times the images), n - codes per map (h * w),
h w - code grid, k - codebook size.
"""

import warnings
import weakref

import torch
from einops import rearrange

from vq.stage2_prior.fast import GraphRecordError, compute_dtype, resolve_mode
from vq.stage2_prior.guidance import Draw
from vq.stage2_prior.masking import confidence, masked_count, remask
from vq.stage2_prior.sampling import draw

STEPS = 8  # decoding iterations by default: MaskGIT's choice for 16x16 tokens, ample for 7x7 to 14x14 grids
CHOICE_TEMPERATURE = 4.5  # MaskGIT's Gumbel noise scale on the confidences at the first step


def plain_stepper(model, rows: int, context: torch.Tensor | None):
    return lambda tokens: model.code_logits(tokens, context)


@torch.no_grad()
def sample_masked(model, labels: torch.Tensor | None = None, *, steps: int | None = None,
                  choice_temperature: float = CHOICE_TEMPERATURE, stepper=None, **draw_args) -> torch.Tensor:
    """Draw code maps by MaskGIT's parallel decoding.

    labels: (b,) class indices, or None (or -1 entries) for unconditional rows.
    draw_args: what `guidance.Draw` names (num, guidance, class_guidance, temperature, top_k, top_p,
      generator, known, known_mask, sketch, force_guidance_batch); known codes, a region of any
      shape, are never masked and come back unchanged.
    steps: decoding iterations (default STEPS = 8); each predicts every masked code at once.
    choice_temperature: the Gumbel noise on the confidences at the first step, falling linearly
      to zero at the last (0: keep the most likely draws, no noise).
    stepper: (model, rows, context) -> step(tokens) -> logits, the network to run (default the
      prior's forward; `sample_masked_fast` passes its static-shape one).
    Returns (b, h, w) int64 codes in [0, k).
    """
    d, c = Draw(**draw_args), model.config
    steps = STEPS if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    rows = d.rows(model, labels)
    b, n = rows.b, c.seq_len
    codes = torch.full((b, n), model.mask_token, dtype=torch.long, device=rows.device)
    if d.known is not None:
        keep = rearrange(d.known_mask, "b h w -> b (h w)").to(rows.device)
        codes = torch.where(keep, rearrange(d.known, "b h w -> b (h w)").to(rows.device).long(), codes)
    unknown = (codes == model.mask_token).sum(-1)
    step = (stepper or plain_stepper)(model, rows.cls.shape[0], rows.context)
    for t in range(1, steps + 1):
        masked = codes == model.mask_token
        logits = d.mix(step(torch.cat([rows.cls, codes.repeat(rows.twins, 1)], dim=1)).float(), rows)
        drawn = draw(rearrange(logits, "b n k -> (b n) k"), d.temperature, d.top_k, d.top_p, d.generator).view(b, n)
        drawn = torch.where(masked, drawn, codes)  # known and decided codes stay as they are
        score = confidence(logits, drawn, masked, choice_temperature * (1 - t / steps), d.generator)
        again = remask(score, masked_count(unknown, masked.sum(-1), t, steps))
        codes = drawn.masked_fill(again, model.mask_token)
    return rearrange(codes, "b (h w) -> b h w", h=c.height, w=c.width)


# --- the fast path -------------------------------------------------------------------------------

KEEP = 4  # static steps kept per prior (oldest dropped first)
_steps: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_graphs_failed: list[str] = []  # why recording CUDA graphs failed here once: later calls skip them


class StaticStep:
    """The prior's forward over static input buffers for `rows` rows: every decoding step has the
    same shapes, so one CUDA graph per batch size serves them all. Modes as `fast.py`'s: "eager"
    calls it, "graph" replays it as a CUDA graph recorded once (`record`), "compile" runs it
    through torch.compile (with CUDA graphs on CUDA). In the recorded modes the returned logits
    live in a buffer that the next call overwrites: use them before then."""

    def __init__(self, model, rows: int, mode: str):
        self.model, self.mode = model, mode
        device = next(model.parameters()).device
        if mode == "graph" and device.type != "cuda":
            raise ValueError("mode 'graph' records CUDA graphs: it needs a CUDA device")
        self.tokens = torch.zeros(rows, model.config.seq_len + 1, dtype=torch.long, device=device)
        self.context: torch.Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None
        if mode == "compile":
            self.compiled = torch.compile(model.code_logits, mode="reduce-overhead" if device.type == "cuda" else None,
                                          dynamic=False)

    def bind(self, context: torch.Tensor | None) -> None:
        """Write this batch's context into the static context buffer (the first batch makes it)."""
        if context is None:
            return
        if self.context is None:
            self.context = context.clone()
        else:
            self.context.copy_(context)

    def record(self) -> None:
        """Record the forward over the static buffers as a CUDA graph, after warm-up runs on a
        side stream. Autocast's weight-cast cache is off while recording: the graph would keep
        reading cast copies that the cache frees when the caller's autocast region ends."""
        device = self.tokens.device
        cast = torch.autocast(device.type, dtype=torch.get_autocast_dtype(device.type),
                              enabled=torch.is_autocast_enabled(device.type), cache_enabled=False)
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with cast, torch.cuda.stream(side):
                for _ in range(2):
                    self.model.code_logits(self.tokens, self.context)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with cast, torch.cuda.graph(graph):
                self.logits = self.model.code_logits(self.tokens, self.context)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as e:
            raise GraphRecordError(str(e).splitlines()[0] if str(e) else type(e).__name__) from e
        self.graph = graph

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.tokens.copy_(tokens)
        if self.mode == "eager":
            return self.model.code_logits(self.tokens, self.context)
        if self.mode == "compile":
            if self.tokens.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            return self.compiled(self.tokens, self.context)
        self.graph.replay()
        return self.logits


def static_step(model, rows: int, mode: str) -> StaticStep:
    """The prior's kept step for this batch size, compute dtype and mode, or a new one; the key
    holds the weights' addresses, so a prior moved or reloaded gets new buffers and graphs."""
    device = next(model.parameters()).device
    key = (rows, compute_dtype(model), mode, torch.is_autocast_enabled(device.type),
           tuple(p.data_ptr() for p in model.parameters()))
    kept = _steps.setdefault(model, {})
    if key not in kept:
        if len(kept) >= KEEP:
            kept.pop(next(iter(kept)))
        kept[key] = StaticStep(model, rows, mode)
    return kept[key]


def ready_step(model, rows: int, context: torch.Tensor | None, mode: str, fall_back: bool) -> StaticStep:
    """The kept step bound to this batch's context and, in mode "graph", recorded. Recording
    happens here, before the loop draws anything, so that when it fails and `fall_back` allows,
    the eager step takes over (after one warning) from the same generator state."""
    if mode == "graph" and fall_back and _graphs_failed:
        mode = "eager"
    step = static_step(model, rows, mode)
    step.bind(context)
    if mode == "graph" and step.graph is None:
        try:
            step.record()
        except GraphRecordError as e:
            if not fall_back:
                raise
            _graphs_failed.append(str(e))
            _steps.pop(model, None)
            warnings.warn(f"recording CUDA graphs failed ({e}); sampling without them", stacklevel=2)
            return ready_step(model, rows, context, "eager", fall_back)
    return step


@torch.no_grad()
def sample_masked_fast(model, labels: torch.Tensor | None = None, *, compile: bool | str = "auto",
                       **kwargs) -> torch.Tensor:
    """Draw code maps: `sample_masked`'s arguments and draws (see there), through a static-shape
    step. compile: "auto" (CUDA graphs on CUDA, eager elsewhere), "eager", "graph" (CUDA only),
    "compile" / True (torch.compile; CUDA graphs on CUDA), False (eager). Under "auto", a GPU on
    which recording CUDA graphs fails samples without them. Returns (b, h, w) int64 codes in [0, k)."""
    mode = resolve_mode(compile, next(model.parameters()).device)
    mode = "eager" if mode == "fused" else mode  # the folded decoder is the autoregressive prior's: here it is the forward
    make = lambda model, rows, context: ready_step(model, rows, context, mode, compile == "auto")  # noqa: E731
    return sample_masked(model, labels, stepper=make, **kwargs)
