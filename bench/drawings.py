"""Free-hand drawings of the 10 Fashion-MNIST classes, to measure a sketch-conditioned prior on
sketches drawn the way people draw them (issue 21) rather than the edge detector's maps.

Each drawing is an outline drawn once, now and then with one or two inner lines (a trouser fly,
a bag's handle, a collar and button line, a sneaker's sole line), never every seam: dark strokes
on white paper (a few on a transparent background, strokes opaque), on canvases of 200-600 px,
some not square. Proportions, position, size and a small rotation vary; the pen wobbles (smooth
low-frequency noise along the stroke), is thin (2-3 px) to thick (15-25 px on a 500 px canvas),
sometimes lifts (a small gap in the outline) or overshoots where the outline closes.

The set is for measuring only: it is never used for training or for tuning thresholds.

    python bench/drawings.py [--out bench/drawings] [--seed 0]

writes `<class slug>-<k>.png` for k = 1..5 (e.g. `t-shirt-top-1.png`, `ankle-boot-3.png`); the
same seed always gives the same files. Layout: shape templates (one function per class, outline
points in their own units with proportions drawn from the seeded generator), then the pen (vertex
jitter, wobble, gaps, overshoot), then the page (canvas, pen width, placement, rendering).
"""

import argparse
import math
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
PER_CLASS = 5

# A stroke: (points (n, 2) in template units, x right and y down; closed: the pen returns to the start).
Stroke = tuple[np.ndarray, bool]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ---------------------------------------------------------------- shape helpers


def arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 8) -> list:
    """Points on an ellipse from angle a0 to a1 (degrees; y down, so 90 is straight down)."""
    t = np.radians(np.linspace(a0, a1, n))
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


def symmetric(left: list) -> np.ndarray:
    """A closed outline symmetric about x = 0 from its left half, listed from the top centre
    (x = 0) round to the bottom centre or the last point before it."""
    right = [(-x, y) for x, y in reversed(left) if abs(x) > 1e-9]
    return np.array(left + right, dtype=float)


def rounded(points, closed: bool, radius) -> np.ndarray:
    """Each corner replaced by a curve starting `radius` before it (at most 40 % of each side),
    the way a quick hand rounds a corner. `radius`: one for all corners or one per point; 0
    keeps a corner sharp."""
    p = np.asarray(points, dtype=float)
    radius = np.broadcast_to(np.asarray(radius, dtype=float), len(p))
    t = np.linspace(0, 1, 4)[:, None]
    out = []
    for i, (v, r) in enumerate(zip(p, radius)):
        if r <= 0 or (not closed and i in (0, len(p) - 1)):
            out.append(v[None])
            continue
        a, b = p[i - 1], p[(i + 1) % len(p)]
        pa = v + (a - v) * min(0.4, r / (np.linalg.norm(a - v) + 1e-9))
        pb = v + (b - v) * min(0.4, r / (np.linalg.norm(b - v) + 1e-9))
        out.append((1 - t) ** 2 * pa + 2 * t * (1 - t) * v + t**2 * pb)  # a quadratic Bezier
    return np.vstack(out)


def line(*points) -> Stroke:
    return np.array(points, dtype=float), False


def outline(points, closed: bool = True) -> Stroke:
    return np.asarray(points, dtype=float), closed


def mirror_x(strokes: list[Stroke]) -> list[Stroke]:
    return [(p * [-1, 1], c) for p, c in strokes]


# ---------------------------------------------------------------- one template per class
# Each takes the generator and returns strokes, the outline first; units are arbitrary (the page
# scales the drawing's bounding box), roughly 1 = the garment's height.


def t_shirt(rng) -> list[Stroke]:
    """Body with short sleeves sticking out sideways; a round or V neck."""
    bw, h = rng.uniform(0.5, 0.72), rng.uniform(0.75, 1.0)
    sleeve, cuff, a = rng.uniform(0.18, 0.3), rng.uniform(0.13, 0.19), math.radians(rng.uniform(18, 40))
    neck, depth = rng.uniform(0.09, 0.14), rng.uniform(0.05, 0.14)
    shoulder = np.array([-bw / 2 - 0.02, 0.05])
    out = shoulder + sleeve * np.array([-math.cos(a), math.sin(a)])
    inn = out + cuff * np.array([math.sin(a), math.cos(a)])
    armpit = (-bw / 2, shoulder[1] + rng.uniform(0.2, 0.27))
    hem = (-bw / 2 - rng.uniform(-0.02, 0.04), h)
    collar = arc(0, 0, neck, depth, 90, 180, 4) if rng.random() < 0.7 else [(0, depth * 1.6)]
    return [outline(symmetric(collar + [tuple(shoulder), tuple(out), tuple(inn), armpit, hem]))]


def long_sleeved(rng, bw, h, cuff_at, neckline) -> np.ndarray:
    """Body with long sleeves hanging beside it, open from the armpit down (pullover, coat, shirt)."""
    cuff = rng.uniform(0.1, 0.15)
    spread = cuff + rng.uniform(0.1, 0.2)
    shoulder = (-bw / 2 - rng.uniform(0.0, 0.04), 0.06)
    cuff_out = (-bw / 2 - spread, cuff_at * h)
    cuff_in = (cuff_out[0] + cuff, cuff_out[1] + rng.uniform(0.0, 0.04))
    armpit = (-bw / 2, rng.uniform(0.22, 0.3))
    hem = (-bw / 2 - rng.uniform(-0.02, 0.05), h)
    return symmetric(neckline + [shoulder, cuff_out, cuff_in, armpit, hem])


def pullover(rng) -> list[Stroke]:
    """Long sleeves, round neck, sometimes a ribbed hem line."""
    bw, h = rng.uniform(0.5, 0.66), rng.uniform(0.8, 1.0)
    neck = arc(0, 0, rng.uniform(0.09, 0.13), rng.uniform(0.05, 0.1), 90, 180, 4)
    strokes = [outline(long_sleeved(rng, bw, h, rng.uniform(0.8, 0.98), neck))]
    if rng.random() < 0.3:
        y = h - rng.uniform(0.07, 0.1)
        strokes.append(line((-bw / 2, y), (bw / 2, y)))
    return strokes


def coat(rng) -> list[Stroke]:
    """A long body with long sleeves and a V opening, often a centre line down to the hem."""
    bw, h = rng.uniform(0.5, 0.68), rng.uniform(1.05, 1.35)
    v = rng.uniform(0.2, 0.35)
    neck = [(0, v), (-rng.uniform(0.1, 0.14), 0)]
    strokes = [outline(long_sleeved(rng, bw, h, rng.uniform(0.7, 0.85), neck))]
    if rng.random() < 0.7:
        strokes.append(line((0, v), (rng.uniform(-0.02, 0.02), h)))
    return strokes


def shirt(rng) -> list[Stroke]:
    """Long sleeves, a pointed collar, often a button line."""
    bw, h = rng.uniform(0.5, 0.64), rng.uniform(0.8, 1.0)
    neck, tip = rng.uniform(0.09, 0.12), rng.uniform(0.1, 0.16)
    strokes = [outline(long_sleeved(rng, bw, h, rng.uniform(0.75, 0.95), arc(0, 0, neck, 0.05, 90, 180, 3)))]
    strokes.append(line((-neck, 0), (-0.04, tip), (0, 0.05), (0.04, tip), (neck, 0)))
    if rng.random() < 0.65:
        strokes.append(line((0, 0.07), (0, h)))
    return strokes


def dress(rng) -> list[Stroke]:
    """Straps or tiny sleeves, a narrow waist, a skirt widening to the hem (narrow to wide)."""
    strap, top = rng.uniform(0.06, 0.1), rng.uniform(0.13, 0.2)
    waist_y, waist = rng.uniform(0.3, 0.45), rng.uniform(0.09, 0.15)
    hem = rng.uniform(0.22, 0.5)
    left = [(0, rng.uniform(0.06, 0.14)), (-strap, 0), (-strap - 0.05, 0)]
    if rng.random() < 0.35:  # a tiny cap sleeve
        left += [(-top - 0.06, 0.06), (-top - 0.02, 0.13)]
    left += [(-top, 0.18), (-waist, waist_y), (-(waist + hem) / 2 - 0.02, (waist_y + 1) / 2), (-hem, 1.0)]
    left += [(-hem / 2, 1.0 + rng.uniform(0.0, 0.04))]
    strokes = [outline(symmetric(left))]
    if rng.random() < 0.3:
        strokes.append(line((-waist, waist_y), (waist, waist_y)))
    return strokes


def trouser(rng) -> list[Stroke]:
    """A waistband and two legs with a gap between them up to the crotch."""
    top, crotch = rng.uniform(0.2, 0.28), rng.uniform(0.25, 0.4)
    outer = top + rng.uniform(-0.02, 0.07)
    leg = rng.uniform(0.12, min(0.22, outer - 0.05))  # the legs keep a gap between them
    left = [(0, 0), (-top, 0), (-outer, 1.0), (-outer + leg, 1.0), (0, crotch)]
    strokes = [outline(symmetric(left))]
    if rng.random() < 0.45:
        strokes.append(line((-top, 0.07), (top, 0.07)))
    if rng.random() < 0.25:
        strokes.append(line((0, 0.07), (0, crotch * 0.75)))
    return strokes


def sandal(rng) -> list[Stroke]:
    """A flat sole seen from the side, sometimes on a heel, and a few open straps arching over
    the foot, the back one rising to the ankle; toe to the left."""
    t, hh = rng.uniform(0.04, 0.08), (rng.uniform(0.12, 0.22) if rng.random() < 0.35 else 0.0)
    sole = [(0, t / 2), (0.03, 0), (0.97, 0), (1.0, t)]
    sole += [(0.99, t + hh), (0.84, t + hh), (0.82, t)] if hh else [(0.97, t)]
    strokes = [outline(rounded(sole + [(0.04, t)], True, 0.02))]
    x = rng.uniform(0.06, 0.12)
    for _ in range(rng.integers(1, 3)):  # straps over the toes and the instep
        span, rise = rng.uniform(0.2, 0.3), rng.uniform(0.14, 0.26)
        strokes.append(outline(arc(x + span / 2, 0, span / 2, rise, 180, 360, 7), closed=False))
        x += span * rng.uniform(0.6, 0.9)
    back, top = rng.uniform(0.6, 0.7), rng.uniform(0.3, 0.45)  # the ankle strap: up and over to the heel
    strap = [(back, 0), (back + 0.08, -top * 0.8), (back + 0.2, -top), (0.93, -top * 0.55), (0.96, 0)]
    strokes.append(outline(rounded(strap, False, 0.06), closed=False))
    return mirror_x(strokes) if rng.random() < 0.4 else strokes


def sneaker(rng) -> list[Stroke]:
    """A low shoe: flat sole, round toe, the top rising over the laces to the ankle collar and
    dipping behind it; toe to the left."""
    H = rng.uniform(0.4, 0.52)
    throat = rng.uniform(0.52, 0.62)
    pts = [(1.0, H), (0.0, H), (0.0, H - 0.14), (0.12, H - rng.uniform(0.2, 0.26)),  # sole, toe cap
           (throat - 0.06, H * rng.uniform(0.2, 0.35)), (throat, 0.0),  # laces up to the tongue
           (throat + 0.12, H * rng.uniform(0.3, 0.42)), (0.92, 0.02), (1.0, H * 0.45)]  # collar, heel
    radius = [0.0, 0.1, 0.06, 0.05, 0.02, 0.05, 0.04, 0.04, 0.06]
    strokes = [outline(rounded(pts, True, radius))]
    if rng.random() < 0.7:
        y = H - rng.uniform(0.06, 0.1)
        strokes.append(line((0.02, y), (1.0, y)))
    if rng.random() < 0.25:
        strokes.append(line((throat - 0.2, H * 0.45), (throat - 0.1, H * 0.3)))
    return mirror_x(strokes) if rng.random() < 0.4 else strokes


def bag(rng) -> list[Stroke]:
    """A rectangle-ish body (sometimes narrower at the top) with a handle arc or a long strap;
    sometimes a second handle line or a flap line."""
    bw, taper = rng.uniform(0.55, 0.8), rng.uniform(0.72, 1.0)
    body = rounded(symmetric([(0, 0), (-bw * taper, 0), (-bw, 1.0)]), True, rng.uniform(0.05, 0.2))
    strokes = [outline(body)]
    hw = bw * taper * rng.uniform(0.4, 0.7)
    rise = rng.uniform(0.3, 0.55) if rng.random() < 0.8 else rng.uniform(0.7, 1.0)  # handle or strap
    strokes.append(outline(arc(0, 0, hw, rise, 180, 360, 9), closed=False))
    if rng.random() < 0.25:
        strokes.append(outline(arc(0, 0, hw * 0.75, rise * 0.7, 180, 360, 9), closed=False))
    elif rng.random() < 0.3:
        y, x = rng.uniform(0.25, 0.4), bw * taper
        strokes.append(outline([(-x, 0.03), (-x * 0.5, y), (x * 0.5, y), (x, 0.03)], closed=False))
    return strokes


def ankle_boot(rng) -> list[Stroke]:
    """A shoe with a shaft rising straight up to the ankle, often on a heel; toe to the left."""
    H, shaft = rng.uniform(0.85, 1.15), rng.uniform(0.4, 0.52)
    hh = rng.uniform(0.07, 0.14) if rng.random() < 0.7 else 0.0
    ankle = H - rng.uniform(0.4, 0.5)
    pts = [(1.0, H), (0.78, H)] + ([(0.76, H - hh), (0.5, H - hh * 0.7)] if hh else [])
    pts += [(0.04, H), (0.0, H - 0.16), (0.22, ankle + rng.uniform(0.12, 0.2)),  # sole, toe, instep
            (1 - shaft, ankle), (1 - shaft + rng.uniform(-0.03, 0.03), 0.0),  # up the front of the shaft
            (rng.uniform(0.93, 0.98), rng.uniform(-0.03, 0.03)), (1.0, H * 0.6)]  # its top and back
    strokes = [outline(rounded(pts, True, 0.04))]
    if rng.random() < 0.4:
        y = H - (hh + 0.04 if hh else 0.06)
        strokes.append(line((0.03, y), (0.77 if hh else 1.0, y)))
    return mirror_x(strokes) if rng.random() < 0.4 else strokes


TEMPLATES = {"T-shirt/top": t_shirt, "Trouser": trouser, "Pullover": pullover, "Dress": dress, "Coat": coat,
             "Sandal": sandal, "Shirt": shirt, "Sneaker": sneaker, "Bag": bag, "Ankle boot": ankle_boot}


# ---------------------------------------------------------------- the pen


def resample(points: np.ndarray, closed: bool, step: float) -> np.ndarray:
    """Dense points about `step` apart along the polyline, keeping every vertex (the corners)."""
    p = np.vstack([points, points[:1]]) if closed else points
    out = [p[:1]]
    for a, b in zip(p[:-1], p[1:]):
        n = max(1, int(math.ceil(np.linalg.norm(b - a) / step)))
        out.append(a + (b - a) * (np.arange(1, n + 1)[:, None] / n))
    return np.vstack(out)


def smooth_noise(s: np.ndarray, rng, amplitude: float, size: float) -> np.ndarray:
    """(n, 2) offsets varying slowly with arclength s: a few sines of wavelength 0.3-1.2 x size."""
    out = np.zeros((len(s), 2))
    for _ in range(3):
        wavelength = rng.uniform(0.3, 1.2) * size
        phase = rng.uniform(0, 2 * np.pi, 2)
        out += rng.normal(0, amplitude / 2, 2) * np.sin(2 * np.pi * s[:, None] / wavelength + phase)
    return out


def pen_path(stroke: Stroke, rng, size: float, shake: float, lift: bool, overshoot: bool) -> list[np.ndarray]:
    """A stroke in page pixels -> the polylines the pen actually draws: the path wobbling, a
    closed outline begun at a random vertex and, when asked, overshooting its start or broken by a
    small gap where the pen lifted."""
    points, closed = stroke
    if closed:
        points = np.roll(points, -rng.integers(len(points)), axis=0)
    dense = resample(points, closed, step=max(1.0, size / 150))
    if closed and overshoot:
        direction = dense[-1] - dense[-4]
        extra = rng.uniform(0.03, 0.08) * size
        dense = np.vstack([dense, dense[-1] + direction / (np.linalg.norm(direction) + 1e-9) * extra])
    s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    dense = dense + smooth_noise(s, rng, shake * size, size) + rng.normal(0, 0.25, dense.shape)
    if not lift:
        return [dense]
    gap = rng.uniform(0.03, 0.06) * s[-1]
    start = rng.uniform(0.1, 0.9) * (s[-1] - gap)
    return [part for part in (dense[s < start], dense[s > start + gap]) if len(part) > 1]


# ---------------------------------------------------------------- the page


def warp(strokes: list[Stroke], rng, amount: float = 0.02) -> list[Stroke]:
    """A smooth random distortion of the whole drawing (each point moved by a few long sines of
    its position, up to about `amount` x size): hand-drawn proportions, with close points moving
    together so curves and thin parts keep their shape and inner lines stay near the outline."""
    allp = np.vstack([p for p, _ in strokes])
    size = float((allp.max(0) - allp.min(0)).max())
    waves = [(rng.normal(0, 1, 2) / size, rng.uniform(0, 2 * np.pi), rng.normal(0, amount * size / 2, 2)) for _ in range(3)]
    return [(p + sum(np.sin(2 * np.pi * (p @ k) + phase)[:, None] * a for k, phase, a in waves), c) for p, c in strokes]


def rotate(strokes: list[Stroke], degrees: float) -> list[Stroke]:
    t = math.radians(degrees)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return [(p @ r.T, c) for p, c in strokes]


def canvas_size(rng) -> tuple[int, int]:
    side = int(rng.integers(200, 601))
    if rng.random() < 0.45:  # not square
        other = int(np.clip(side * rng.uniform(0.6, 1.6), 200, 600))
        return (side, other) if rng.random() < 0.5 else (other, side)
    return side, side


PEN_WIDTHS = [(2, 3), (4, 7), (8, 12), (13, 18), (18, 25)]  # px (at 500 px); one of each per class
PLACEMENTS = ["fill", "centre", "medium", "corner", "any"]  # one of each per class


def place(strokes: list[Stroke], w: int, h: int, width: int, how: str, rng) -> tuple[list[Stroke], float]:
    """Scale and move the strokes onto a w x h page -> (strokes in pixels, the drawing's size in pixels)."""
    allp = np.vstack([p for p, _ in strokes])
    lo, hi = allp.min(0), allp.max(0)
    fraction = {"fill": (0.82, 0.95), "centre": (0.55, 0.8), "medium": (0.45, 0.7), "corner": (0.3, 0.45),
                "any": (0.35, 0.9)}[how]
    margin = width + 0.04 * min(w, h)
    scale = rng.uniform(*fraction) * min((w - 2 * margin) / (hi - lo)[0], (h - 2 * margin) / (hi - lo)[1])
    extent = (hi - lo) * scale
    room = np.array([w, h]) - 2 * margin - extent
    if how == "centre":
        corner = room / 2 + rng.normal(0, 0.03, 2) * room
    elif how == "corner":
        corner = np.array([rng.choice([0.0, 0.95]), rng.choice([0.0, 0.95])]) * room + rng.uniform(0, 0.05, 2) * room
    else:
        corner = rng.uniform(0, 1, 2) * room
    offset = margin + np.clip(corner, 0, room)
    return [((p - lo) * scale + offset, c) for p, c in strokes], float(extent.max())


def draw(name: str, rng, width_range: tuple[int, int], placement: str, transparent: bool) -> Image.Image:
    """One drawing of class `name`."""
    strokes = warp(TEMPLATES[name](rng), rng)
    if rng.random() < 0.4:
        strokes = rotate(strokes, rng.uniform(-12, 12))
    w, h = canvas_size(rng)
    if width_range == PEN_WIDTHS[0]:  # a thin pen is 2-3 px on any canvas
        width = int(rng.integers(2, 4))
    else:  # the others are given at 500 px and scale with the canvas
        width = max(2, round(rng.uniform(*width_range) * min(w, h) / 500))
    strokes, size = place(strokes, w, h, width, placement, rng)
    ink = tuple(int(v) for v in rng.integers(0, 60, 3))
    if transparent:
        img = Image.new("RGBA", (w, h), (255, 255, 255, 0) if rng.random() < 0.5 else (0, 0, 0, 0))
        ink = ink + (255,)
    else:
        paper = int(rng.integers(238, 256))
        img = Image.new("RGB", (w, h), (paper, paper, paper))
    pen = ImageDraw.Draw(img)
    shake = rng.uniform(0.003, 0.01)  # a steady or a shaky hand
    for i, stroke in enumerate(strokes):
        outer = i == 0
        lift, over = outer and rng.random() < 0.3, outer and rng.random() < 0.35
        for path in pen_path(stroke, rng, size, shake, lift, over):
            xy = [tuple(q) for q in path]
            pen.line(xy, fill=ink, width=width, joint="curve")
            for x, y in xy if width > 4 else (xy[0], xy[-1]):  # a round nib: tips, and no seams in wide lines
                pen.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=ink)
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "drawings")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    plan = np.random.default_rng([args.seed, 1000])
    transparent = set(plan.choice(len(CLASSES) * PER_CLASS, 6, replace=False).tolist())
    for c, name in enumerate(CLASSES):
        widths, placements = plan.permutation(len(PEN_WIDTHS)), plan.permutation(len(PLACEMENTS))
        for k in range(PER_CLASS):
            rng = np.random.default_rng([args.seed, c, k])
            img = draw(name, rng, PEN_WIDTHS[widths[k]], PLACEMENTS[placements[k]], c * PER_CLASS + k in transparent)
            path = args.out / f"{slug(name)}-{k + 1}.png"
            img.save(path, optimize=True)
    print(f"wrote {len(CLASSES) * PER_CLASS} drawings to {args.out}")


if __name__ == "__main__":
    main()
