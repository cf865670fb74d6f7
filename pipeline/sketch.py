"""Sketches: the fixed edge detector that turns every training image into its sketch, the
normaliser that turns what people draw into the same kind of map, and the edge-agreement score.

**The detector** (`edge_map`, version `SKETCH_DETECTOR`), on each image's luminance in [0, 1]:
1. a 3x3 binomial blur ([1, 2, 1] / 4 in each direction), against pixel noise;
2. Sobel gradients, their magnitude and direction;
3. non-maximum suppression across the edge (4 directions), so lines are one pixel wide;
4. hysteresis: pixels above `HIGH` x the image's largest magnitude start lines, which grow
   through 8-neighbours above `LOW` x that magnitude (thresholds relative to each image, so
   dark garments on black draw as clearly as bright ones); a magnitude below `FLOOR` (in
   luminance units) is never an edge, so a flat image has none;
5. thinning (Zhang & Suen 1984) to one-pixel lines.
Everything is element-wise or a fixed convolution in float32 on the CPU: on one machine and
torch build, the same image always gives the same sketch, in a batch or alone (another CPU or
build may round a pixel near a threshold the other way).

**Outlines** (`outline_map`, version `OUTLINE_VERSION`): what people draw is mostly the boundary of
the object's silhouette, without the inner lines. The silhouette is every pixel that differs from
the image's background (the median of its border) by more than `OUTLINE_LEVEL` of the image's
largest difference (and `FLOOR`), with its holes filled; its boundary, the image's border
counting as background, is thinned to one-pixel lines: a closed curve around each object. The
export stores it beside the edge map, and training draws free-hand styles from both
(`pipeline.sketch_styles`).

**A drawing** (`load_drawing`, `normalise_drawing`) of any size and mode becomes that kind of
map: luminance (or, for a drawing on a transparent background, its opacity: the strokes);
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

**Edge agreement** (`edge_f1`): F1 between two edge maps with a tolerance of one pixel: a pixel
of one map counts as matched when the other has an edge within its 3x3 neighbourhood.

Shape legend: b - batch, H W - image pixels.
"""

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

SKETCH_DETECTOR = 1  # bump when the detector changes: exported sketches record it
OUTLINE_VERSION = 1  # bump when `outline_map` changes: exports record it beside the detector
LOW, HIGH, FLOOR = 0.15, 0.3, 0.05
OUTLINE_LEVEL = 0.1  # a silhouette pixel differs from the background by this share of the image's largest difference


def check_detector(prior_info: dict, prior_dir) -> None:
    """A sketch prior reads sketches of the detector that drew its training pairs: refuse another."""
    from vq.pipeline.runs import VQError

    version = (prior_info.get("sketch") or {}).get("detector")
    if version != SKETCH_DETECTOR:
        raise VQError(f"{prior_dir} was trained on sketches of edge detector {version}, and this vq draws them with "
                      f"detector {SKETCH_DETECTOR}; retrain it with `vq fit-prior --condition sketch`")


class ClassBox(NamedTuple):
    """How a drawing given with a class is framed: the class's typical longer side (a share of the
    image's side) and the range of its objects' aspects (width over height) it is brought into."""

    side: float
    aspect_low: float
    aspect_high: float


def drawing_box(prior_info: dict, label: int | None = None) -> float | ClassBox | None:
    """The box a sketch prior's drawings are framed to: given a class, that class's `ClassBox` when
    the export measured it; else its export's typical object size (None for priors trained before
    exports measured it: their drawings are only padded to a square)."""
    sketch = prior_info.get("sketch") or {}
    boxes = sketch.get("class_boxes") or []
    if label is not None and 0 <= label < len(boxes) and boxes[label]:
        return ClassBox(boxes[label]["side"], *boxes[label]["aspect"])
    return sketch.get("box")


def as_drawing(lines: torch.Tensor) -> torch.Tensor:
    """(b, 1, S, S) lines of drawings -> (b, 2, S, S): the lines and the drawing flag, a plane of
    ones (`PriorConfig.drawing_flag`): a flagged free-styles prior reads them as a hand's drawing,
    not as an exact edge map; every other sketch prior reads the lines alone."""
    return torch.cat([lines, torch.ones_like(lines)], 1)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(b, c, H, W) in [-1, 1] -> (b, 1, H, W) luminance in [0, 1] (ITU-R 601 weights)."""
    x = (images.float() + 1) / 2
    if x.shape[1] == 3:
        x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return x.clamp(0, 1)


def _conv(x: torch.Tensor, kernel: list[list[float]]) -> torch.Tensor:
    k = torch.tensor(kernel, dtype=x.dtype, device=x.device)[None, None]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)


# Zhang & Suen's neighbours P2..P9, clockwise from north: N, NE, E, SE, S, SW, W, NW.
_AROUND = [(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)]


def _neighbours(x: torch.Tensor) -> list[torch.Tensor]:
    """(b, 1, H, W) -> the 8 maps (b, 1, H, W) of each pixel's neighbours P2..P9 (`_AROUND`),
    zero beyond the border."""
    p = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    return [p[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in _AROUND]


def _thinning_tables() -> torch.Tensor:
    """(2, 256) bool: whether Zhang & Suen's sub-iteration 0 / 1 removes a line pixel whose
    neighbours P2..P9 (clockwise from north) are the bits 0..7 of the index."""
    table = torch.zeros(2, 256, dtype=torch.bool)
    for code in range(256):
        p = [(code >> i) & 1 for i in range(8)]
        p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
        transitions = sum(p[i] == 0 and p[(i + 1) % 8] == 1 for i in range(8))
        core = 2 <= sum(p) <= 6 and transitions == 1
        table[0, code] = core and p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
        table[1, code] = core and p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
    return table


_THINNING = _thinning_tables()


def _code_kernel() -> torch.Tensor:
    """(1, 1, 3, 3) float: 2**i at the place of neighbour P(i+2) (`_AROUND`), 0 at the centre."""
    k = torch.zeros(1, 1, 3, 3)
    for bit, (dy, dx) in enumerate(_AROUND):
        k[0, 0, 1 + dy, 1 + dx] = 2.0**bit
    return k


_CODE_KERNEL = _code_kernel()


def _code(x: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) uint8 0/1 -> int64 byte of each pixel's neighbours, bit i = P(i+2), zero beyond
    the border: one convolution with the powers of two (exact in float32: sums of distinct powers up to 255)."""
    return F.conv2d(x.float(), _CODE_KERNEL.to(x.device), padding=1).long()


def max3(x: torch.Tensor, fill: float = 0) -> torch.Tensor:
    """(b, 1, H, W) -> the maximum over each pixel's 3x3 neighbourhood, `fill` beyond the border:
    two passes of three shifted slices (on a CPU, 10x faster than a stride-1 max_pool2d)."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 0, 0), value=fill)
    rows = p[..., :, 0:w].maximum(p[..., :, 1 : 1 + w]).maximum(p[..., :, 2 : 2 + w])
    q = F.pad(rows, (0, 0, 1, 1), value=fill)
    return q[..., 0:h, :].maximum(q[..., 1 : 1 + h, :]).maximum(q[..., 2 : 2 + h, :])


def dilate(x: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) bool -> bool, grown by one pixel in the 8 directions."""
    return max3(x.to(torch.uint8)) > 0


def thin(mask: torch.Tensor) -> torch.Tensor:
    """Zhang & Suen thinning (1984): (b, 1, H, W) bool -> bool lines one pixel wide with the
    same connectivity. Each sub-iteration is a table look-up of the 8 neighbours as a byte, on
    the images still changing."""
    x = mask.to(torch.uint8).clone()
    active = torch.arange(x.shape[0], device=x.device)
    tables = _THINNING.to(x.device)
    while active.numel():
        part = x[active]
        changed = torch.zeros(active.numel(), dtype=torch.bool, device=x.device)
        for sub in (0, 1):
            remove = tables[sub][_code(part)] & (part > 0)
            part = part.masked_fill(remove, 0)
            changed |= remove.flatten(1).any(1)
        x[active] = part
        active = active[changed]
    return x.bool()


@torch.no_grad()
def edge_map(images: torch.Tensor) -> torch.Tensor:
    """(b, c, H, W) images in [-1, 1] -> (b, 1, H, W) bool edge maps (the detector above)."""
    x = luminance(images.cpu())
    x = _conv(x, [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]])
    gx = _conv(x, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 4
    gy = _conv(x, [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]) / 4
    mag = torch.sqrt(gx**2 + gy**2)
    # Non-maximum suppression: compare with both neighbours across the edge (the gradient's
    # direction, rounded to 0, 45, 90 or 135 degrees).
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180
    sector = (((angle + 22.5) // 45) % 4).long()
    n = _neighbours(mag)  # N, NE, E, SE, S, SW, W, NW
    pairs = torch.stack([
        torch.maximum(n[2], n[6]),  # 0 deg gradient (along x): E and W
        torch.maximum(n[3], n[7]),  # 45 deg (y grows downwards): SE and NW
        torch.maximum(n[0], n[4]),  # 90 deg: N and S
        torch.maximum(n[1], n[5]),  # 135 deg: NE and SW
    ]).gather(0, sector[None]).squeeze(0)
    peak = mag * (mag >= pairs)
    top = peak.amax(dim=(-2, -1), keepdim=True)
    weak = (peak >= LOW * top) & (peak >= FLOOR)
    strong = (peak >= HIGH * top) & (peak >= FLOOR)
    active = torch.arange(strong.shape[0])
    while active.numel():  # hysteresis: grow the strong lines through weak 8-neighbours
        grown = weak[active] & dilate(strong[active])
        changed = (grown != strong[active]).flatten(1).any(1)
        strong[active] = grown
        active = active[changed]
    return thin(strong)


def _dilate4(x: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) bool -> bool, grown by one pixel up, down, left and right."""
    p = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    return x | p[..., :h, 1 : 1 + w] | p[..., 2:, 1 : 1 + w] | p[..., 1 : 1 + h, :w] | p[..., 1 : 1 + h, 2:]


def _erode(x: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) bool -> bool, shrunk by one pixel in the 8 directions; beyond the border is
    background, so a shape touching the border keeps a boundary there."""
    return ~(max3((~x).to(torch.uint8), fill=1) > 0)


def fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) bool -> bool: the mask plus every region of its complement that does not reach
    the border (grown from the border through 4-neighbours of the complement: an 8-connected line,
    diagonal steps included, encloses what is inside it)."""
    free = ~mask
    edge = torch.zeros_like(mask)
    edge[..., 0, :] = edge[..., -1, :] = True
    edge[..., :, 0] = edge[..., :, -1] = True
    outside = free & edge
    active = torch.arange(mask.shape[0], device=mask.device)
    while active.numel():  # only the images still growing
        grown = free[active] & _dilate4(outside[active])
        changed = (grown != outside[active]).flatten(1).any(1)
        outside[active] = grown
        active = active[changed]
    return ~outside


def border_median(x: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (...): the median of each image's border pixels, its background."""
    return torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1).median(dim=-1).values


def silhouette(images: torch.Tensor) -> torch.Tensor:
    """(b, c, H, W) images in [-1, 1] -> (b, 1, H, W) bool: the pixels that stand out from the
    image's background (its border's median), holes filled (`outline_map` says how)."""
    x = luminance(images.cpu())
    diff = (x - border_median(x)[..., None, None]).abs()
    level = (OUTLINE_LEVEL * diff.amax(dim=(-2, -1), keepdim=True)).clamp(min=FLOOR)
    return fill_holes(diff > level)


@torch.no_grad()
def outline_map(images: torch.Tensor) -> torch.Tensor:
    """(b, c, H, W) images in [-1, 1] -> (b, 1, H, W) bool: the one-pixel boundary of each image's
    silhouette (no inner lines)."""
    shape = silhouette(images)
    return thin(shape & ~_erode(shape))


def components(lines: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) bool -> (b, 1, H, W) int64: each 8-connected component of the lines labelled by
    its largest pixel index + 1 (labels spread through the lines until they settle); 0 off the lines."""
    b, _, h, w = lines.shape
    index = torch.arange(1, h * w + 1, dtype=torch.float32, device=lines.device).view(1, 1, h, w)
    label = torch.where(lines, index.expand(b, 1, h, w), torch.zeros(()))
    while True:
        grown = torch.where(lines, max3(label), label)
        if torch.equal(grown, label):
            return label.long()
        label = grown


def component_sizes(labels: torch.Tensor) -> torch.Tensor:
    """`components`' labels -> (b, 1, H, W) int64: the pixel count of each pixel's component (0 off the lines)."""
    b = labels.shape[0]
    flat = labels.flatten(1)
    counts = torch.zeros(b, flat.shape[1] + 1, dtype=torch.int64, device=labels.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    counts[:, 0] = 0
    return counts.gather(1, flat).view_as(labels)


def box_extents(outlines: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(b, 1, H, W) bool outlines -> each one's bounding box height and width as shares of the
    image's side, and which outlines are not empty (the extents of empty ones are meaningless)."""
    rows, cols = outlines.any(-1)[:, 0], outlines.any(-2)[:, 0]

    def extent(hit: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(hit.shape[1])
        return torch.where(hit, idx, -1).amax(1) - torch.where(hit, idx, hit.shape[1]).amin(1) + 1

    return extent(rows).float() / outlines.shape[-2], extent(cols).float() / outlines.shape[-1], rows.any(1)


def object_box(outlines: torch.Tensor) -> float:
    """(b, 1, H, W) bool outlines -> the median of their bounding boxes' longer side, as a share of
    the image's side: how large the dataset's objects are (`normalise_drawing` frames drawings to it)."""
    h, w, keep = box_extents(outlines)
    if not keep.any():
        return 1.0
    return round(float(torch.maximum(h, w)[keep].median()), 3)


ASPECT_QUANTILES = (0.25, 0.75)  # a drawing given with its class is brought within these quantiles of the class's aspects


def class_boxes(outlines: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[dict | None]:
    """(b, 1, H, W) bool outlines and their (b,) labels -> per class its objects' typical longer
    side (median, a share of the side) and the middle of their aspects (width over height, at
    `ASPECT_QUANTILES`); None for a class with no outline. Fashion-MNIST's trousers are 0.39-0.43
    as wide as tall, its sneakers 1.9-2.5."""
    h, w, keep = box_extents(outlines)
    boxes = []
    for k in range(num_classes):
        mine = keep & (labels == k)
        if not mine.any():
            boxes.append(None)
            continue
        aspect = w[mine] / h[mine]
        boxes.append({"side": round(float(torch.maximum(h, w)[mine].median()), 3),
                      "aspect": [round(float(aspect.quantile(q)), 3) for q in ASPECT_QUANTILES]})
    return boxes


MAX_SIDE_PER_CELL = 16  # a drawing is thinned at most 16 x the model's size (larger ones are max-pooled first)


def load_drawing(path, size: int, box: float | ClassBox | None = None) -> tuple[torch.Tensor, str]:
    """A drawing file (or a Pillow image) -> ((1, 1, size, size) bool lines, a note on the
    conversion), framed to `box` when given (`normalise_drawing`); a file that cannot be read, or
    holds no lines, -> a one-line VQError naming it."""
    from PIL import Image, ImageOps

    from vq.pipeline.data import decode, deep_to_uint8, has_alpha, is_deep, open_image, reading
    from vq.pipeline.runs import VQError

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


def edge_f1(pred: torch.Tensor, target: torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """(b, 1, H, W) bool edge maps -> (b,) F1 with a tolerance of `tolerance` pixels. Two empty
    maps agree (1); one empty map against edges scores 0."""
    k = 2 * tolerance + 1
    near_target = F.max_pool2d(target.float(), k, 1, tolerance) > 0
    near_pred = F.max_pool2d(pred.float(), k, 1, tolerance) > 0
    p_hits, p_all = (pred & near_target).flatten(1).sum(1).float(), pred.flatten(1).sum(1).float()
    t_hits, t_all = (target & near_pred).flatten(1).sum(1).float(), target.flatten(1).sum(1).float()
    precision = torch.where(p_all > 0, p_hits / p_all.clamp(min=1), (t_all == 0).float())
    recall = torch.where(t_all > 0, t_hits / t_all.clamp(min=1), (p_all == 0).float())
    return torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                       torch.zeros_like(precision))
