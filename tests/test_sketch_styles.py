"""Free-hand sketch styles: outlines of silhouettes, the styles and deformations training draws
(`pipeline.sketch_styles`), and drawings framed to the dataset's object box."""

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vq.pipeline.data.idx import fashion_mnist_dir, load_fashion_mnist_idx
from vq.pipeline.data.images import to_float
from vq.pipeline.sketch.drawings import MAX_STRETCH, as_drawing
from vq.pipeline.records import ClassBox
from vq.pipeline.sketch.boxes import class_boxes
from vq.pipeline.sketch.edges import components, component_sizes
from vq.pipeline.sketch.boxes import object_box
from vq.pipeline.sketch.drawings import normalise_drawing
from vq.pipeline.sketch.edges import edge_f1, edge_map, fill_holes, outline_map, thin
from vq.pipeline.records import SketchRecord
from vq.pipeline.sketch.styles import (STRETCH, break_stroke, deform, free_hand, recogniser_sketches, reframe, simplified,
                                      training_sketches)

needs_fashion_mnist = pytest.mark.skipif(fashion_mnist_dir() is None, reason="Fashion-MNIST idx files not installed (make test installs them)")


def shapes() -> torch.Tensor:
    """(4, 1, 28, 28) images in [-1, 1]: filled shapes on black, one touching the border, one with a hole."""
    out = []
    for draw in (lambda d: d.ellipse((4, 6, 22, 25), fill=200),
                 lambda d: d.polygon([(3, 3), (24, 5), (20, 24), (6, 20)], fill=120),
                 lambda d: d.rectangle((8, 0, 19, 27), fill=255),  # touches the top and bottom
                 lambda d: (d.ellipse((3, 3, 24, 24), fill=180), d.ellipse((10, 10, 17, 17), fill=0))):
        img = Image.new("L", (28, 28), 0)
        draw(ImageDraw.Draw(img))
        out.append(torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1))
    return torch.stack(out)[:, None]


def neighbours_on_line(lines: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) bool -> each line pixel's count of 8-neighbours on the line."""
    k = torch.ones(1, 1, 3, 3)
    k[0, 0, 1, 1] = 0
    return torch.nn.functional.conv2d(lines.float(), k, padding=1).long() * lines


def test_outlines_of_filled_shapes_are_closed_curves_around_them():
    images = shapes()
    filled = images > -0.9
    outline = outline_map(images)
    assert outline.dtype == torch.bool and outline.shape == images.shape
    assert torch.equal(thin(outline), outline)  # one pixel wide
    for i in range(len(images)):
        line = outline[i : i + 1]
        # Closed: a single component, no end points (every pixel has two neighbours on the line) ...
        labels = components(line)
        assert labels[line].unique().numel() == 1
        assert int(neighbours_on_line(line)[line].min()) >= 2
        # ... that encloses the whole shape, within a pixel (thinning may take a one-pixel spike's
        # tip), its hole included: an outline has no inner lines.
        inside = fill_holes(line)
        near = torch.nn.functional.max_pool2d(inside.float(), 3, 1, 1) > 0
        assert bool((near | ~filled[i : i + 1]).all())
        assert int(inside.sum()) > int(line.sum())
    assert not outline[3, 0, 12:16, 12:16].any()  # no line around the ring's hole


def test_components_and_their_sizes():
    lines = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    lines[0, 0, 1, 1:6] = True  # 5 pixels
    lines[0, 0, 5:8, 8] = True  # 3 pixels
    lines[0, 0, 8, 7] = True  # touches the second diagonally: 4
    labels = components(lines)
    assert labels[~lines].eq(0).all() and labels[lines].unique().numel() == 2
    sizes = component_sizes(labels)
    assert sizes[0, 0, 1, 1] == 5 and sizes[0, 0, 8, 7] == 4 and sizes[~lines].eq(0).all()


@pytest.fixture(scope="module")
def maps():
    if fashion_mnist_dir() is None:
        pytest.skip("Fashion-MNIST idx files not installed (make test installs them)")
    images = to_float(load_fashion_mnist_idx(fashion_mnist_dir()).test.images[:48])
    return edge_map(images), outline_map(images)


def assert_sketches(x: torch.Tensor, like: torch.Tensor) -> None:
    """Binary, on the grid, thinned like the detector's maps (thinning leaves them as they are)
    and never empty."""
    assert x.dtype == torch.bool and x.shape == like.shape
    assert torch.equal(thin(x), x)
    assert bool(x.flatten(1).any(1).all())


def test_every_style_keeps_a_sketch_binary_thin_on_the_grid_and_non_empty(maps):
    edges, outline = maps
    torch.manual_seed(0)
    simple = simplified(edges, outline)
    assert_sketches(simple, edges)
    assert bool((simple <= (edges | outline)).all()) and bool((simple >= outline).all())  # the outline and some inner lines
    assert int(simple.sum()) < int((edges | outline).sum())  # inner lines were dropped
    moved = deform(edges)
    assert_sketches(moved, edges)
    assert not torch.equal(moved, edges)
    assert float(edge_f1(moved, edges, tolerance=3).mean()) > 0.5  # small deformations: the lines move a little
    broken = break_stroke(edges)
    assert bool((broken <= edges).all()) and bool((broken != edges).flatten(1).any(1).all())  # one gap per row
    for seed in range(3):
        torch.manual_seed(seed)
        assert_sketches(free_hand(edges, outline), edges)


def box_of(lines: torch.Tensor) -> tuple[int, int, float, float]:
    """(1, S, S) bool -> height, width of the lines' bounding box and its centre (row, column)."""
    rows, cols = lines[0].any(1).nonzero().flatten(), lines[0].any(0).nonzero().flatten()
    return (int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1, float(rows[0] + rows[-1]) / 2, float(cols[0] + cols[-1]) / 2)


def test_reframe_stretches_a_drawing_proportions_and_frames_it_as_a_drawing_is_read():
    lines = torch.zeros(3, 1, 28, 28, dtype=torch.bool)
    lines[0, 0, 2, 3:11] = lines[0, 0, 17, 3:11] = True  # an 8 wide x 16 high rectangle, off centre
    lines[0, 0, 2:18, 3] = lines[0, 0, 2:18, 10] = True
    lines[1] = lines[0]
    out = reframe(lines, torch.tensor([1.0, 4.0, 1.0]), 0.75)
    assert torch.equal(thin(out), out) and not out[2].any()  # one-pixel lines; an empty row stays empty
    (h0, w0, y0, x0), (h1, w1, y1, x1) = box_of(out[0]), box_of(out[1])
    assert abs(h0 - 21) <= 1 and abs(w0 - 10.5) <= 1.5  # the longer side made 0.75 of 28, the aspect kept
    assert abs(w1 - 21) <= 2.5 and w1 > 1.6 * h1  # four times the aspect: now about twice as wide as high (a line
    # drawn at a pixel's centre spans one pixel less than its box when magnified 2.6x)
    assert all(abs(c - 13.5) <= 1 for c in (y0, x0, y1, x1))  # centred
    kept = reframe(lines[:1], torch.tensor([1.0]), None)
    assert abs(box_of(kept[0])[0] - 16) <= 1  # no box: the longer side as long as it was


def test_the_recogniser_trains_on_free_hand_sketches_of_other_proportions_framed_to_the_box(maps, monkeypatch):
    from vq.pipeline.sketch import styles

    edges, outline = maps
    shown = recogniser_sketches(edges, outline, 0.8, torch.Generator().manual_seed(0))
    assert_sketches(shown, edges)
    assert torch.equal(shown, recogniser_sketches(edges, outline, 0.8, torch.Generator().manual_seed(0)))
    sides = torch.tensor([float(max(h, w)) for h, w, _, _ in (box_of(x) for x in shown)])
    assert abs(float(sides.median()) - 0.8 * 28) <= 1.5  # framed as drawings are read (thinning the resampled
    assert bool(((sides > 0.7 * 0.8 * 28) & (sides < 1.1 * 0.8 * 28)).all())  # lines can take a spur at the box's end)

    def aspect_spread(stretch: float) -> float:  # the spread of log(width / height) over the rows
        monkeypatch.setattr(styles, "STRETCH", stretch)
        drawn = recogniser_sketches(edges, outline, 0.8, torch.Generator().manual_seed(0))
        return float(torch.tensor([math.log(w / h) for h, w, _, _ in (box_of(x) for x in drawn)]).std())

    assert STRETCH > 1 and aspect_spread(1.0) < aspect_spread(STRETCH) < aspect_spread(2.0)  # proportions stretched


def test_free_hand_styles_are_drawn_per_row_and_repeat_with_the_generator(maps):
    edges, outline = maps
    a = free_hand(edges, outline, torch.Generator().manual_seed(1))
    b = free_hand(edges, outline, torch.Generator().manual_seed(1))
    c = free_hand(edges, outline, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    same_as_edges = (a == edges).flatten(1).all(1)
    assert 0 < int(same_as_edges.sum()) < len(edges)  # some rows keep the edge map as it was, most do not


def test_a_flagged_prior_trains_on_exact_edge_maps_flagged_0_and_free_hand_sketches_flagged_1(maps):
    edges, outline = maps
    x = training_sketches(edges, outline, flagged=True, generator=torch.Generator().manual_seed(3))
    assert x.shape == (len(edges), 2, 28, 28) and x.dtype == torch.bool
    lines, flag = x[:, :1], x[:, 1:]
    assert_sketches(lines, edges)
    drawn = flag.flatten(1).all(1)
    assert torch.equal(flag.flatten(1).any(1), drawn)  # one flag per row, over the whole plane
    assert 0 < int(drawn.sum()) < len(edges)  # both kinds in a batch
    assert torch.equal(lines[~drawn], edges[~drawn])  # flag 0: the exact edge map
    assert not torch.equal(lines[drawn], edges[drawn])  # flag 1: free-hand styles
    assert torch.equal(training_sketches(edges, outline, flagged=False, generator=torch.Generator().manual_seed(3)),
                       free_hand(edges, outline, torch.Generator().manual_seed(3)))  # a free prior of before: lines only


def test_the_drawing_flag_reaches_a_flagged_prior_and_no_other():
    from vq.pipeline.configs import build
    from vq.stage2_prior.config import PriorConfig
    from vq.stage2_prior import AutoregressivePrior

    small = dict(codebook_size=16, dim=32, depth=1, heads=2, condition="sketch", sketch_styles="free")
    lines = torch.rand(3, 1, 28, 28) > 0.8
    torch.manual_seed(0)
    flagged = AutoregressivePrior(build(PriorConfig, PriorConfig.NEW_RUN, small)).eval()
    assert flagged.sketch_encoder.patch.in_channels == 2
    ctx = flagged.context(lines, 3)
    assert torch.equal(ctx, flagged.context(torch.cat([lines, torch.zeros_like(lines)], 1), 3))  # no flag: an edge map
    assert not torch.allclose(ctx, flagged.context(as_drawing(lines), 3))
    # A free prior saved before the flag existed (its config has no key) reads the lines alone.
    old = AutoregressivePrior(build(PriorConfig, small)).eval()
    assert old.sketch_encoder.patch.in_channels == 1
    assert torch.equal(old.context(lines, 3), old.context(as_drawing(lines), 3))
    # An edge-map prior has nothing to flag, whatever the key says.
    assert build(PriorConfig, PriorConfig.NEW_RUN, {**small, "sketch_styles": "edges"}).sketch_channels == 1


@needs_fashion_mnist
def test_object_box_of_fashion_mnist_spans_the_image():
    images = to_float(load_fashion_mnist_idx(fashion_mnist_dir()).train.images[:500])
    assert object_box(outline_map(images)) >= 0.9  # the dataset's objects fill the image along their longer side


def outline_drawing(box: tuple[int, int, int, int], width: int, canvas: int = 400) -> np.ndarray:
    img = Image.new("L", (canvas, canvas), 255)
    x0, y0, x1, y1 = box
    ImageDraw.Draw(img).line([(x0, y0), (x1, y0), (x1, y1), (x0 + (x1 - x0) // 3, y1), (x0, y0)], fill=0, width=width, joint="curve")
    return np.asarray(img, np.float32) / 255


def test_framing_puts_a_drawing_anywhere_on_the_canvas_where_the_dataset_has_its_objects():
    small_corner, _ = normalise_drawing(outline_drawing((20, 30, 120, 170), 3), 28, box=1.0)
    large_centre, notes = normalise_drawing(outline_drawing((90, 40, 290, 320), 18), 28, box=1.0)
    assert any("framed" in n for n in notes)
    assert float(edge_f1(small_corner, large_centre)) >= 0.9  # the same shape, thin and thick pen
    rows = large_centre[0, 0].any(1).nonzero().flatten()
    assert rows.min() <= 1 and rows.max() >= 26  # its longer side spans the image, as the box says
    unframed, _ = normalise_drawing(outline_drawing((20, 30, 120, 170), 3), 28)
    assert float(edge_f1(unframed, small_corner)) < 0.5  # without a box it stays small in its corner


def test_a_drawing_given_its_class_is_brought_to_the_class_proportions():
    tall = outline_drawing((100, 40, 340, 340), 4)  # 240 wide, 300 high: aspect 0.8
    framed, notes = normalise_drawing(tall, 28, box=ClassBox(1.0, 0.45, 0.55))
    assert any("its aspect 0.81 made 0.55" in n for n in notes)  # 0.81 with the pen's width
    rows, cols = framed[0, 0].any(1).nonzero().flatten(), framed[0, 0].any(0).nonzero().flatten()
    assert rows.min() <= 1 and rows.max() >= 26  # the longer side: the class's whole side
    assert 13 <= int(cols.max() - cols.min()) + 1 <= 17  # its width: 0.55 of it, centred
    assert abs(int(cols.min()) + int(cols.max()) + 1 - 28) <= 2
    thick, _ = normalise_drawing(outline_drawing((60, 20, 300, 320), 20), 28, box=ClassBox(1.0, 0.45, 0.55))
    assert float(edge_f1(thick, framed)) >= 0.9  # a thick-pen twin elsewhere on the page: the same cells
    # Already in the class's proportions: its aspect kept, framed as without a class to the same side.
    kept, notes = normalise_drawing(tall, 28, box=ClassBox(1.0, 0.7, 0.9))
    assert torch.equal(kept, normalise_drawing(tall, 28, box=1.0)[0]) and any("aspect 0.81 kept" in n for n in notes)
    # Far from them: stretched by MAX_STRETCH at most (3 wide for 1 high, asked for 0.8, made 1.5).
    flat, _ = normalise_drawing(outline_drawing((20, 150, 380, 270), 4), 28, box=ClassBox(1.0, 0.7, 0.8))
    rows, cols = flat[0, 0].any(1).nonzero().flatten(), flat[0, 0].any(0).nonzero().flatten()
    height, width = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
    assert width >= 27 and height == pytest.approx(28 / (3 / MAX_STRETCH), abs=1.5)


def test_drawing_box_picks_the_class_box_and_falls_back_to_the_dataset_box():
    record = SketchRecord.from_json({"detector": 1, "box": 0.9, "class_boxes": [{"side": 1.0, "aspect": [0.4, 0.5]}, None]}, "x")
    assert record.frame_for(0) == ClassBox(1.0, 0.4, 0.5)
    assert record.frame_for(1) == 0.9 and record.frame_for() == 0.9 and record.frame_for(-1) == 0.9
    assert SketchRecord.from_json({"detector": 1, "box": 0.9}, "x").frame_for(0) == 0.9  # a prior recorded before class boxes
    assert SketchRecord(1).frame_for(0) is None  # an export made before the box was measured


@needs_fashion_mnist
def test_class_boxes_of_fashion_mnist_have_the_classes_proportions():
    data = load_fashion_mnist_idx(fashion_mnist_dir()).train
    boxes = class_boxes(outline_map(to_float(data.images[:2000])), torch.as_tensor(data.labels[:2000]).long(), 10)
    trouser, sneaker = boxes[1], boxes[7]
    assert trouser.side >= 0.9 and trouser.aspect_high <= 0.5  # tall and narrow
    assert sneaker.side >= 0.9 and sneaker.aspect_low >= 1.5  # wide and low
    assert all(b.aspect_low <= b.aspect_high for b in boxes)


def test_a_drawing_given_its_class_guides_the_class_at_twice_the_drawing_guidance():
    from vq.pipeline.generate.options import SamplingOptions, drawing_class_guidance

    assert drawing_class_guidance(SamplingOptions(guidance=2.0)).class_guidance == 4.0
    assert drawing_class_guidance(SamplingOptions(guidance=2.0, class_guidance=3.0)).class_guidance == 3.0  # given: kept
    assert drawing_class_guidance(SamplingOptions(guidance=1.0)).class_guidance is None  # no guidance stays none
