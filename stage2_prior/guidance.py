"""Classifier-free guidance (Ho & Salimans 2022) for both prior kinds: x-transformers has none, so
a sampler runs each conditional row beside its null twins in one batch and mixes their logits:
`cond + (scale - 1) * (cond - null)`, exactly the conditional logits at scale 1. A sketch prior
given a class guides the class at a scale of its own with a third row, as InstructPix2Pix
guides by image and text.

Shape legend: b - images, rows - what the network runs (1 to 3 per image), k - codebook size.
"""

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
