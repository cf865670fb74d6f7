"""What `vq sample` and `vq complete` leave on disk, over a `Pipeline`: a new numbered output
folder (or a given one, whose files are never overwritten without --force), one PNG per image
and a grid. Every input is checked against the runs' records before a model is loaded, and
nothing is written until the images exist."""

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vq.pipeline.data.images import to_float
from vq.pipeline.errors import VQError
from vq.pipeline.generate.images import save_grid, save_png
from vq.pipeline.generate.pipeline import Pipeline
from vq.pipeline.generate.options import whole
from vq.pipeline.generate.plans import MAX_IMAGES, plan_completion, plan_samples, records
from vq.pipeline.share import folder
from vq.stage2_prior import SamplingOptions


def file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-").lower() or "class"


def new_output_dir(out: Path | None, default_root: Path, names: list[str], force: bool) -> Path:
    """An explicit --out must not hold files we would overwrite (unless --force); the default is a
    fresh numbered folder under default_root, so earlier results are never touched."""
    if out is not None and out.exists() and not out.is_dir():
        raise VQError(f"--out {out} is a file; give a folder")
    if out is None:
        existing = [int(p.name) for p in default_root.glob("[0-9][0-9][0-9]") if p.is_dir()] if default_root.exists() else []
        return default_root / f"{max(existing, default=0) + 1:03d}"
    clashes = [n for n in names if (out / n).exists()]
    if clashes and not force:
        raise VQError(f"{out} already holds {clashes[0]} (and {len(clashes) - 1} more); pass --force or another --out")
    return out


def run_dirs(tokenizer_dir: Path, prior_dir: Path | None, pipeline: str | None) -> tuple[Path, Path | None]:
    """--pipeline (a saved folder or a Hub id) stands for --tokenizer and --prior."""
    return folder.parts(pipeline) if pipeline is not None else (tokenizer_dir, prior_dir)


@dataclass
class Written:
    """What a command wrote: the folder, its grid, and what the caller reports."""

    out: Path
    grid: Path
    images: int
    seed: int
    classes: list[str] = field(default_factory=list)  # a sampled group's class ("-": none)
    note: str | None = None  # how the sketch or the image was read
    known_codes: int | None = None  # a completion's codes kept from the image ...
    codes: int | None = None  # ... of its codes
    warnings: list[str] = field(default_factory=list)  # `Pipeline.training_notes`: runs whose training stopped early


def sample_to_folder(tokenizer_dir: Path, prior_dir: Path, class_value: str | None, n: int, options: SamplingOptions,
                     out: Path | None, *, device: str = "auto", force: bool = False, sketch_path: Path | None = None,
                     pipeline: str | None = None, recognise: bool = True) -> Written:
    """`vq sample`: <class>_<i>.png per image and grid.png (a row per class); with a sketch, also
    sketch.png (the sketch as the prior reads it, for the first class), and each row of the grid
    leads with the sketch as read for its class. A sketch without a class: sketch_<i>.png, drawn
    as the class it reads as where the prior has a recogniser (`recognise`; the note names it)."""
    n = whole(n, "n", 1, MAX_IMAGES)  # before any file is read
    tokenizer_dir, prior_dir = run_dirs(tokenizer_dir, prior_dir, pipeline)
    tok, prior = records(tokenizer_dir, prior_dir)
    request = plan_samples(tok, prior, class_value, n, sketch=sketch_path, options=options, recognise=recognise)
    names = list(tok.class_names)
    sketched = request.sketch is not None
    stems = [file_stem(names[c]) if c >= 0 else "sketch" if sketched else "sample" for c in request.groups]
    files = [f"{stem}_{i}.png" for stem in stems for i in range(n)] + ["grid.png"] + (["sketch.png"] if sketched else [])
    out = new_output_dir(out, Path("runs/samples"), files, force)
    pipe = Pipeline.from_pretrained(tokenizer_dir, prior_dir if prior is not None else None, device=device)
    samples = pipe.run_samples(request)
    images = to_float(samples.images)
    out.mkdir(parents=True, exist_ok=True)
    for img, name in zip(samples.images, files):
        save_png(img, out / name)
    nrow = n if len(request.groups) > 1 else max(1, math.ceil(math.sqrt(n)))
    result = Written(out, out / "grid.png", len(images), samples.seed, [names[c] if c >= 0 else "-" for c in samples.labels[::n].tolist()],
                     warnings=pipe.training_notes)
    if sketched:
        drawn = samples.sketch.float().expand(-1, images.shape[1], -1, -1) * 2 - 1  # white lines on black
        save_png(drawn[0], out / "sketch.png")
        rows = [torch.cat([drawn[g : g + 1], images[g * n : (g + 1) * n]]) for g in range(len(drawn))]
        images, nrow = torch.cat(rows), n + 1  # a row per group: the sketch as read for it, then its samples
        result.note = samples.sketch_note
    save_grid(images, out / "grid.png", nrow=nrow)
    return result


def complete_to_folder(image: Path, tokenizer_dir: Path, prior_dir: Path, *, keep: str = "top", fraction: float = 0.5,
                       mask_path: Path | None = None, class_value: str | None = None, n: int = 8,
                       options: SamplingOptions, candidates: int = 8, out: Path | None = None, device: str = "auto",
                       force: bool = False, pipeline: str | None = None, paste: bool = True) -> Written:
    """`vq complete`: completion_<i>.png, masked.png (what the prior is given) and grid.png
    (original | masked | completions); `paste`: the kept pixels as given (`Pipeline.complete`)."""
    n = whole(n, "n", 1, MAX_IMAGES)  # before any file is read
    tokenizer_dir, prior_dir = run_dirs(tokenizer_dir, prior_dir, pipeline)
    tok, prior = records(tokenizer_dir, prior_dir)
    request = plan_completion(tok, prior, image, mask_path if mask_path is not None else keep, fraction=fraction, n=n,
                              classes=class_value, options=options, candidates=candidates, paste=paste)
    files = [f"completion_{i}.png" for i in range(n)] + ["grid.png", "masked.png"]
    out = new_output_dir(out, Path("runs/completions"), files, force)
    pipe = Pipeline.from_pretrained(tokenizer_dir, prior_dir, device=device)
    done = pipe.run_completion(request)
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(done.images):
        save_png(img, out / f"completion_{i}.png")
    save_png(done.masked[0], out / "masked.png")
    row = torch.cat([done.original, done.masked, done.images])
    save_grid(to_float(row), out / "grid.png", nrow=row.shape[0])
    return Written(out, out / "grid.png", n, done.seed, note=done.note, known_codes=done.known_codes, codes=done.codes,
                   warnings=pipe.training_notes)
