"""Drawings as a sketch prior reads them: a drawing (`load_drawing`, `normalise_drawing`) of any size and mode
becomes the detector's kind of map (`edges`): luminance (or, for a drawing on a transparent background, its opacity: the strokes);
polarity from the border (drawings are mostly background, so a light border means dark lines
on light paper, which are inverted); lines are pixels more than halfway from the background to
the ink; with a `box` (the dataset's typical object size, `object_box`, recorded by the export
and the prior), the drawing is framed so that its lines' bounding box is centred and its longer
side spans that share of the image, as the dataset's objects do (people draw anywhere on the
canvas, at any size). A drawing given with its class is framed to that class's proportions
(`class_boxes`, recorded beside `box`): its aspect is brought within the middle half of the
class's objects' aspects (`ASPECT_QUANTILES`), by at most `MAX_STRETCH`, and its longer side made
the class's typical size. People draw with their own proportions (a T-shirt wider than tall;
Fashion-MNIST's are taller than wide), and the prior has learnt the dataset's; a drawing already
in proportion is left as drawn. Without a class the drawing's own aspect is what tells the
classes apart, and it is kept. Without a box, it is padded to a square with background (a
centre crop could cut lines). Then it is shrunk by max-pooling when it is very large, thinned to
one pixel, reduced to the model's size by max-pooling (a line anywhere in a cell marks the
cell), and thinned again. A thick stroke and
a thin one along the same path thus give the same map, up to a pixel where a line runs along a
cell border.

Shape legend: H W - drawing pixels, size - the model's image side.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from vq.pipeline.data.images import decode, deep_to_uint8, has_alpha, is_deep, open_image, reading
from vq.pipeline.errors import VQError
from vq.pipeline.records import ClassBox, PriorRecord
from vq.pipeline.sketch.edges import SKETCH_DETECTOR, border_median, thin


def check_detector(prior: PriorRecord) -> None:
    """A sketch prior reads sketches of the detector that drew its training pairs: refuse another."""
    version = prior.sketch.detector if prior.sketch else None
    if version != SKETCH_DETECTOR:
        raise VQError(f"{prior.run_dir} was trained on sketches of edge detector {version}, and this vq draws them with "
                      f"detector {SKETCH_DETECTOR}; retrain it with `vq fit-prior --condition sketch`")


def as_drawing(lines: torch.Tensor) -> torch.Tensor:
    """(b, 1, S, S) lines of drawings -> (b, 2, S, S): the lines and the drawing flag, a plane of
    ones (`PriorConfig.drawing_flag`): a flagged free-styles prior reads them as a hand's drawing,
    not as an exact edge map; every other sketch prior reads the lines alone."""
    return torch.cat([lines, torch.ones_like(lines)], 1)


MAX_SIDE_PER_CELL = 16  # a drawing is thinned at most 16 x the model's size (larger ones are max-pooled first)


def load_drawing(path, size: int, box: float | ClassBox | None = None) -> tuple[torch.Tensor, str]:
    """A drawing file (or a Pillow image) -> ((1, 1, size, size) bool lines, a note on the
    conversion), framed to `box` when given (`normalise_drawing`); a file that cannot be read, or
    holds no lines, -> a one-line VQError naming it."""
    given = isinstance(path, Image.Image)
    img = path if given else open_image(path)
    path = "sketch" if given else path
    mode, (w, h) = img.mode, img.size
    notes = []
    with reading(path):
        img = ImageOps.exif_transpose(img if given else decode(img, 1, size * MAX_SIDE_PER_CELL))
        if has_alpha(img):
            alpha = np.asarray(img.convert("RGBA"))[..., 3]
            border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
            if np.median(border) < 128:  # strokes on a transparent background (not a few clear pixels)
                notes.append("transparent background: opacity read as the strokes")
                gray = alpha
        if not notes:
            gray = deep_to_uint8(np.asarray(img), img.mode) if is_deep(img.mode) else np.asarray(img.convert("L"))
    try:
        lines, more = normalise_drawing(gray.astype(np.float32) / 255, size, box)
    except ValueError as e:
        raise VQError(f"sketch {path}: {e}; draw lines that differ clearly from the background") from None
    return lines, f"{mode} {w}x{h}, " + ", ".join(notes + more)


def normalise_drawing(gray: np.ndarray, size: int, box: float | ClassBox | None = None
                      ) -> tuple[torch.Tensor, list[str]]:
    """A drawing's luminance (H, W) in [0, 1] -> ((1, 1, size, size) bool lines, notes on the
    conversion); with `box`, the lines' bounding box is centred and framed to it (`frame`).
    Raises ValueError when it holds no lines."""
    x = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32))
    notes = []
    background = float(border_median(x))
    if background > 0.5:
        x = 1 - x
        background = 1 - background
        notes.append("dark lines on light: inverted")
    else:
        notes.append("light lines on dark")
    ink = float(x.max())
    if ink - background < 0.1:
        raise ValueError("it holds no lines (no pixel stands out from the background)")
    lines = (x >= (background + ink) / 2)[None, None]
    h, w = lines.shape[-2:]
    if isinstance(box, ClassBox):
        drawn, aspect = class_aspect(lines, box)
        lines = frame(lines, box)
        notes.append(f"framed to the class: the lines' box made {box.side:.0%} of the side, centred, "
                     + (f"its aspect {drawn:.2f} made {aspect:.2f}" if aspect != drawn else f"its aspect {drawn:.2f} kept")
                     + f" (the class's middle half: {box.aspect_low:.2f}-{box.aspect_high:.2f}, width / height)")
    elif box is not None:
        lines = frame(lines, box)
        notes.append(f"framed: the lines' box made {box:.0%} of the side, centred")
    elif h != w:  # pad to a square, lines centred, as the training images are
        side = max(h, w)
        lines = F.pad(lines, ((side - w) // 2, side - w - (side - w) // 2, (side - h) // 2, side - h - (side - h) // 2))
    limit = size * MAX_SIDE_PER_CELL
    if lines.shape[-1] > limit:
        k = -(-lines.shape[-1] // limit)
        lines = F.max_pool2d(lines.float(), k, k, ceil_mode=True) > 0
        notes.append(f"shrunk {k}x before thinning")
    width = stroke_width(lines)
    lines = thin(lines)
    if lines.shape[-1] != size:
        lines = F.adaptive_max_pool2d(lines.float(), size) > 0 if lines.shape[-1] >= size else \
            F.interpolate(lines.float(), size=(size, size), mode="nearest") > 0
        lines = thin(lines)
    notes.append(f"strokes ~{width:.0f} px thinned to 1 px at {size}x{size}")
    if not lines.any():
        raise ValueError("it holds no lines after thinning")
    return lines, notes


MAX_STRETCH = 2.0  # a drawing's aspect is changed by at most this factor to fit its class's


def line_box(lines: torch.Tensor) -> tuple[int, int, int, int]:
    """(1, 1, H, W) bool lines -> their bounding box: first and last row, first and last column."""
    ys, xs = torch.nonzero(lines[0, 0], as_tuple=True)
    return int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())


def class_aspect(lines: torch.Tensor, box: ClassBox) -> tuple[float, float]:
    """The lines' aspect (width over height) and the one framing to `box` gives them: brought
    within the class's range, changed by at most `MAX_STRETCH`."""
    y0, y1, x0, x1 = line_box(lines)
    drawn = (x1 - x0 + 1) / (y1 - y0 + 1)
    aspect = min(max(drawn, box.aspect_low), box.aspect_high)
    return drawn, min(max(aspect, drawn / MAX_STRETCH), drawn * MAX_STRETCH)


def frame(lines: torch.Tensor, box: float | ClassBox) -> torch.Tensor:
    """(1, 1, H, W) bool lines -> a square crop (padded with background where it leaves the
    drawing) centred on the lines' bounding box, whose longer side spans `box` of the crop (a
    `ClassBox`: its `side`, the lines' aspect first brought within its range by `class_aspect`:
    the lines are stretched along one axis, never shrunk)."""
    y0, y1, x0, x1 = line_box(lines)
    ch, cw = y1 - y0 + 1, x1 - x0 + 1
    if isinstance(box, ClassBox):
        drawn, aspect = class_aspect(lines, box)
        if aspect == drawn:
            return frame(lines, box.side)
        h, w = (ch, max(cw, round(ch * aspect))) if aspect > drawn else (max(ch, round(cw / aspect)), cw)
        side = max(1, round(max(h, w) / box.side))
        crop = F.interpolate(lines[..., y0 : y1 + 1, x0 : x1 + 1].float(), size=(h, w), mode="nearest") > 0
        out = torch.zeros(1, 1, max(side, h, w), max(side, h, w), dtype=torch.bool)
        top, left = (out.shape[-2] - h) // 2, (out.shape[-1] - w) // 2
        out[..., top : top + h, left : left + w] = crop
        return out
    side = max(1, round(max(ch, cw) / box))
    top, left = (y0 + y1 + 1 - side) // 2, (x0 + x1 + 1 - side) // 2
    padded = F.pad(lines, (side, side, side, side))
    return padded[..., top + side : top + 2 * side, left + side : left + 2 * side]


def stroke_width(lines: torch.Tensor) -> float:
    """Mean stroke width of a (1, 1, H, W) bool line map: ink pixels over skeleton pixels."""
    skeleton = thin(lines).sum()
    return float(lines.sum() / skeleton.clamp(min=1))


