"""Generation over loaded models, as pure functions of a seed: sample = prior -> decoder (or a
VAE's latent prior -> decoder); complete = known codes -> prior -> decoder. `Pipeline` calls
these; so do evaluation and training previews, so every image vq shows is drawn the same way."""

import math
import numbers
import re
from dataclasses import dataclass, replace

import torch

from vq.pipeline.runs import VQError

CHUNK = 256  # images per sampling batch, at most
CHUNK_BYTES = 2**31  # working memory one sampling batch may take (the models' own estimates, `image_memory`)


def chunk_size(*models) -> int:
    """Images per sampling batch: CHUNK, fewer where the models need more memory per image (large
    images or code grids), so that no batch takes more than CHUNK_BYTES."""
    per_image = max(type(m).image_memory(m.config)[0] for m in models if m is not None)
    return max(1, min(CHUNK, CHUNK_BYTES // per_image))


# The ranges every number a user gives is checked against, before it is used, with the same rule
# and message from the command line, the Python API and the studio. Beyond them nothing useful
# happens and floating point breaks: guidance of 1e308 mixes logits into inf - inf = NaN, and a
# temperature of 1e-40 divides them into infinities.
MAX_GUIDANCE = 100.0
TEMPERATURE_RANGE = (1e-3, 100.0)  # or 0: greedy
MAX_STEPS = 1024  # a masked prior's decoding iterations (no grid vq samples has more codes than 4096)
MAX_TOP_K = 2**31 - 1
SEED_RANGE = (0, 2**64 - 1)  # what torch.Generator.manual_seed takes


def whole(value, name: str, low: int, high: int | None = None) -> int:
    """A whole number a user gave (an int, or a float holding one) within [low, high], else one line."""
    ok = not isinstance(value, bool) and (isinstance(value, numbers.Integral)
                                          or (isinstance(value, float) and math.isfinite(value) and value.is_integer()))
    if ok and low <= int(value) and (high is None or int(value) <= high):
        return int(value)
    bound = f"from {low:,} to {high:,}" if high is not None else f"of at least {low:,}"
    raise VQError(f"{name} must be a whole number {bound}, got {value!r}")


def real(value, name: str, low: float, high: float, hint: str = "") -> float:
    """A finite number a user gave within [low, high], else one line."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok and low <= float(value) <= high:
        return float(value)
    raise VQError(f"{name} must be a number from {low:g} to {high:g}{hint}, got {value!r}")


@dataclass
class SamplingOptions:
    cfg: float = 2.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    steps: int | None = None  # a parallel-decoding prior's iterations (None: its default)
    class_cfg: float | None = None  # a sketch prior's guidance for the class on top of the sketch (None: cfg; for a
    # drawing given with its class, `drawing_class_guidance`)

    def validate(self) -> None:
        """Every number of a type and in a range (the module's limits), else one line naming it as
        the API does; the numbers are then plain ints and floats."""
        self.cfg = real(self.cfg, "guidance", 0, MAX_GUIDANCE, " (1 = no guidance)")
        low, high = TEMPERATURE_RANGE
        self.temperature = 0.0 if self.temperature == 0 and not isinstance(self.temperature, bool) else real(
            self.temperature, "temperature", low, high, " (or 0: always the likeliest code)")
        if self.top_k is not None:
            self.top_k = whole(self.top_k, "top_k", 1, MAX_TOP_K)
        if self.top_p is not None:
            if isinstance(self.top_p, bool) or not isinstance(self.top_p, numbers.Real) or not 0 < self.top_p <= 1:
                raise VQError(f"top_p must lie in (0, 1] (1 = no cut), got {self.top_p!r}")
            self.top_p = float(self.top_p)
        self.seed = whole(self.seed, "seed", *SEED_RANGE)
        if self.steps is not None:
            self.steps = whole(self.steps, "steps", 1, MAX_STEPS)
        if self.class_cfg is not None:
            self.class_cfg = real(self.class_cfg, "class_guidance", 0, MAX_GUIDANCE)

    def decode_kwargs(self, prior) -> dict:
        """What a prior's `sample` takes beyond the draw: a parallel-decoding prior's steps; a
        sequential prior refuses them rather than ignoring them."""
        if self.steps is None:
            return {}
        if not prior.parallel_decoding:
            raise VQError("steps is for a masked (parallel-decoding) prior; this prior draws one code at a time")
        return {"steps": self.steps}


DRAWING_CLASS_GUIDANCE = 2.0  # a drawing given with its class: the class guided at this many times the drawing's guidance


def drawing_class_guidance(opts: SamplingOptions) -> SamplingOptions:
    """The options for a drawing given with its class: the class's own guidance, unless one is
    set, is `DRAWING_CLASS_GUIDANCE` times the drawing's (none at guidance 1 or below: no guidance
    stays none). People's drawings say less than the detector's edge maps, and the class guided
    at twice the drawing's makes many more samples of the class for as much of them inside the
    drawing (README, "Free-hand drawings"); an exact edge map keeps `cfg` (its edge F1 falls from
    0.89 to 0.87 at 4). It costs a third row per image in the sampler."""
    if opts.class_cfg is not None or opts.cfg <= 1:
        return opts
    return replace(opts, class_cfg=DRAWING_CLASS_GUIDANCE * opts.cfg)


def resolve_class(value: str, class_names: list[str]) -> int:
    """A class by index or name, case-insensitively, ignoring punctuation ('t-shirt' finds 'T-shirt/top')."""
    if value.isdigit() and int(value) < len(class_names):
        return int(value)

    def norm(s: str) -> str:
        return re.sub(r"[^a-z0-9]", "", s.lower())

    exact = [i for i, n in enumerate(class_names) if n.lower() == value.lower()]
    loose = [i for i, n in enumerate(class_names) if norm(n) == norm(value) or norm(n.split("/")[0]) == norm(value)]
    found = exact or loose
    if len(found) == 1:
        return found[0]
    raise VQError(f"unknown class '{value}'; valid classes: {', '.join(class_names)}")


@torch.no_grad()
def generate_images(tokenizer, prior, labels: torch.Tensor, opts: SamplingOptions,
                    sketches: torch.Tensor | None = None) -> torch.Tensor:
    """(b,) labels (and for a sketch prior, (b, c, S, S) sketches: the lines, and for drawings the
    drawing flag) -> (b, C, H, W) images in [-1, 1], in chunks, from one seeded generator."""
    device = next(tokenizer.parameters()).device
    g = torch.Generator(device=device).manual_seed(opts.seed)
    out = []
    chunk = chunk_size(tokenizer, prior)
    for i in range(0, labels.shape[0], chunk):
        y = labels[i : i + chunk].to(device)
        if prior is not None:
            sk = sketches[i : i + chunk].to(device) if sketches is not None else None
            codes = prior.sample(y, cfg_scale=opts.cfg, temperature=opts.temperature, top_k=opts.top_k,
                                 top_p=opts.top_p, generator=g, sketch=sk, **opts.decode_kwargs(prior),
                                 **({"class_scale": opts.class_cfg} if sk is not None and opts.class_cfg is not None else {}))
            out.append(tokenizer.decode_indices(codes))
        else:
            out.append(tokenizer.sample(y.shape[0], y if tokenizer.conditional else None, generator=g))
    return torch.cat(out).float().clamp(-1, 1)


def is_prefix(mask: torch.Tensor) -> bool:
    """True when the known codes are exactly the first ones in raster order."""
    flat = mask.flatten()
    k = int(flat.sum())
    return bool(flat[:k].all())


@torch.no_grad()
def complete_codes(prior, codes: torch.Tensor, mask: torch.Tensor, label: int | None, n: int,
                   opts: SamplingOptions, candidates: int) -> torch.Tensor:
    """(1, h, w) codes + (h, w) known mask -> (n, h, w) completions that keep every known code.
    A prior that completes any region natively draws n. Otherwise, when some known codes follow
    unknown ones in raster order, the prior cannot see them while drawing what precedes them:
    draw `candidates` per completion and keep the n the prior finds most likely over all known
    codes."""
    device = next(prior.parameters()).device
    draws = n if prior.any_mask or is_prefix(mask) else n * max(1, candidates)
    g = torch.Generator(device=device).manual_seed(opts.seed)
    labels = torch.full((draws,), -1 if label is None else label, device=device)
    known = codes.expand(draws, -1, -1).to(device)
    kmask = mask.expand(draws, -1, -1).to(device)
    out = []
    chunk = chunk_size(prior)
    for i in range(0, draws, chunk):
        out.append(prior.sample(labels[i : i + chunk], cfg_scale=opts.cfg, temperature=opts.temperature,
                                top_k=opts.top_k, top_p=opts.top_p, generator=g,
                                known=known[i : i + chunk], known_mask=kmask[i : i + chunk], **opts.decode_kwargs(prior)))
    drawn = torch.cat(out)
    if draws == n:
        return drawn
    # Score with the unconditional (or class) prior over the whole map, restricted to known codes.
    scores = prior.score(drawn, labels, kmask)
    return drawn[scores.topk(n).indices.sort().values]
