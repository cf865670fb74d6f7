"""A masked prior over code maps with parallel decoding: MaskGIT (Chang et al. 2022, "MaskGIT:
Masked Generative Image Transformer"), class-conditional with class dropout for classifier-free
guidance (Ho & Salimans 2022), beside the autoregressive prior (`model.CodePrior`) over the same
codes.

A bidirectional x-transformers Encoder reads `[class token] + codes`, some codes replaced by a
mask token, and predicts every code at once. The input vocabulary is the K codes, one token per
class, the null class (as the autoregressive prior numbers them), then the mask token; the
output head has only K logits, so class, null and mask tokens can never be sampled. A sketch
prior reads the edge map by cross-attention with the autoregressive prior's `SketchEncoder` and
learned null sketch, and drops class, sketch or both in training the same way.

Training masks ceil(cos(pi/2 * r) * n) codes of each row, r ~ U(0, 1) (at least one), at random
positions, and takes the cross-entropy on the masked positions only.

Sampling (`sample_masked`, the readable reference loop, as google-research/maskgit's
`parallel_decode.py`): every unknown code starts masked; known codes (completion of any region)
are given from the start and are never masked or changed. Each of `steps` iterations predicts
every masked code at once (guided: the conditional rows and their null twins in one batch, their
logits mixed as the autoregressive sampler mixes them), draws through the same temperature /
top-k / top-p filters, scores each draw by its log-probability plus Gumbel noise that anneals to
zero (`confidence`), and re-masks the least confident draws so that the share of the unknown
codes still masked follows the cosine schedule (`mask_schedule`, `masked_count`, `remask`).
Codes once kept stay decided. There is no exact likelihood: `masked_ce` measures the masked-code
cross-entropy at a fixed masking ratio instead.

`sample_masked_fast` runs the same loop with the network's forward over static buffers: every
step has the same shapes, so on CUDA it is recorded once as a CUDA graph per batch size and
replayed (`fast.py`'s approach and fallback); on a CPU it runs eager.

Shape legend: b - batch (guided: rows, twice or three times the images), n - codes per map (h * w),
h w - code grid, k - codebook size, s - sketch side.
"""

import math
import warnings
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from x_transformers import Encoder, TransformerWrapper

from vq.stage2_prior.config import PriorConfig
from vq.stage2_prior.fast import GraphRecordError, compute_dtype, resolve_mode
from vq.stage2_prior.model import CodePrior, PriorOutput, add_sketch_condition, layer_options
from vq.stage2_prior.sampling import condition_rows, draw, guidance_twins, guide

STEPS = 8  # decoding iterations by default: MaskGIT's choice for 16x16 tokens, ample for 7x7 to 14x14 grids
CHOICE_TEMPERATURE = 4.5  # MaskGIT's Gumbel noise scale on the confidences at the first step
EVAL_RATIO = 0.5  # `masked_ce`'s share of masked codes: one fixed ratio, so that runs compare


@dataclass
class MaskedPriorConfig(PriorConfig):
    """The masked prior's config: the autoregressive prior's fields, each meaning the same, and
    its checks. A type of its own, so a run's config names its prior and the two kinds' defaults
    can part without touching each other."""


# --- the schedule, the masks, confidence and re-masking -------------------------------------------

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


# --- the model -----------------------------------------------------------------------------------

class MaskedPrior(nn.Module):
    name = "masked"
    config_class = MaskedPriorConfig
    # What it can do, read by the pipeline instead of its name: no exact likelihood (no
    # factorisation of p(codes); `masked_ce` is its measure), and completion of any region
    # natively (known codes are simply never masked).
    exact_likelihood = False
    any_mask = True
    parallel_decoding = True  # all codes at once over `steps` iterations

    # The conditions are the autoregressive prior's, read the same way: one definition of the
    # class tokens, the null class and the sketch context for both kinds.
    sketched = CodePrior.sketched
    conditions = CodePrior.conditions
    image_memory = staticmethod(CodePrior.image_memory)  # a full pass each step: the same sequence work, no cache to spare
    null_class = CodePrior.null_class
    class_tokens = CodePrior.class_tokens
    context = CodePrior.context

    def __init__(self, config: MaskedPriorConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.net = TransformerWrapper(
            num_tokens=c.codebook_size + c.num_classes + 2,
            logits_dim=c.codebook_size,
            max_seq_len=c.seq_len + 1,
            # Learned absolute positions, as MaskGIT's: every code sees every other, and a table
            # can learn the grid's two dimensions, which a raster-order rotary offset cannot.
            use_abs_pos_emb=True,
            emb_dropout=c.dropout,
            attn_layers=Encoder(**layer_options(c)),
        )
        add_sketch_condition(self)

    @property
    def mask_token(self) -> int:
        return self.config.codebook_size + self.config.num_classes + 1

    def code_logits(self, tokens: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """(b, 1 + n) input tokens (class token first) -> (b, n, k) logits of every code."""
        logits = self.net(tokens) if context is None else self.net(tokens, context=context)
        return logits[:, 1:]

    def masked_logits(self, codes: torch.Tensor, masked: torch.Tensor, labels: torch.Tensor | None,
                      sketch: torch.Tensor | None = None, keep_sketch: torch.Tensor | None = None) -> torch.Tensor:
        """(b, h, w) codes with the (b, n) `masked` positions hidden -> (b, n, k) logits."""
        flat = rearrange(codes, "b h w -> b (h w)").long()
        tokens = torch.cat([self.class_tokens(labels, flat.shape[0], flat.device),
                            flat.masked_fill(masked, self.mask_token)], dim=1)
        return self.code_logits(tokens, self.context(sketch, flat.shape[0], keep_sketch))

    def drop_conditions(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training's condition dropout for guidance, drawn as the autoregressive prior draws it:
        one draw u per row; u in [0, c) drops the class and the sketch, [c, c + s) the sketch
        alone, [c + s, 2c + s) the class alone (a class prior: the first range only).
        -> (labels with the null class where dropped, (b,) keep-sketch or None)."""
        c = self.config.class_dropout
        s = self.config.sketch_dropout if self.sketched else 0.0
        u = torch.rand(labels.shape, device=labels.device)
        drop_class = u < c
        if self.sketched:
            drop_class |= (u >= c + s) & (u < 2 * c + s)
        labels = torch.where(drop_class, torch.full_like(labels, self.null_class), labels)
        return labels, (u >= c + s) if self.sketched else None

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None, sketch: torch.Tensor | None = None,
                step: int = 0) -> PriorOutput:
        """The training objective: (b, h, w) codes -> logits (b, n, k), and as loss the mean
        cross-entropy in nats over the masked codes only (a cosine-scheduled share of each row)."""
        keep_sketch = None
        if self.training and labels is not None and (self.sketched or self.config.class_dropout > 0):
            labels, keep_sketch = self.drop_conditions(labels)
        b, n = codes.shape[0], self.config.seq_len
        masked = random_positions(training_count(b, n, codes.device), n)
        logits = self.masked_logits(codes, masked, labels, sketch, keep_sketch)
        loss = masked_code_ce(logits, codes, masked).sum() / masked.sum()
        return PriorOutput(logits, loss, {"masked_ce": loss.detach()})

    @torch.no_grad()
    def masked_ce(self, codes: torch.Tensor, labels: torch.Tensor | None, sketch: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, ratio: float = EVAL_RATIO) -> torch.Tensor:
        """(b,) mean cross-entropy in nats of each row's masked codes given its other codes and
        its conditions, with round(ratio * n) codes (at least one) masked at positions drawn
        from `generator`. A masked prior's evaluation measure at a fixed masking ratio, not a
        likelihood: it is not comparable with an autoregressive prior's NLL."""
        b, n = codes.shape[0], self.config.seq_len
        count = torch.full((b,), min(n, max(1, round(ratio * n))), device=codes.device)
        masked = random_positions(count, n, generator)
        per_code = masked_code_ce(self.masked_logits(codes, masked, labels, sketch), codes, masked)
        return per_code.sum(-1) / count

    def score(self, *args, **kwargs):
        raise NotImplementedError("a masked prior has no exact likelihood (exact_likelihood is False); "
                                  "use masked_ce for its masked-code cross-entropy")

    def sample(self, labels: torch.Tensor | None, *, generator: torch.Generator | None = None, cfg_scale: float = 1.0,
               temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               known: torch.Tensor | None = None, known_mask: torch.Tensor | None = None,
               sketch: torch.Tensor | None = None, class_scale: float | None = None, steps: int | None = None,
               choice_temperature: float = CHOICE_TEMPERATURE, num: int | None = None) -> torch.Tensor:
        """Draw (b, h, w) code maps: the prior interface every caller uses (see `sample_masked`
        for the arguments), through the fast static-shape path."""
        return sample_masked_fast(self, labels, generator=generator, cfg_scale=cfg_scale, temperature=temperature,
                                  top_k=top_k, top_p=top_p, known=known, known_mask=known_mask, sketch=sketch,
                                  class_scale=class_scale, steps=steps, choice_temperature=choice_temperature, num=num)


def masked_code_ce(logits: torch.Tensor, codes: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """(b, n, k) logits, (b, h, w) codes, (b, n) masked -> (b, n) cross-entropy, zero where not
    masked. Weighting every position, rather than indexing the masked ones, keeps the step free
    of a device sync."""
    target = rearrange(codes, "b h w -> b (h w)").long()
    ce = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
    return ce * masked


# --- sampling ------------------------------------------------------------------------------------

def plain_stepper(model, rows: int, context: torch.Tensor | None):
    return lambda tokens: model.code_logits(tokens, context)


@torch.no_grad()
def sample_masked(
    model: MaskedPrior,
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
    sketch: torch.Tensor | None = None,
    class_scale: float | None = None,
    steps: int | None = None,
    choice_temperature: float = CHOICE_TEMPERATURE,
    force_guidance_batch: bool = False,
    stepper=None,
) -> torch.Tensor:
    """Draw code maps by MaskGIT's parallel decoding. labels, num, sketch, cfg_scale, class_scale,
    temperature, top_k, top_p, generator and force_guidance_batch mean what they mean to
    `sampling.sample_codes`.

    known, known_mask: (b, h, w) codes and a bool mask of the positions to keep, a region of any
      shape: they are never masked, and come back unchanged.
    steps: decoding iterations (default STEPS = 8); each predicts every masked code at once.
    choice_temperature: the Gumbel noise on the confidences at the first step, falling linearly
      to zero at the last (0: keep the most likely draws, no noise).
    stepper: (model, rows, context) -> step(tokens) -> logits, the network to run (default the
      prior's forward; `sample_masked_fast` passes its static-shape one).
    Returns (b, h, w) int64 codes in [0, k).
    """
    c = model.config
    device = next(model.parameters()).device
    b = labels.shape[0] if labels is not None else num
    if b is None:
        raise ValueError("give labels or num")
    steps = STEPS if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    if labels is not None:
        labels = labels.to(device)
    n = c.seq_len
    twins = guidance_twins(cfg_scale, class_scale, labels, sketch, force_guidance_batch)
    guided = twins > 1

    codes = torch.full((b, n), model.mask_token, dtype=torch.long, device=device)
    if known is not None:
        keep = rearrange(known_mask, "b h w -> b (h w)").to(device)
        codes = torch.where(keep, rearrange(known, "b h w -> b (h w)").to(device).long(), codes)
    unknown = (codes == model.mask_token).sum(-1)

    cls, context = condition_rows(model, labels, sketch, b, device, twins)
    step = (stepper or plain_stepper)(model, cls.shape[0], context)
    for t in range(1, steps + 1):
        masked = codes == model.mask_token
        tokens = torch.cat([cls, codes.repeat(twins, 1)], dim=1)
        logits = step(tokens).float()
        if guided:
            logits = guide(logits, b, cfg_scale, class_scale)
        drawn = draw(rearrange(logits, "b n k -> (b n) k"), temperature, top_k, top_p, generator).view(b, n)
        drawn = torch.where(masked, drawn, codes)  # known and decided codes stay as they are
        score = confidence(logits, drawn, masked, choice_temperature * (1 - t / steps), generator)
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

    def __init__(self, model: MaskedPrior, rows: int, mode: str):
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


def static_step(model: MaskedPrior, rows: int, mode: str) -> StaticStep:
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


def ready_step(model: MaskedPrior, rows: int, context: torch.Tensor | None, mode: str, fall_back: bool) -> StaticStep:
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
def sample_masked_fast(model: MaskedPrior, labels: torch.Tensor | None = None, *, compile: bool | str = "auto",
                       **kwargs) -> torch.Tensor:
    """Draw code maps: `sample_masked`'s arguments and draws (see there), through a static-shape
    step. compile: "auto" (CUDA graphs on CUDA, eager elsewhere), "eager", "graph" (CUDA only),
    "compile" / True (torch.compile; CUDA graphs on CUDA), False (eager). Under "auto", a GPU on
    which recording CUDA graphs fails samples without them. Returns (b, h, w) int64 codes in [0, k)."""
    mode = resolve_mode(compile, next(model.parameters()).device)
    make = lambda model, rows, context: ready_step(model, rows, context, mode, compile == "auto")  # noqa: E731
    return sample_masked(model, labels, stepper=make, **kwargs)
