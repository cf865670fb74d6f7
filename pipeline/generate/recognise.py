"""A drawing given without its class, sampled as the class it reads as.

People draw with proportions of their own (trousers twice as wide as Fashion-MNIST's, T-shirts
half again as wide), so a prior that reads a drawing alone fills its silhouette with whatever
garment has that shape: the trousers come back as shirts. A prior with a recogniser
(`stage2_prior.conditions.SketchRecogniser`, trained beside it on free-hand sketches of other
proportions) tells the drawn class first; the drawing is then read again framed to that class's
proportions (`SketchRecord.frame_for`) and sampled with the class, as a drawing given with its
class is (`options.drawing_class_guidance`). Measured in the README ("Drawings against exact
outlines"): the drawn class is seen in many more samples, for drawings and exact outlines alike.

The class is the recogniser's likeliest, for every sample of the drawing: a user who means
another gives it (`vq sample --class`, the studio's class box), and the note names the next
likeliest (`recognition_note`). `Pipeline.sample` recognises its one drawing; `vq eval --drawings`
and the benchmark's exact outlines recognise many at once through `recognised`.

Shape legend: b - drawings, C - classes, S - a sketch's side."""

from collections.abc import Callable

import torch

from vq.pipeline.records import SketchRecord
from vq.stage2_prior import Prior


@torch.no_grad()
def recognise(prior: Prior, lines: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, 1, S, S) bool lines of drawings (read framed to the dataset's object size) -> ((b,)
    the likeliest class of each, (b, C) the recogniser's probabilities), on the CPU. The prior
    must have a recogniser (`PriorRecord.recognises`)."""
    device = next(prior.parameters()).device
    probs = torch.cat([prior.recognise(part.to(device)).cpu() for part in lines.split(1024)])
    return probs.argmax(1), probs


def recognised(prior: Prior, sketch: SketchRecord, lines: torch.Tensor, read: Callable[[int, object], torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drawings without a class -> what they are sampled as: ((b,) the class each reads as, (b, 1,
    S, S) its lines read again framed to that class (`read(i, box)` reads drawing i framed to a
    box), (b, C) the recogniser's probabilities). `lines`: as read without a class."""
    classes, probs = recognise(prior, lines)
    framed = torch.cat([read(i, sketch.frame_for(c)) for i, c in enumerate(classes.tolist())])
    return classes, framed, probs


def recognition_note(probs: torch.Tensor, class_names: list[str], shown: int = 3) -> str:
    """(C,) probabilities -> 'read as Trouser (65%; then Shirt 14%, Dress 6%)'."""
    top = probs.topk(min(shown, probs.numel()))
    first, *rest = [(class_names[i], float(p)) for p, i in zip(top.values, top.indices.tolist())]
    then = f"; then {', '.join(f'{n} {p:.0%}' for n, p in rest)}" if rest else ""
    return f"read as {first[0]} ({first[1]:.0%}{then})"
