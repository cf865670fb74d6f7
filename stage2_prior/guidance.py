"""Classifier-free guidance (Ho & Salimans 2022) for both prior kinds: x-transformers has none, so
a sampler runs each conditional row beside its null twins in one batch and mixes their logits:
`cond + (scale - 1) * (cond - null)`, exactly the conditional logits at scale 1. A sketch prior
given a class guides the class at a scale of its own with a third row, as InstructPix2Pix
guides by image and text.

Shape legend: b - images, rows - what the network runs (1 to 3 per image), k - codebook size.
"""

from dataclasses import dataclass

import torch


def is_guided(guidance: float, labels: torch.Tensor | None, sketch: torch.Tensor | None, force: bool = False) -> bool:
    """Whether a sampler runs the null twins: at a guidance scale other than 1, when some row has a
    condition (a class, or a sketch); rows with neither would mix the null rows with themselves,
    a no-op at twice the work. `force` runs them anyway (tests check the mixing with it)."""
    conditioned = sketch is not None or (labels is not None and bool((labels >= 0).any()))
    return force or (guidance != 1.0 and conditioned)


def guidance_twins(guidance: float, class_guidance: float | None, labels: torch.Tensor | None,
                   sketch: torch.Tensor | None, force: bool = False) -> int:
    """How many rows a sampler runs per image: 3 when a sketch prior's class has a guidance scale
    of its own and some row has both a class and a sketch (the conditional row, its twin with the
    sketch alone, the null twin: the class is guided even at `guidance` 1); else 2 when guided
    (`is_guided`: the conditional row and its null twin); else 1."""
    both = sketch is not None and labels is not None and bool((labels >= 0).any())
    if both and class_guidance is not None and class_guidance != guidance:
        return 3
    return 2 if is_guided(guidance, labels, sketch, force) else 1


def condition_rows(model, labels: torch.Tensor | None, sketch: torch.Tensor | None, b: int, device,
                   twins: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows a sampler runs (`guidance_twins` per image): (rows, 1) class tokens and the
    cross-attention context (None for a class prior), as one batch: the b conditional rows, then
    (twins = 3) their b twins with the null class and the same sketch, then (twins >= 2) their b
    null-class, null-sketch twins."""
    cls = model.class_tokens(labels, b, device)
    context = model.context(sketch.to(device) if sketch is not None else None, b)
    if twins == 3:
        cls, context = torch.cat([cls, model.class_tokens(None, b, device)]), torch.cat([context, context])
    if twins >= 2:
        cls = torch.cat([cls, model.class_tokens(None, b, device)])
        context = torch.cat([context, model.context(None, b)]) if context is not None else None
    return cls, context


def guide(logits: torch.Tensor, b: int, guidance: float, class_guidance: float | None = None) -> torch.Tensor:
    """Classifier-free guidance over the rows of `condition_rows`: exactly the conditional logits
    at scale 1. Two twins: cond + (s - 1)(cond - null). Three (a sketch prior given a class scale
    c, as InstructPix2Pix guides by image and text): null + s (sketch - null) + c (cond - sketch),
    the same as two twins when c = s."""
    if logits.shape[0] == 3 * b:
        cond, sketch, null = logits[:b], logits[b : 2 * b], logits[2 * b :]
        return null + guidance * (sketch - null) + class_guidance * (cond - sketch)
    cond, null = logits[:b], logits[b:]
    return cond + (guidance - 1.0) * (cond - null)


@dataclass
class Draw:
    """What both samplers (`sampling.sample_codes`, `masked_sampling.sample_masked`) take beside the
    prior, the rows' classes and the network to run:

    num: images to draw when no labels are given (unconditional rows).
    guidance: 1 is plain conditional sampling; larger trades diversity for class fidelity.
    class_guidance: a sketch prior's guidance for the class on top of the sketch, for rows with
      both (None: guidance, both conditions guided together); see `guide`.
    temperature (0: greedy), top_k, top_p: the draw's filters; generator: its random numbers.
    known, known_mask: (b, h, w) codes and a bool mask of the positions to keep fixed.
    sketch: (b, c, S, S) sketches for a sketch prior (None: the null sketch): the lines, and for a
      flagged prior optionally the drawing flag. Guidance contrasts the rows' class and sketch
      together with the null class and null sketch.
    force_guidance_batch: run the null rows even at scale 1 (tests use it to check the mixing)."""

    num: int | None = None
    guidance: float = 1.0
    class_guidance: float | None = None
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    generator: torch.Generator | None = None
    known: torch.Tensor | None = None
    known_mask: torch.Tensor | None = None
    sketch: torch.Tensor | None = None
    force_guidance_batch: bool = False

    def rows(self, model, labels: torch.Tensor | None) -> "Rows":
        """The batch a sampler runs for these images (`condition_rows`)."""
        device = next(model.parameters()).device
        b = labels.shape[0] if labels is not None else self.num
        if b is None:
            raise ValueError("give labels or num")
        labels = labels.to(device) if labels is not None else None
        twins = guidance_twins(self.guidance, self.class_guidance, labels, self.sketch, self.force_guidance_batch)
        cls, context = condition_rows(model, labels, self.sketch, b, device, twins)
        return Rows(b, twins, cls, context, device)

    def mix(self, logits: torch.Tensor, rows: "Rows") -> torch.Tensor:
        """The images' logits from the rows' (`guide`), or the rows' own when unguided."""
        return guide(logits, rows.b, self.guidance, self.class_guidance) if rows.twins > 1 else logits


@dataclass
class Rows:
    """The rows a sampler runs for b images: `twins` per image, their (rows, 1) class tokens and the
    cross-attention context (None for a class prior), on `device`."""

    b: int
    twins: int
    cls: torch.Tensor
    context: torch.Tensor | None
    device: torch.device
