"""Sketches like people's, drawn afresh for every training row: a sketch prior that learned from
the edge detector's maps alone follows edge maps, not what people draw (an outline, drawn once,
wobbly, with its own proportions, often without the inner lines, sometimes with a gap where the
pen lifted). From each image's two exported maps (`pipeline.sketch`: the detector's edges and the
silhouette's outline), `free_hand` makes per row, at random:

1. a style: the edges as they are (`P_EDGES`), the outline alone (`P_OUTLINE`), or a simplified
   sketch: the outline with each inner line (an edge component off the outline) kept with
   probability `KEEP_INNER`, short segments (`SHORT` pixels or fewer) removed;
2. a deformation (probability `P_DEFORM`): a random affine map (scale, aspect, shift, rotation,
   shear: the drawing's own proportions and placement) and a smooth elastic warp (the hand's
   wobble), applied to the lines grown by a pixel, then thinned again to one pixel;
3. stroke noise (probability `P_BREAK`): a gap where the pen lifted, a 2x2 hole in one line.

Every result is one-pixel lines on the image's grid, like the detector's; a row that would come
out empty keeps its undeformed style.

A prior's recogniser (`stage2_prior.conditions.SketchRecogniser`) trains on `recogniser_sketches`:
a `free_hand` sketch of every row, its proportions stretched by up to `STRETCH` either way (people
draw trousers twice as wide as Fashion-MNIST's, T-shirts half again as wide), then framed as a
drawing is read (`reframe`: its lines' box centred, the longer side the dataset's object size), so
it learns to tell a class by what is drawn more than by the drawing's proportions.

A prior with the drawing flag (`PriorConfig.drawing_flag`) trains on `training_sketches`: a
share `P_EXACT` of the rows keeps the exact edge map with the flag 0, the rest are `free_hand`
sketches with the flag 1, so the prior learns both to follow an edge map exactly and to read a
drawing loosely, and is told at sampling time which one it is given. Everything is batched tensor work on the batch's device
and draws from torch's global generator (or `generator`), so a resumed run draws as it would
have. Shape legend: b - batch, S - the sketch's side."""

import math

import torch
import torch.nn.functional as F

from vq.pipeline.sketch.edges import component_sizes, components, dilate, thin

STYLES = ("edges", "outline", "simplified")
P_EDGES, P_OUTLINE = 0.3, 0.3  # the rest: simplified
KEEP_INNER = 0.4  # an inner line survives simplification with this probability
SHORT = 3  # segments of this many pixels or fewer are dropped from a simplified sketch
# Measured (README, "Free-hand drawings", flagged priors at the demo preset of the time: dim 192,
# 800 steps): these middle deformations keep the edge maps' F1 within 2 points of an edge-map
# prior's and follow drawings nearly as closely as ranges half as large (inside 0.90), with more
# samples of the drawn class when it is given (0.73 against 0.66); ranges a third larger, at
# P_DEFORM 0.8, cost edge F1.
P_DEFORM, P_BREAK = 0.65, 0.3
P_EXACT = 0.6  # a flagged prior's rows that keep the exact edge map (flag 0)
SCALE, ASPECT, SHIFT, ROTATE, SHEAR = 0.1125, 0.1125, 0.06, math.radians(6), 0.075  # affine ranges (shift: of the half-side)
WARP, WARP_GRID = 0.03, 4  # elastic displacement (of the half-side) on a coarse grid, smoothly upsampled
# The recogniser's sketches: width over height changed by a factor drawn log-uniformly within
# [1 / STRETCH, STRETCH]. Measured (README, "Drawings against exact outlines", on exact test
# outlines and the template drawings): 1.25 recognised both better than 1.5, and 1.5 than 2 (which
# blurs the classes' proportions).
STRETCH = 1.25


def uniform(shape, lo: float, hi: float, device, generator=None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, device=device, generator=generator)


def simplified(edges: torch.Tensor, outline: torch.Tensor, generator=None) -> torch.Tensor:
    """(b, 1, S, S) bool maps -> the outline plus a random share of the inner lines (edge
    components off the outline, each kept with probability `KEEP_INNER` when longer than `SHORT`)."""
    inner = edges & ~dilate(outline)
    labels = components(inner)
    b, _, s, _ = labels.shape
    keep = torch.rand(b, s * s + 1, device=edges.device, generator=generator) < KEEP_INNER  # one draw per label
    kept = inner & keep.gather(1, labels.flatten(1)).view_as(inner) & (component_sizes(labels) > SHORT)
    return thin(outline | kept)  # the union of two thin maps can hold a corner thinning would take


def on_rows(fn, chosen: torch.Tensor, lines: torch.Tensor, *args) -> torch.Tensor:
    """`lines` with `fn(lines[rows], *args[rows])` on the rows where `chosen` (b,) holds: the
    costly styles are drawn only for the rows that use them."""
    rows = chosen.nonzero().flatten()
    if not rows.numel():
        return lines
    out = lines.clone()
    out[rows] = fn(*(a[rows] for a in (lines, *args)))
    return out


def random_grids(b: int, s: int, device, generator=None) -> torch.Tensor:
    """(b, S, S, 2) sampling grids for `grid_sample`: a random affine map of the square plus a smooth
    elastic displacement (a coarse random field, bicubically upsampled)."""
    r = lambda lo, hi: uniform((b,), lo, hi, device, generator)  # noqa: E731
    scale = 1 + r(-SCALE, SCALE)
    aspect = 1 + r(-ASPECT, ASPECT)
    angle, shear = r(-ROTATE, ROTATE), r(-SHEAR, SHEAR)
    sx, sy = scale * aspect, scale / aspect
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos / sx, (-sin + shear) / sx, r(-SHIFT, SHIFT)], -1),
                         torch.stack([sin / sy, cos / sy, r(-SHIFT, SHIFT)], -1)], 1)  # output -> input
    grid = F.affine_grid(theta, (b, 1, s, s), align_corners=False)
    field = uniform((b, 2, WARP_GRID, WARP_GRID), -WARP, WARP, device, generator)
    return grid + F.interpolate(field, size=(s, s), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)


def deform(lines: torch.Tensor, generator=None) -> torch.Tensor:
    """(b, 1, S, S) bool lines -> the same lines moved by `random_grids`: grown a pixel (so a warp
    cannot break them), resampled, thresholded and thinned back to one pixel."""
    b, _, s, _ = lines.shape
    thick = dilate(lines).float()
    moved = F.grid_sample(thick, random_grids(b, s, lines.device, generator), mode="bilinear",
                          padding_mode="zeros", align_corners=False)
    return thin(moved > 0.5)


def break_stroke(lines: torch.Tensor, generator=None) -> torch.Tensor:
    """(b, 1, S, S) bool -> the lines with a 2x2 hole at one of their pixels, drawn at random."""
    weights = lines.flatten(1).float() + 1e-12  # empty rows pick any pixel: there is nothing to break
    at = torch.multinomial(weights, 1, generator=generator)  # (b, 1)
    hole = torch.zeros_like(weights).scatter_(1, at, 1.0).view_as(lines.float())
    hole = F.max_pool2d(F.pad(hole, (0, 1, 0, 1)), 2, 1) > 0
    return thin(lines & ~hole)  # a cut can leave a pixel that thinning would take


def free_hand(edges: torch.Tensor, outline: torch.Tensor, generator=None) -> torch.Tensor:
    """(b, 1, S, S) bool edge maps and outlines -> (b, 1, S, S) bool sketches in random free-hand
    styles (the module's docstring says which and how often); never an empty row where the style was not."""
    b, device = edges.shape[0], edges.device
    u = torch.rand(b, device=device, generator=generator)
    styled = torch.where((u < P_EDGES).view(b, 1, 1, 1), edges, outline)
    styled = on_rows(lambda o, e: simplified(e, o, generator), u >= P_EDGES + P_OUTLINE, styled, edges)
    out = on_rows(lambda x: deform(x, generator), torch.rand(b, device=device, generator=generator) < P_DEFORM, styled)
    out = on_rows(lambda x: break_stroke(x, generator), torch.rand(b, device=device, generator=generator) < P_BREAK, out)
    empty = ~out.flatten(1).any(1).view(b, 1, 1, 1)
    return torch.where(empty, styled, out)


def training_sketches(edges: torch.Tensor, outline: torch.Tensor, flagged: bool, generator=None) -> torch.Tensor:
    """(b, 1, S, S) bool edge maps and outlines -> what a free-styles prior trains on: without the
    drawing flag, `free_hand` sketches (b, 1, S, S); with it (b, 2, S, S): per row, with probability
    `P_EXACT` the edge map and the flag 0, else a `free_hand` sketch and the flag 1."""
    if not flagged:
        return free_hand(edges, outline, generator)
    b = edges.shape[0]
    drawn = torch.rand(b, device=edges.device, generator=generator) >= P_EXACT
    lines = on_rows(lambda e, o: free_hand(e, o, generator), drawn, edges, outline)
    return torch.cat([lines, drawn.view(b, 1, 1, 1).expand_as(lines)], 1)


def reframe(lines: torch.Tensor, stretch: torch.Tensor, box: float | None) -> torch.Tensor:
    """(b, 1, S, S) bool lines and (b,) factors -> the lines with their width over height
    multiplied by the factor, their bounding box centred and its longer side made `box` of the
    side (None: as long as it was), as `sketch.drawings.frame` frames a drawing before it is
    reduced to the model's size; here in one resampling on the grid: the lines grown a pixel,
    resampled, thresholded and thinned back to one pixel. An empty row stays empty, and a row of a
    pixel or two can come out empty (`recogniser_sketches` keeps those as they were)."""
    b, _, s, _ = lines.shape
    index = torch.arange(s, device=lines.device, dtype=torch.float32)

    def extent(on: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (b, S) bool -> first, last + 1
        first = torch.where(on, index, torch.full_like(index, s)).amin(1)
        return first, torch.where(on, index + 1, torch.zeros_like(index)).amax(1)

    y0, y1 = extent(lines.any(3).flatten(1))
    x0, x1 = extent(lines.any(2).flatten(1))
    h, w = (y1 - y0).clamp(min=1), (x1 - x0).clamp(min=1)
    wide, high = w * stretch.sqrt(), h / stretch.sqrt()
    longer = torch.maximum(wide, high)
    scale = (box * s if box is not None else torch.maximum(w, h)) / longer
    theta = torch.zeros(b, 2, 3, device=lines.device)  # output -> input, in [-1, 1] coordinates
    theta[:, 0, 0], theta[:, 0, 2] = w / (wide * scale), (x0 + x1) / s - 1
    theta[:, 1, 1], theta[:, 1, 2] = h / (high * scale), (y0 + y1) / s - 1
    grid = F.affine_grid(theta, (b, 1, s, s), align_corners=False)
    moved = F.grid_sample(dilate(lines).float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return thin(moved > 0.5)


def recogniser_sketches(edges: torch.Tensor, outline: torch.Tensor, box: float | None, generator=None) -> torch.Tensor:
    """(b, 1, S, S) bool edge maps and outlines -> (b, 1, S, S) bool: what a prior's recogniser
    trains on (the module's docstring says how they are made); a row that would come out empty
    keeps its free-hand sketch."""
    drawn = free_hand(edges, outline, generator)
    b = drawn.shape[0]
    stretch = torch.exp(uniform((b,), -math.log(STRETCH), math.log(STRETCH), drawn.device, generator))
    out = reframe(drawn, stretch, box)
    return torch.where(out.flatten(1).any(1).view(b, 1, 1, 1), out, drawn)
