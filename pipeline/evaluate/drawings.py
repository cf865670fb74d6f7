"""`vq eval --drawings DIR`: how well a sketch prior follows drawings as people make them.

A folder of drawings (any size and mode, read like `--sketch`) names each one's class by its file
name (`ankle-boot-3.png`: the name without a trailing `-N`) or by the folder it is in
(`DIR/Ankle boot/any.png`). For each drawing the prior draws `per_drawing` samples from the
sketch alone and as many from the sketch and its class (the drawing then framed to its class's
box, `SketchRecord.frame_for`, and the class guided as `vq sample` guides it,
`generate.options.drawing_class_guidance`); a prior with a recogniser samples a drawing alone as
`vq sample --sketch` does, as the class it reads as (`generate.recognise`), and the report adds the
share of drawings read as their own class (`recognised`). For each mode:

- **class accuracy**: the share of samples the judge (`vq eval`'s classifier) sees as the drawn class;
- **inside**: the share of a sample's silhouette (`sketch.edges.silhouette`: the pixels that stand out
  from its background) that lies within the drawing's filled region (its lines, grown by one
  pixel of tolerance, with everything they enclose);
- **coverage**: the share of that region the sample's silhouette covers.

Both are 1 for a sample that fills the drawn outline exactly. A drawing whose outline is left open
(a gap wider than the tolerance) encloses nothing: its region is only its lines, which lowers
`inside` and raises `coverage`; the per-drawing figures show it."""

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from vq.pipeline.errors import VQError
from vq.pipeline.evaluate.judge import predict
from vq.pipeline.generate.draw import generate_images
from vq.pipeline.generate.options import drawing_class_guidance
from vq.pipeline.generate.plans import resolve_class
from vq.pipeline.generate.recognise import recognised
from vq.pipeline.records import SketchRecord
from vq.pipeline.sketch.drawings import as_drawing, load_drawing
from vq.pipeline.sketch.edges import dilate, fill_holes, silhouette
from vq.stage2_prior import SamplingOptions

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Drawing:
    path: Path
    label: int
    lines: torch.Tensor  # (1, 1, S, S) bool, as the prior reads it alone
    class_lines: torch.Tensor  # ... and given with its class (framed to the class's box where one is recorded)

    def read(self, box) -> torch.Tensor:
        """(1, 1, S, S) bool: the drawing read again, framed to another box (a recognised class's)."""
        return load_drawing(self.path, self.lines.shape[-1], box)[0]


def drawing_class(path: Path, folder: Path, class_names: list[str]) -> int:
    """A drawing's class: its folder's name when it sits in a subfolder, else its file name
    without a trailing -N; a name that is no class is refused in one line."""
    name = path.parent.name if path.parent != folder else re.sub(r"[-_ ]\d+$", "", path.stem)
    try:
        return resolve_class(name, class_names)
    except VQError:
        raise VQError(f"drawing {path}: '{name}' names no class (name a drawing after its class, e.g. "
                      f"ankle-boot-1.png, or put it in a folder named after it); classes: {', '.join(class_names)}") from None


def read_drawing_set(folder: Path, class_names: list[str], size: int, sketch: SketchRecord | None) -> list[Drawing]:
    """Every drawing in `folder` and its subfolders, sorted by path, read like `--sketch`: framed
    to the boxes the sketch prior's record holds (`SketchRecord.frame_for`; none: padded only)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VQError(f"--drawings {folder} is not a folder of drawings")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise VQError(f"--drawings {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    box, drawings = sketch.frame_for() if sketch else None, []
    for p in paths:
        label = drawing_class(p, folder, class_names)
        class_box = sketch.frame_for(label) if sketch else None
        lines = load_drawing(p, size, box)[0]
        drawings.append(Drawing(p, label, lines, lines if class_box == box else load_drawing(p, size, class_box)[0]))
    return drawings


def drawn_region(lines: torch.Tensor) -> torch.Tensor:
    """(b, 1, S, S) bool lines -> bool: the lines grown by a pixel, and everything they enclose."""
    return fill_holes(dilate(lines))


def follows(images: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, C, H, W) samples in [-1, 1] and (b, 1, H, W) regions -> (inside, coverage), each (b,)."""
    shape = silhouette(images)
    both = (shape & region).flatten(1).sum(1).float()
    inside = both / shape.flatten(1).sum(1).clamp(min=1)
    coverage = both / region.flatten(1).sum(1).clamp(min=1)
    return inside, coverage


@torch.no_grad()
def follow_figures(tokenizer, prior, classifier, lines: torch.Tensor, region: torch.Tensor, drawn: torch.Tensor,
                   labels: torch.Tensor, options: SamplingOptions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sample per row of (b, 1, S, S) lines read as drawings, given `labels` (-1: no class) ->
    per sample: 1.0 where the judge sees the drawn class, inside, coverage of `region`
    (`drawn_region(lines)`)."""
    images = generate_images(tokenizer, prior, labels, options, as_drawing(lines)).cpu()
    pred, _ = predict(classifier, images)
    inside, coverage = follows(images, region)
    return (pred == drawn).float(), inside, coverage


MODES = ("sketch_only", "sketch_and_class")


@torch.no_grad()
def drawing_agreement(tokenizer, prior, classifier, drawings: list[Drawing], per_drawing: int, options: SamplingOptions,
                      class_names: list[str], box: float | None, modes: tuple[str, ...] = MODES,
                      sketch: SketchRecord | None = None) -> dict:
    """The module's figures, over all drawings and per drawing, for the sketch alone and sketch +
    class (or those of `modes`); with the class, each drawing is read framed to its class's box
    and the class's guidance is `drawing_class_guidance`'s. `sketch` (the prior's record, its
    boxes): a prior with a recogniser samples a drawing alone as the class it reads as, framed to
    that class; None: without a class."""
    drawn = torch.tensor([d.label for d in drawings]).repeat_interleave(per_drawing)
    with_class = drawing_class_guidance(options)
    result = {"n_drawings": len(drawings), "per_drawing": per_drawing, "guidance": options.guidance, "box": box,
              "class_boxes": any(d.class_lines is not d.lines for d in drawings),
              **({"class_guidance": with_class.class_guidance if with_class.class_guidance is not None else options.guidance}
                 if "sketch_and_class" in modes else {}),
              "drawings": [{"file": d.path.name, "class": class_names[d.label]} for d in drawings]}
    read_as = None
    if "sketch_only" in modes and sketch is not None and prior.recognises:
        read_as, framed, _ = recognised(prior, sketch, torch.cat([d.lines for d in drawings]),
                                        lambda i, b: drawings[i].read(b))
        result["recognised"] = float((read_as == drawn[::per_drawing]).float().mean())
        for row, c in zip(result["drawings"], read_as.tolist()):
            row["read_as"] = class_names[c]
    for mode in modes:
        given = mode == "sketch_and_class"
        if given:
            lines, labels = torch.cat([d.class_lines for d in drawings]), drawn
        elif read_as is not None:  # as `vq sample --sketch` samples a drawing alone: as the class it reads as
            lines, labels = framed, read_as.repeat_interleave(per_drawing)
        else:
            lines, labels = torch.cat([d.lines for d in drawings]), torch.full_like(drawn, -1)
        lines = lines.repeat_interleave(per_drawing, 0)
        hit, inside, coverage = follow_figures(tokenizer, prior, classifier, lines, drawn_region(lines), drawn, labels,
                                               with_class if given or read_as is not None else options)
        result[mode] = {"acc": float(hit.mean()), "inside": float(inside.mean()), "coverage": float(coverage.mean())}
        for i, row in enumerate(result["drawings"]):
            part = slice(i * per_drawing, (i + 1) * per_drawing)
            row[mode] = {"acc": float(hit[part].mean()), "inside": float(inside[part].mean()),
                         "coverage": float(coverage[part].mean())}
    return result
