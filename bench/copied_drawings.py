"""A second set of drawings, made differently from `bench/drawings.py` (issue 33): not from shape
templates, but copied by eye from photographs, the way someone draws an object that lies in
front of them. It is for measuring only: never trained on, never used to choose a threshold or a
recipe (`bench/sketch_styles.py --drawings` reads it like any set).

For each class, 5 Fashion-MNIST test images (seeded, from the second half of the test split, so
none is among the first 1,000 whose exact outlines `bench/sketch_styles.py` reads as the ceiling):

1. the object's silhouette, at 8x: the image enlarged smoothly, every pixel clearly brighter than
   the border (the background) kept, holes filled, the largest piece kept;
2. its boundary traced as one closed path, then simplified to the few straight runs a hand draws
   (Ramer-Douglas-Peucker, a tolerance of 2-5% of the object's size);
3. copied by eye: the whole stretched in one direction (aspect x 0.8-1.25), each corner moved a
   little (2% of the size), the corners rounded (Chaikin's cutting, once or twice);
4. drawn in pencil: grey strokes 2-6 px wide on off-white paper with a little grain, each path
   drawn twice now and then, slightly apart (a sketchy double line), the pen sometimes lifting
   before the path closes; on a 256-512 px canvas, the object 50-90% of it, anywhere; saved as
   a JPEG, as a phone or a scanner would.

    python bench/copied_drawings.py [--out bench/drawings-copied] [--seed 0]

writes `<class slug>-<k>.jpg` for k = 1..5; the same seed always gives the same files.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from drawings import slug  # bench/drawings.py: the file names both sets share

PER_CLASS = 5
UP = 8  # the silhouette is traced at 8x the image's side
# Moore neighbourhood, clockwise from west (y down): the tracer's search order.
AROUND = [(0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1)]


def silhouette(image: np.ndarray) -> np.ndarray:
    """(28, 28) uint8 -> (28 UP, 28 UP) bool: the object, enlarged, filled, its largest piece."""
    x = ndimage.zoom(image.astype(np.float32) / 255, UP, order=3)
    x = ndimage.gaussian_filter(x, UP / 4)
    border = np.median(np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]]))
    mask = ndimage.binary_fill_holes(x - border > 0.12 * max(float(x.max() - border), 1e-6))
    labels, n = ndimage.label(mask)
    if n > 1:
        mask = labels == 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, n + 1))))
    return mask


def trace(mask: np.ndarray) -> np.ndarray:
    """The outer boundary of a bool mask as a closed path of (x, y) pixel centres (Moore tracing)."""
    m = np.pad(mask, 1)
    ys, xs = np.nonzero(m)
    start = (ys[0], xs[0])  # the first pixel in raster order: its west neighbour is background
    path, here, came = [start], start, 0  # came: where the search starts, as an index into AROUND
    for _ in range(4 * m.size):
        for i in range(8):
            k = (came + i) % 8
            y, x = here[0] + AROUND[k][0], here[1] + AROUND[k][1]
            if m[y, x]:
                here, came = (y, x), (k + 5) % 8  # next search starts beside the background we passed
                break
        else:
            break  # a single pixel
        if here == start:
            break
        path.append(here)
    return np.array([(x - 1, y - 1) for y, x in path], dtype=float)


def simplify(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Ramer-Douglas-Peucker on an open path: the fewest points within `tolerance` of it."""
    if len(points) < 3:
        return points
    a, b = points[0], points[-1]
    d = b - a
    norm = np.hypot(*d)
    rel = points - a
    dist = np.abs(d[0] * rel[:, 1] - d[1] * rel[:, 0]) / norm if norm > 0 else np.hypot(*rel.T)
    i = int(np.argmax(dist))
    if dist[i] <= tolerance:
        return np.array([a, b])
    return np.concatenate([simplify(points[: i + 1], tolerance)[:-1], simplify(points[i:], tolerance)])


def chaikin(points: np.ndarray, rounds: int) -> np.ndarray:
    """A closed polygon with its corners cut `rounds` times (each edge keeps its middle half)."""
    for _ in range(rounds):
        nxt = np.roll(points, -1, axis=0)
        points = np.stack([0.75 * points + 0.25 * nxt, 0.25 * points + 0.75 * nxt], 1).reshape(-1, 2)
    return points


def copied(image: np.ndarray, rng) -> np.ndarray:
    """A test image -> its outline as a hand copies it: a closed path in units of the object's size."""
    path = trace(silhouette(image))
    size = float(np.ptp(path, axis=0).max())
    closed = np.concatenate([path, path[:1]])
    poly = simplify(closed, rng.uniform(0.02, 0.05) * size)[:-1]
    poly = (poly - poly.mean(0)) / size
    stretch = rng.uniform(0.8, 1.25)
    poly = poly * np.array([stretch, 1 / stretch]) + rng.normal(0, 0.02, poly.shape)
    return chaikin(poly, int(rng.integers(1, 3)))


def pencil(path: np.ndarray, rng) -> Image.Image:
    """A closed path (object units, centred) drawn in pencil on a page of its own."""
    w, h = (int(v) for v in rng.integers(256, 513, 2))
    scale = rng.uniform(0.5, 0.9) * min(w, h) / float(np.ptp(path, axis=0).max())
    pts = path * scale
    span = np.ptp(pts, axis=0)
    centre = np.array([rng.uniform(span[0] / 2, w - span[0] / 2), rng.uniform(span[1] / 2, h - span[1] / 2)])
    pts = pts - (pts.min(0) + pts.max(0)) / 2 + centre
    paper = rng.integers(228, 250)
    page = np.clip(paper + rng.normal(0, 4, (h, w)), 0, 255).astype(np.uint8)
    img = Image.fromarray(page, "L")
    pen = ImageDraw.Draw(img)
    ink, width = int(rng.integers(40, 120)), int(rng.integers(2, 7))
    strokes = 2 if rng.random() < 0.4 else 1
    for s in range(strokes):
        offset = rng.normal(0, 0.008 * min(w, h), 2) if s else np.zeros(2)
        line = np.concatenate([pts, pts[:1]]) + offset
        if rng.random() < 0.3:  # the pen lifts before the path closes
            line = line[: max(2, int(len(line) * rng.uniform(0.9, 0.97)))]
        pen.line([tuple(p) for p in line], fill=ink, width=width, joint="curve")
    return img


def main() -> None:
    from vq.pipeline.data.sources import load_data
    from vq.pipeline.records import DataOptions

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench/drawings-copied"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    data = load_data(DataOptions("fashion-mnist"))
    images, labels = data.test.images.numpy(), np.asarray(data.test.labels)
    n = len(labels)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for c, name in enumerate(data.class_names):
        pool = np.nonzero(labels[n // 2 :] == c)[0] + n // 2
        for k, i in enumerate(rng.choice(pool, PER_CLASS, replace=False), 1):
            image = images[int(i)].reshape(28, 28)
            pencil(copied(image, rng), rng).save(args.out / f"{slug(name)}-{k}.jpg", quality=85)
    print(f"{PER_CLASS * len(data.class_names)} drawings in {args.out}")


if __name__ == "__main__":
    main()
