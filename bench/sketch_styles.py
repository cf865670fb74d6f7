"""Sketch priors on drawings as people make them (issue 21), at the demo preset on one tokenizer
and one export. Variants (`--variants`):
- `edges`: trained on the edge detector's maps alone (`--sketch-styles edges`, as vq trained
  sketch priors before);
- `free`: trained on free-hand styles (edges, outlines and simplified sketches, deformed and
  broken like a hand's; `pipeline.sketch.styles`) without the drawing flag, as the first free
  runs were (`drawing_flag = false`, no recogniser);
- `free+flag`: `--sketch-styles free` as new runs train it: 60% of the rows the exact edge map
  (flag 0), the rest free-hand styles (flag 1); drawings are read with the flag 1, test sketches 0;
  since issue 33 with a recogniser (`stage2_prior.conditions.SketchRecogniser`): a drawing alone
  (a test outline alone) is sampled as the class it reads as, as `vq sample --sketch` samples it;
  `sketch_only_no_class` keeps the figures without a class. Results written before issue 33
  hold `free+flag` without one;
- `free+flag, no recogniser`: as new runs were before issue 33;
- trials (`free+flag+aspect`, `free+flag, sketch alone 20%` / `30%`): as issue 33 measured them,
  without a recogniser.
The README's `free` row was trained with the first, larger deformations (P_DEFORM 0.8, the ranges
4/3 of today's); the script trains every variant with today's `pipeline.sketch.styles`.

Stages (`--stages`, default all):
- `train`: exports the codes with sketches once (timed), then trains the variants at the same
  time, one thread each, so all see the same machine (the training-cost figure compares them);
- `eval`: for each prior, `vq eval`'s test-sketch figures (edge F1, class accuracy, Fréchet
  distance of samples drawn from n test images' edge maps) and the same images' outlines read as
  drawings (`outline_ceiling`: what a perfect outline drawing gets);
- `drawings`: the free-hand figures of `pipeline.evaluate.drawings` on `--drawings` (class seen by the
  judge, inside / coverage of the drawn outline), each drawing read padded to a square (as before
  framing), framed to the export's object box, and (as vq reads them now) framed to its class's
  box when given with it; with the class at the drawing's guidance and at twice it (vq's default
  for a drawing and its class), and on the class-box reading at each `--class-guidance`;
- `figure`: drawings 1 and 4 of each class as read, beside 3 samples of each prior (a PNG beside --json).

Writes the figures to `--json` after each one (keeping other variants' figures there) and prints a table.

    python bench/sketch_styles.py --tokenizer runs/tokenizer --drawings bench/drawings \\
        --json bench/results/sketch_styles_cpu_demo.json
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

VARIANTS = {  # name -> the model config it trains
    "edges": {"sketch_styles": "edges"},
    "free": {"sketch_styles": "free", "drawing_flag": False, "recogniser": False},
    "free+flag": {"sketch_styles": "free"},  # new runs get the drawing flag and the recogniser
    "free+flag, no recogniser": {"sketch_styles": "free", "recogniser": False},  # as new runs were before issue 33
    "free+flag+aspect": {"sketch_styles": "free", "recogniser": False},  # a trial: `STYLE_TRIALS`
    # Trials of how many rows see the sketch without the class (2 x class_dropout of a sketch
    # prior's rows lose the class, half of those keep the sketch: 10% by default).
    "free+flag, sketch alone 20%": {"sketch_styles": "free", "class_dropout": 0.2, "recogniser": False},
    "free+flag, sketch alone 30%": {"sketch_styles": "free", "class_dropout": 0.3, "recogniser": False},
}
# Trials of the free-hand styles' constants (`pipeline.sketch.styles`), set in the child process
# that trains the variant: people draw with proportions of their own (a T-shirt 1.3 wide for 1
# high, where Fashion-MNIST's are 0.7-0.8), far beyond the +-11% aspect the styles draw.
STYLE_TRIALS = {"free+flag+aspect": {"ASPECT": 0.35}}


def child(*args, threads: int = 1) -> subprocess.Popen:
    """This script again, in a process of its own with `threads` torch threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return subprocess.Popen([sys.executable, __file__, *map(str, args)], env=env)


def save(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


def fit_one(args) -> None:
    """One prior (the child's work): fit-prior's job, its FitResult written to WORK/VARIANT.json."""
    from vq.pipeline.train.fit_prior import fit_prior
    from vq.pipeline.train.jobs import FitJob

    from vq.pipeline.sketch import styles

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    for name, value in STYLE_TRIALS.get(args.fit, {}).items():
        setattr(styles, name, value)
    job = FitJob(kind="autoregressive", tokenizer=args.tokenizer, codes=args.work / "codes", out=args.work / args.fit,
                 preset="demo", config_file=None, resume=False, force=True,
                 model_overrides={"condition": "sketch", **VARIANTS[args.fit]},
                 train_overrides={"steps": args.steps, "seed": args.seed, "workers": 0, "wandb": False})
    r = fit_prior(job)
    (args.work / f"{args.fit}.json").write_text(json.dumps(
        {"steps": r.steps, "seconds": r.seconds, "wall_seconds": r.wall_seconds, "metrics": r.metrics,
         "samples_per_second": r.samples_per_second,
         "tokens_per_second": r.tokens_per_second}))


def train(args, results: dict) -> None:
    """The export (timed), then the variants' priors at once, one thread each."""
    from vq.pipeline.codes.export import export_codes

    t0 = time.time()
    export_codes(args.tokenizer, args.work / "codes", sketches=True, workers=0)
    results["export_seconds"] = time.time() - t0
    procs = {style: child("--fit", style, "--tokenizer", args.tokenizer, "--work", args.work, "--steps", args.steps,
                          "--seed", args.seed) for style in args.variants}
    for style, proc in procs.items():
        if proc.wait() != 0:
            sys.exit(f"training the {style} prior failed (exit {proc.returncode})")
        results.setdefault("train", {})[style] = json.loads((args.work / f"{style}.json").read_text())
        save(results, args.json)


@torch.no_grad()
def outline_ceiling(pipe, classifier, test, n: int, opts) -> dict:
    """The best a drawn outline can do: n test images' own outlines (`sketch.edges.outline_map`, what a
    perfect outline drawing of them would be), read as drawings; per mode (outline alone, outline +
    class), the share of samples the judge sees as the image's class and inside / coverage. For a
    prior with a recogniser, the outline alone is sampled as `vq sample --sketch` samples a drawing
    alone (`generate.recognise`): each outline read as a drawing is (framed to the dataset's box),
    recognised, read again framed to the class it reads as and sampled as it; `sketch_only_no_class`
    keeps the outline alone without a class, and `recognised` the share read as their own class."""
    from vq.pipeline.data.images import to_float
    from vq.pipeline.evaluate.drawings import drawn_region, follow_figures
    from vq.pipeline.generate.options import drawing_class_guidance
    from vq.pipeline.generate.recognise import recognised
    from vq.pipeline.sketch.drawings import normalise_drawing
    from vq.pipeline.sketch.edges import outline_map

    lines = outline_map(to_float(test.images[:n]))
    labels = torch.as_tensor(test.labels[:n]).long()
    region, out = drawn_region(lines), {"n": n}
    for mode, y in (("sketch_only", torch.full_like(labels, -1)), ("sketch_and_class", labels)):
        hit, inside, coverage = follow_figures(pipe.tokenizer, pipe.prior, classifier, lines, region, labels, y, opts)
        out[mode] = {"acc": float(hit.mean()), "inside": float(inside.mean()), "coverage": float(coverage.mean())}
    if pipe.prior_info.recognises:
        sketch, size = pipe.prior_info.sketch, lines.shape[-1]
        gray = lines[:, 0].float().numpy()
        alone = torch.cat([normalise_drawing(g, size, sketch.frame_for())[0] for g in gray])
        read_as, framed, _ = recognised(pipe.prior, sketch, alone, lambda i, box: normalise_drawing(gray[i], size, box)[0])
        hit, inside, coverage = follow_figures(pipe.tokenizer, pipe.prior, classifier, framed, drawn_region(framed), labels,
                                               read_as, drawing_class_guidance(opts))
        out["sketch_only_no_class"] = out["sketch_only"]
        out["sketch_only"] = {"acc": float(hit.mean()), "inside": float(inside.mean()), "coverage": float(coverage.mean())}
        out["recognised"] = float((read_as == labels).float().mean())
    return out


def judged_prior(args, style: str):
    """A variant's pipeline, the dataset, its test split and `vq eval`'s judge (trained once, cached)."""
    from vq.pipeline.data.loader import EvalImages, Skipped
    from vq.pipeline.data.sources import load_data
    from vq.pipeline.evaluate.judge import ensure_classifier
    from vq.pipeline.generate.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(args.tokenizer, args.work / style)
    data = load_data(pipe.tokenizer_info.data_options())
    test = EvalImages(data.test, None, Skipped()).split
    classifier = ensure_classifier(data, test, args.classifier, "cpu", Console(stderr=True))
    return pipe, data, test, classifier.eval()


def evaluate(args, results: dict) -> None:
    """Per prior: the test-sketch figures and the perfect-outline ceiling (stage `eval`)."""
    from vq.pipeline.data.images import to_float
    from vq.pipeline.evaluate.judge import predict
    from vq.pipeline.evaluate.tasks import sketch_agreement
    from vq.stage2_prior import SamplingOptions

    opts = SamplingOptions(guidance=args.guidance, seed=args.seed)
    for style in args.variants:
        pipe, data, test, classifier = judged_prior(args, style)
        _, test_feats = predict(classifier, to_float(test.images))
        row = results.setdefault("eval", {}).setdefault(style, {})
        t0 = time.time()
        row["test_sketches"] = sketch_agreement(pipe.tokenizer, pipe.prior, classifier, test, args.sketch_images, opts,
                                                pipe.device, test_feats, data.class_names)
        row["test_sketches"]["seconds"] = time.time() - t0
        save(results, args.json)
        row["test_outlines"] = outline_ceiling(pipe, classifier, test, args.sketch_images, opts)
        save(results, args.json)


READINGS = ("padded", "framed", "class_boxes")


def evaluate_drawings(args, results: dict) -> None:
    """Per prior, the free-hand figures of `pipeline.evaluate.drawings` on `--drawings` (stage `drawings`),
    the drawings read three ways: padded to a square (as before framing), framed to the export's
    object box, and (as vq reads them now) framed to their class's box when given with it. Each
    reading with the class at the drawing's guidance (`sketch_and_class`) and at vq's default for
    a drawing and its class (`sketch_and_class_default`: twice it); on the class-box reading, the
    class's own guidance at each `--class-guidance` (2 and 4 are those two). Priors trained before
    priors recorded class boxes get them from their export here, as the same prior trained today
    would record them (vq itself frames their drawings to the dataset's box)."""
    from dataclasses import replace

    from vq.pipeline.codes.record import CodeRecord
    from vq.pipeline.codes.shards import sketch_record
    from vq.pipeline.evaluate.drawings import drawing_agreement, read_drawing_set
    from vq.stage2_prior import SamplingOptions

    at_guidance = SamplingOptions(guidance=args.guidance, seed=args.seed, class_guidance=args.guidance)
    default = SamplingOptions(guidance=args.guidance, seed=args.seed)
    for style in args.variants:
        pipe, data, _, classifier = judged_prior(args, style)
        names, size = data.class_names, pipe.tokenizer_info.image_size
        sketch = pipe.prior_info.sketch
        if not sketch.class_boxes:  # trained before priors recorded them: from its export, as a new run
            codes = args.work / "codes"
            sketch = replace(sketch, class_boxes=sketch_record(codes, CodeRecord.read(codes)).class_boxes)
        box = sketch.frame_for()  # the dataset's object box
        row = results.setdefault("eval", {}).setdefault(style, {})
        for reading, rec in zip(READINGS, (None, replace(sketch, class_boxes=()), sketch)):
            drawings = read_drawing_set(args.drawings, names, size, rec)
            b = box if rec else None
            row[f"drawings_{reading}"] = r = drawing_agreement(pipe.tokenizer, pipe.prior, classifier, drawings,
                                                               args.per_drawing, at_guidance, names, b)
            r["sketch_and_class_default"] = drawing_agreement(pipe.tokenizer, pipe.prior, classifier, drawings,
                                                              args.per_drawing, default, names, b,
                                                              modes=("sketch_and_class",))["sketch_and_class"]
            if reading == "class_boxes" and pipe.prior_info.recognises:  # a drawing alone as vq samples it now:
                read = drawing_agreement(pipe.tokenizer, pipe.prior, classifier, drawings, args.per_drawing, default,
                                         names, b, modes=("sketch_only",), sketch=sketch)  # as the class it reads as
                r["sketch_only_no_class"], r["sketch_only"], r["recognised"] = r["sketch_only"], read["sketch_only"], read["recognised"]
                for mine, theirs in zip(r["drawings"], read["drawings"]):
                    mine["sketch_only_no_class"], mine["sketch_only"], mine["read_as"] = (
                        mine["sketch_only"], theirs["sketch_only"], theirs["read_as"])
            save(results, args.json)
        row["class_guidance"] = {}
        for c in args.class_guidance:  # the class's own guidance on top of the drawing's (`--class-guidance`)
            o = SamplingOptions(guidance=args.guidance, seed=args.seed, class_guidance=c)
            row["class_guidance"][str(c)] = drawing_agreement(  # `drawings`: the class-box set, read above
                pipe.tokenizer, pipe.prior, classifier, drawings, args.per_drawing, o, names, box,
                modes=("sketch_and_class",))["sketch_and_class"]
            save(results, args.json)


def figure(args) -> None:
    """Rows: a drawing as read without a class (framed to the dataset's box: what a recogniser
    reads; a prior with one then samples it framed to the class it reads as), 3 samples of each
    variant's prior, from the drawing alone as `vq sample --sketch` draws them; drawings 1 and 4
    of every class."""
    import numpy as np
    from PIL import Image

    from vq.pipeline.generate.pipeline import Pipeline
    from vq.pipeline.sketch.drawings import load_drawing

    pipes = {style: Pipeline.from_pretrained(args.tokenizer, args.work / style) for style in args.variants}
    first = next(iter(pipes.values()))
    box = first.prior_info.sketch.frame_for() if first.prior_info.sketch else None  # the dataset's object box
    rows = []
    for path in sorted(args.drawings.glob("*-1.*")) + sorted(args.drawings.glob("*-4.*")):  # any image format
        lines = load_drawing(path, first.tokenizer_info.image_size, box)[0]
        row = [lines[0, 0].float().numpy() * 2 - 1]
        for pipe in pipes.values():
            x = pipe.sample(n=3, sketch=path, guidance=args.guidance, seed=args.seed, output_type="pt")
            row += [im[0].float().numpy() / 127.5 - 1 for im in x]
        rows.append(np.concatenate(row, 1))
    grid = ((np.concatenate(rows, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)
    out = args.json.with_suffix(".png")
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(out)
    print(f"figure: {out}")


def table(results: dict) -> Table:
    t = Table(title="sketch priors: edge maps only vs free-hand styles, without and with the drawing flag (demo preset, this CPU)",
              title_justify="left")
    for col in ("trained on", "drawings read", "drawing alone: class", "read as own class", "alone, no class: class",
                "+ class: class", "+ class, class guided x2",
                "inside", "covered", "test sketches: edge F1", "class acc", "training s (steps)"):
        t.add_column(col, justify="left" if col in ("trained on", "drawings read") else "right")
    for style in VARIANTS:
        ev, tr = results.get("eval", {}).get(style, {}), results.get("train", {}).get(style, {})
        ts = ev.get("test_sketches", {}).get("sketch_and_class", {})
        for reading, key in [(r, f"drawings_{r}") for r in READINGS] + [("test outlines (perfect drawings)", "test_outlines")]:
            d = ev.get(key)
            if d is None:
                continue
            twice = d.get("sketch_and_class_default", {}).get("acc")
            unread = d.get("sketch_only_no_class", {}).get("acc")  # a recogniser's prior: the drawing alone, no class
            t.add_row(style, reading, f"{d['sketch_only']['acc']:.3f}", f"{d['recognised']:.2f}" if "recognised" in d else "",
                      f"{unread:.3f}" if unread is not None else "", f"{d['sketch_and_class']['acc']:.3f}",
                      f"{twice:.3f}" if twice is not None else "", f"{d['sketch_only']['inside']:.3f}",
                      f"{d['sketch_only']['coverage']:.3f}", f"{ts.get('edge_f1', float('nan')):.3f}",
                      f"{ts.get('acc', float('nan')):.3f}", f"{tr['seconds']:.0f} ({tr['steps']})" if tr else "")
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", type=Path, default=Path("runs/tokenizer"))
    p.add_argument("--drawings", type=Path, default=Path("bench/drawings"))
    p.add_argument("--work", type=Path, default=Path("/tmp/vq_sketch_styles"))
    p.add_argument("--classifier", type=Path, default=Path("runs/classifier"))
    p.add_argument("--json", type=Path, default=Path("bench/results/sketch_styles_cpu_demo.json"))
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    p.add_argument("--stages", nargs="+", choices=("train", "eval", "drawings", "figure"),
                   default=["train", "eval", "drawings", "figure"])
    p.add_argument("--steps", type=int, default=800, help="training steps of each prior (800: the README's figures up to issue 29, at the demo preset of the time: dim 192, dropout 0.1)")
    p.add_argument("--sketch-images", type=int, default=1000, help="test images whose edge maps are drawn from")
    p.add_argument("--per-drawing", type=int, default=8, help="samples per drawing and mode")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--class-guidance", type=float, nargs="*", default=[3.0, 5.0, 6.0, 8.0],
                   help="class guidance scales for the drawings given with their class (the drawing's stays --guidance)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit", choices=tuple(VARIANTS), help=argparse.SUPPRESS)  # a child process: train one prior
    args = p.parse_args()
    if args.fit:
        return fit_one(args)
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    results.update({"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}", "guidance": args.guidance,
                    "per_drawing": args.per_drawing, "sketch_images": args.sketch_images})
    if "train" in args.stages:
        train(args, results)
    if "eval" in args.stages:
        evaluate(args, results)
    if "drawings" in args.stages:
        evaluate_drawings(args, results)
    if "figure" in args.stages:
        figure(args)
    save(results, args.json)
    Console().print(table(results))


if __name__ == "__main__":
    main()
