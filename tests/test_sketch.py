"""Sketch to image: the edge detector, drawings as people make them, and the sketch prior chained
from the command line on a small slice of real Fashion-MNIST."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vq.pipeline.data.idx import fashion_mnist_dir, load_fashion_mnist_idx
from vq.pipeline.data.images import to_float
from vq.pipeline.codes.maps import load_codes, split_record
from vq.pipeline.sketch.edges import edge_f1, edge_map, outline_map, thin
from vq.pipeline.sketch.drawings import load_drawing, normalise_drawing
from test_cli import assert_one_line_error, digest, vq

needs_fashion_mnist = pytest.mark.skipif(fashion_mnist_dir() is None, reason="Fashion-MNIST idx files not installed (make test installs them)")

# A boot, a bag and a dress as a person draws them: a few strokes (coordinates on a 280 px canvas).
DRAWINGS = {
    "boot": [(95, 45), (155, 45), (155, 155), (245, 185), (245, 235), (55, 235), (65, 155), (95, 45)],
    "bag": [(65, 115), (225, 115), (235, 245), (55, 245), (65, 115)],
    "dress": [(115, 35), (175, 35), (165, 105), (225, 255), (65, 255), (125, 105), (115, 35)],
}


def drawing(name: str, width: int, ink: int, paper: int, size: int = 280) -> Image.Image:
    img = Image.new("L", (size, size), paper)
    scale = size / 280
    ImageDraw.Draw(img).line([(x * scale, y * scale) for x, y in DRAWINGS[name]], fill=ink, width=width, joint="curve")
    return img


@needs_fashion_mnist
def test_edge_detector_is_deterministic_thin_and_per_image():
    data = load_fashion_mnist_idx(fashion_mnist_dir())
    x = to_float(data.test.images[:64])
    a, b = edge_map(x), edge_map(x.clone())
    assert a.dtype == torch.bool and a.shape == (64, 1, 28, 28)
    assert torch.equal(a, b)
    assert torch.equal(edge_map(x[5:9]), a[5:9])  # an image's sketch does not depend on its batch
    assert torch.equal(thin(a), a)  # already one pixel wide
    counts = a.flatten(1).sum(1)
    assert (counts > 20).all() and (counts < 300).all()  # every garment has an outline, none is all edges
    assert not edge_map(torch.full((1, 1, 28, 28), 0.3)).any()  # a flat image has no edges


@pytest.mark.parametrize("name", sorted(DRAWINGS))
def test_thick_dark_lines_and_thin_light_lines_give_the_same_sketch(name):
    thick, notes_thick = normalise_drawing(np.asarray(drawing(name, 16, ink=0, paper=255), np.float32) / 255, 28)
    thin_, notes_thin = normalise_drawing(np.asarray(drawing(name, 3, ink=255, paper=0), np.float32) / 255, 28)
    assert "inverted" in notes_thick[0] and "light lines on dark" in notes_thin[0]
    assert torch.equal(thin(thick), thick) and torch.equal(thin(thin_), thin_)
    # The same path: equal within a pixel (a line along a cell border may land on either side).
    assert float(edge_f1(thick, thin_)) == 1.0
    assert int((thick ^ thin_).sum()) <= 0.1 * int(thick.sum())
    # Another canvas size and grey levels: the same again.
    other, _ = normalise_drawing(np.asarray(drawing(name, 9, ink=40, paper=210, size=500), np.float32) / 255, 28)
    assert float(edge_f1(other, thick)) >= 0.95


def test_a_blank_drawing_is_refused():
    with pytest.raises(ValueError, match="no lines"):
        normalise_drawing(np.full((100, 80), 0.9, np.float32), 28)


def test_edge_f1_tolerates_one_pixel():
    a = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    a[0, 0, 5, 2:8] = True
    shifted, far = torch.roll(a, 1, dims=2), torch.roll(a, 3, dims=2)
    assert float(edge_f1(a, a)) == 1.0 and float(edge_f1(a, shifted)) == 1.0 and float(edge_f1(a, far)) == 0.0
    half = a.clone()
    half[0, 0, 5, 5:8] = False  # precision 1, recall 4/6 (one pixel of slack at the cut)
    assert abs(float(edge_f1(half, a)) - 2 * (4 / 6) / (1 + 4 / 6)) < 1e-6


@needs_fashion_mnist
def test_sketch_prior_trains_on_exported_sketches(sketch_chain):
    root = sketch_chain
    prior = json.loads((root / "sketch-prior" / "config.json").read_text())
    assert prior["config"]["condition"] == "sketch" and prior["config"]["sketch_size"] == 28
    codes = load_codes(root / "codes")
    assert codes.record.sketch.size == 28
    records = codes.splits["test"].with_sketches().to_memory(16)
    c, maps = split_record(records.images[:20], (7, 7), 28)
    assert torch.equal(c, codes.splits["test"].to_memory(16).images[:20].long())
    data = load_fashion_mnist_idx(fashion_mnist_dir())
    real = to_float(data.test.images[:20])
    assert maps.shape == (20, 2, 28, 28)  # the detector's edges and the silhouette's outline, as stored
    assert torch.equal(maps[:, :1], edge_map(real)) and torch.equal(maps[:, 1:], outline_map(real))
    meta = json.loads((root / "codes" / "meta.json").read_text())
    assert 0.5 < meta["sketch"]["box"] <= 1  # the dataset's typical object size, measured by the export
    assert prior["config"]["sketch_styles"] == "free" and prior["sketch"]["box"] == meta["sketch"]["box"]
    boxes = meta["sketch"]["class_boxes"]  # each class's typical side and middle aspects, for drawings given a class
    assert len(boxes) == 10 and prior["sketch"]["class_boxes"] == boxes
    assert boxes[1]["aspect"][1] < 1 < boxes[7]["aspect"][0]  # trousers taller than wide, sneakers wider than tall
    from dataclasses import replace

    from vq.pipeline.codes.shards import sketch_record

    before = replace(codes.record, sketch=replace(codes.record.sketch, class_boxes=()))  # an export made before them
    assert sketch_record(root / "codes", before).class_boxes == codes.record.sketch.class_boxes  # measured for the prior
    assert prior["config"]["drawing_flag"] is True  # a new run tells drawings from edge maps
    # Training reads the flag with every sketch, evaluation reads edge maps (flag 0) ...
    from vq.pipeline.codes.maps import batch_preparer
    from vq.stage2_prior.config import PriorConfig

    config = PriorConfig(**prior["config"])
    labels = torch.zeros(20, dtype=torch.long)
    _, _, trained = batch_preparer(config, train=True, box=meta["sketch"]["box"])((records.images[:20], labels), torch.device("cpu"))
    _, _, evaluated = batch_preparer(config)((records.images[:20], labels), torch.device("cpu"))
    assert trained.shape == (20, 3, 28, 28) and torch.equal(evaluated, maps[:, :1])
    # ... and the recogniser's sketches after them: lines on every row, framed to the export's box.
    assert prior["config"]["recogniser"] is True
    shown = trained[:, 2]
    sides = torch.tensor([float(max(s.any(1).sum(), s.any(0).sum())) for s in shown])
    assert bool(shown.flatten(1).any(1).all()) and abs(float(sides.median()) - meta["sketch"]["box"] * 28) <= 2.5
    unframed = batch_preparer(config, train=True)((records.images[:20], labels), torch.device("cpu"))[2][:, 2]
    unframed_sides = torch.tensor([float(max(s.any(1).sum(), s.any(0).sum())) for s in unframed])
    assert float(sides.float().sub(meta["sketch"]["box"] * 28).abs().mean()) < float(unframed_sides.sub(meta["sketch"]["box"] * 28).abs().mean())
    # ... and a drawing reaches the prior with the flag 1, through the Python API.
    from vq.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(root / "tokenizer", root / "sketch-prior", device="cpu")
    seen, context = [], pipe.prior.context
    pipe.prior.context = lambda sketch, b, keep=None: (seen.append(sketch), context(sketch, b, keep))[1]
    pipe.sample(n=2, sketch=root / "boot.jpg", seed=0)
    assert seen[0].shape == (2, 2, 28, 28) and bool(seen[0][:, 1].all())
    drawn = root / "drawn"
    (drawn / "Dress").mkdir(parents=True)
    drawing("boot", 12, ink=20, paper=240).save(drawn / "ankle-boot-1.png")
    drawing("bag", 4, ink=0, paper=255, size=500).save(drawn / "bag_2.png")
    drawing("dress", 8, ink=0, paper=255).save(drawn / "Dress" / "mine.png")  # the class from the folder
    r = vq("eval", "--tokenizer", root / "tokenizer", "--prior", root / "sketch-prior", "-n", "2", "--complete-images", "0",
           "--sketch-images", "12", "--drawings", drawn, "--drawing-samples", "2",
           "--classifier", root / "classifier", "--out", root / "eval.json")
    assert r.returncode == 0, r.stderr
    report = json.loads((root / "eval.json").read_text())
    sk = report["sketch"]
    assert sk["n"] == 12
    for key in ("sketch_and_class", "sketch_only", "class_only", "reconstructions"):
        assert 0 <= sk[key]["edge_f1"] <= 1
    assert sk["real"]["edge_f1"] == 1.0  # the sketches are the real images' own edges
    d = report["drawings"]
    assert d["n_drawings"] == 3 and d["per_drawing"] == 2 and d["box"] == codes.record.sketch.box
    assert d["class_boxes"] is True and d["class_guidance"] == 4.0  # with the class: its box and twice the guidance
    assert [(x["file"], x["class"]) for x in d["drawings"]] == [("mine.png", "Dress"), ("ankle-boot-1.png", "Ankle boot"),
                                                                 ("bag_2.png", "Bag")]
    # A drawing alone is sampled as the class the prior's recogniser reads in it, as vq sample does.
    assert d["recognised"] == sum(x["read_as"] == x["class"] for x in d["drawings"]) / 3
    for x in d["drawings"]:
        path = next(drawn.rglob(x["file"]))
        alone = load_drawing(path, 28, codes.record.sketch.box)[0]
        assert x["read_as"] == codes.record.class_names[int(pipe.prior.recognise(alone).argmax())]
    for mode in ("sketch_only", "sketch_and_class"):
        assert all(0 <= d[mode][k] <= 1 for k in ("acc", "inside", "coverage"))
        assert d[mode]["coverage"] > 0  # samples drawn from an outline land on it
    assert "free-hand drawings: 3" in r.stdout
    drawing("bag", 4, ink=0, paper=255).save(drawn / "zebra-1.png")
    r = vq("eval", "--tokenizer", root / "tokenizer", "--prior", root / "sketch-prior", "--drawings", drawn,
           "--classifier", root / "classifier", "--out", root / "eval2.json")
    assert_one_line_error(r, "'zebra' names no class")
    assert not (root / "eval2.json").exists()


@needs_fashion_mnist
def test_sketches_are_added_to_an_export_without_touching_its_codes(chain, tmp_path):
    import shutil

    codes = tmp_path / "codes"
    shutil.copytree(chain / "codes", codes)
    before = {p.name: p.read_bytes() for p in codes.glob("*.npy")}
    r = vq("export-codes", "--tokenizer", chain / "tokenizer", "--out", codes, "--sketches")
    assert r.returncode == 0, r.stderr
    assert "adding them" in r.stderr
    assert {p.name: p.read_bytes() for p in codes.glob("*.npy") if p.name in before} == before
    meta = json.loads((codes / "meta.json").read_text())
    assert meta["sketch"]["detector"] >= 1 and sorted(p.name for p in codes.glob("*.sketch.npy")) == ["test-00000.sketch.npy", "train-00000.sketch.npy"]
    data = load_fashion_mnist_idx(fashion_mnist_dir())
    _, maps = split_record(load_codes(codes).splits["train"].with_sketches().to_memory(16).images[:10], (7, 7), 28)
    assert torch.equal(maps[:, :1], edge_map(to_float(data.train.images[:10])))


@needs_fashion_mnist
def test_sample_follows_a_drawing_file(sketch_chain):
    root = sketch_chain
    args = ("sample", "--tokenizer", root / "tokenizer", "--prior", root / "sketch-prior", "--sketch", root / "boot.jpg",
            "-n", "3", "--seed", "1")
    r = vq(*args, "--out", root / "s1")
    assert r.returncode == 0, r.stderr
    assert "dark lines on light: inverted" in r.stderr and "thinned to 1 px at 28x28" in r.stderr
    assert "read as " in r.stderr and "framed to the class" in r.stderr  # the class the drawing reads as, its proportions
    assert sorted(p.name for p in (root / "s1").iterdir()) == ["grid.png", "sketch.png", "sketch_0.png", "sketch_1.png", "sketch_2.png"]
    r = vq(*args, "--no-recognise", "--out", root / "s5")  # no class at all: the drawing alone, as read
    assert r.returncode == 0, r.stderr
    assert "read as " not in r.stderr and "framed to the class" not in r.stderr and "framed: the lines' box" in r.stderr
    assert (root / "s5" / "sketch_0.png").read_bytes() != (root / "s1" / "sketch_0.png").read_bytes()
    assert Image.open(root / "s1" / "grid.png").size[0] > 4 * 28  # the sketch and its three samples in a row
    r = vq(*args, "--class", "ankle boot", "--guidance", "2", "--out", root / "s2")
    assert r.returncode == 0, r.stderr
    assert "framed to the class" in r.stderr
    assert (root / "s2" / "ankle-boot_0.png").exists()
    r = vq(*args, "--class", "ankle boot", "--guidance", "2", "--class-guidance", "5", "--out", root / "s4")
    assert r.returncode == 0, r.stderr
    assert (root / "s4" / "ankle-boot_0.png").read_bytes() != (root / "s2" / "ankle-boot_0.png").read_bytes()
    # The sketch prior still samples by class alone.
    r = vq("sample", "--tokenizer", root / "tokenizer", "--prior", root / "sketch-prior", "-c", "bag", "-n", "2", "--out", root / "s3")
    assert r.returncode == 0, r.stderr


@needs_fashion_mnist
def test_a_drawing_given_classes_is_read_for_each_class(sketch_chain):
    from vq.pipeline import Pipeline
    from vq.pipeline.generate.options import SamplingOptions
    from vq.pipeline.generate.plans import plan_samples

    root = sketch_chain
    pipe = Pipeline.from_pretrained(root / "tokenizer", root / "sketch-prior", device="cpu")
    tok, prior = pipe.tokenizer_info, pipe.prior_info
    request = plan_samples(tok, prior, ["trouser", "sneaker"], 2, sketch=root / "boot.jpg", options=SamplingOptions(seed=0))
    assert request.sketch.shape == (2, 1, 28, 28)

    def height_width(lines):
        rows, cols = lines[0, 0].any(1).nonzero().flatten(), lines[0, 0].any(0).nonzero().flatten()
        return int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1

    (th, tw), (sh, sw) = height_width(request.sketch[:1]), height_width(request.sketch[1:])
    assert th > tw and sw > sh and th > sh and sw > tw  # the square boot drawn as each class's proportions
    assert request.options.class_guidance == 4.0  # a drawing with a class: the class guided at twice the drawing's 2
    assert plan_samples(tok, prior, "bag", 2, sketch=root / "boot.jpg",
                        options=SamplingOptions(class_guidance=2.5)).options.class_guidance == 2.5  # given: kept
    alone = plan_samples(tok, prior, None, 2, sketch=root / "boot.jpg", options=SamplingOptions())
    assert alone.sketch.shape == (1, 1, 28, 28) and alone.options.class_guidance is None
    # Alone, the drawing is sampled as the class the recogniser reads in it, framed to that class.
    probs = pipe.prior.recognise(alone.sketch)
    read_as = int(probs.argmax())
    recognised = pipe.run_samples(alone)
    assert recognised.labels.tolist() == [read_as, read_as] and recognised.sketch_note.startswith(f"read as {pipe.class_names[read_as]} (")
    assert torch.equal(recognised.sketch, plan_samples(tok, prior, read_as, 2, sketch=root / "boot.jpg",
                                                       options=SamplingOptions()).sketch)
    unread = plan_samples(tok, prior, None, 2, sketch=root / "boot.jpg", options=SamplingOptions(), recognise=False)
    assert unread.reread is None and pipe.run_samples(unread).labels.tolist() == [-1, -1]
    from vq.pipeline.errors import VQError

    with pytest.raises(VQError, match="recognise is True or False"):
        plan_samples(tok, prior, None, 2, sketch=root / "boot.jpg", options=SamplingOptions(), recognise="false")
    seen, context = [], pipe.prior.context
    pipe.prior.context = lambda sketch, b, keep=None: (seen.append(sketch), context(sketch, b, keep))[1]
    samples = pipe.run_samples(request)
    assert samples.images.shape[0] == 4 and torch.equal(samples.sketch, request.sketch)
    assert torch.equal(seen[0][:, :1].bool(), request.sketch.repeat_interleave(2, 0))  # each class's samples, its reading


@needs_fashion_mnist
def test_sketch_refusals_are_one_line_and_write_nothing(sketch_chain, tmp_path):
    root = sketch_chain
    before = digest(root)
    r = vq("sample", "--tokenizer", root / "tokenizer", "--prior", root / "prior", "--sketch", root / "boot.jpg",
           "--out", tmp_path / "a")
    assert_one_line_error(r, "trained without sketches")
    Image.new("L", (50, 40), 255).save(tmp_path / "blank.png")
    r = vq("sample", "--tokenizer", root / "tokenizer", "--prior", root / "sketch-prior", "--sketch", tmp_path / "blank.png",
           "--out", tmp_path / "b")
    assert_one_line_error(r, "no lines")
    r = vq("sample", "--tokenizer", root / "tokenizer", "--prior", root / "sketch-prior", "--sketch", tmp_path / "missing.png",
           "--out", tmp_path / "c")
    assert_one_line_error(r, "does not exist")
    r = vq("sample", "--tokenizer", root / "tokenizer", "--prior", root / "sketch-prior", "--class", "bag",
           "--class-guidance", "4", "--out", tmp_path / "d")
    assert_one_line_error(r, "class_guidance weighs a class against a sketch")
    assert not any((tmp_path / d).exists() for d in "abcd")
    assert digest(root) == before
