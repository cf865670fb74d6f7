"""`vq sample` and `vq complete`: options -> one library call that writes a folder of PNGs -> a
short summary, with the seed to repeat it."""

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from vq.cli.app import app, err, friendly, summary
from vq.cli.options import (ClassGuidanceOpt, DeviceOpt, GuidanceOpt, KeepOpt, PipelineOpt, PriorDirOpt, SampleSeedOpt,
                            StepsDecodeOpt, TempOpt, ThreadsOpt, TokenizerDirOpt, TopKOpt, TopPOpt)


@app.command("sample")
@friendly
def sample(
    class_: Optional[str] = typer.Option(None, "--class", "-c", help="Class name (case-insensitive) or index; default: one row per class."),
    n: int = typer.Option(16, "--per-class", "-n", help="Images to make of each class (of --class alone when given, or of --sketch)."),
    sketch: Optional[Path] = typer.Option(None, "--sketch", "-s", help="A drawing to follow (any size and mode, dark lines on light or light on dark), for a prior trained with --condition sketch; with --class, of that class; without, of the class it reads as (where the prior has a recogniser)."),
    recognise: bool = typer.Option(True, "--recognise/--no-recognise", help="A --sketch without --class: sample the class the prior's recogniser reads in it (the default), or no class at all."),
    guidance: float = GuidanceOpt,
    class_guidance: Optional[float] = ClassGuidanceOpt,
    temperature: float = TempOpt,
    top_k: Optional[int] = TopKOpt,
    top_p: Optional[float] = TopPOpt,
    seed: Optional[int] = SampleSeedOpt,
    steps: Optional[int] = StepsDecodeOpt,
    tokenizer: Path = TokenizerDirOpt,
    prior: Path = PriorDirOpt,
    pipeline: Optional[str] = PipelineOpt,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: a new runs/samples/NNN)."),
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    force: bool = typer.Option(False, "--force", help="Overwrite same-named files in --out."),
):
    """Sample new images: prior -> decoder for a VQ-VAE, the latent prior for a VAE or conditional
    VAE. Writes one PNG per image (<class>_<i>.png) and grid.png; with --sketch, also the sketch as
    the prior reads it (sketch.png), and the images are sketch_<i>.png unless --class is given."""
    from vq.pipeline.generate.folders import sample_to_folder
    from vq.pipeline.generate.pipeline import call_options

    options = call_options(guidance, temperature, top_k, top_p, seed, steps, class_guidance=class_guidance)
    written = sample_to_folder(tokenizer, prior, class_, n, options, out, device=device or "auto", force=force,
                               sketch_path=sketch, pipeline=pipeline, recognise=recognise)
    if written.note:
        err.print(f"{sketch}: {written.note}", highlight=False)
    err.print(f"seed {written.seed} (repeat with --seed {written.seed})", highlight=False)
    for line in written.warnings:
        err.print(f"[yellow]note: {escape(line)}[/yellow]", highlight=False)
    summary(f"samples -> {written.out}", {"images": written.images, "classes": ", ".join(written.classes),
                                          "seed": written.seed, "grid": written.grid})


@app.command("complete")
@friendly
def complete(
    image: Path = typer.Argument(..., help="A PNG or JPEG of any mode and size."),
    keep: str = KeepOpt,
    fraction: float = typer.Option(0.5, "--fraction", help="Share of the image that --keep keeps, strictly between 0 and 1."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Mask image, white = keep (instead of --keep): the image's shape at any size (a 28x28 mask serves a 112x112 image)."),
    class_: Optional[str] = typer.Option(None, "--class", "-c", help="Class to complete as (default: unconditional)."),
    n: int = typer.Option(8, "--completions", "-n", help="Completions to make of the input image."),
    candidates: int = typer.Option(8, "--candidates", help="Draws per completion, ranked by the prior, when known codes follow unknown ones (1 to 256)."),
    guidance: float = GuidanceOpt,
    temperature: float = TempOpt,
    top_k: Optional[int] = TopKOpt,
    top_p: Optional[float] = TopPOpt,
    seed: Optional[int] = SampleSeedOpt,
    steps: Optional[int] = StepsDecodeOpt,
    paste: bool = typer.Option(True, "--paste/--no-paste", help="Show the kept region as the image's own pixels, with a soft seam (--no-paste: as the tokenizer redraws them from their codes)."),
    tokenizer: Path = TokenizerDirOpt,
    prior: Path = PriorDirOpt,
    pipeline: Optional[str] = PipelineOpt,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: a new runs/completions/NNN)."),
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    force: bool = typer.Option(False, "--force", help="Overwrite same-named files in --out."),
):
    """Keep part of an image and let the prior invent the rest, N ways. Writes completion_<i>.png,
    masked.png and grid.png (original | masked | completions)."""
    from vq.pipeline.generate.folders import complete_to_folder
    from vq.pipeline.generate.pipeline import call_options

    written = complete_to_folder(image, tokenizer, prior, keep=keep, fraction=fraction, mask_path=mask, class_value=class_,
                                 n=n, options=call_options(guidance, temperature, top_k, top_p, seed, steps),
                                 candidates=candidates, out=out, device=device or "auto", force=force, pipeline=pipeline,
                                 paste=paste)
    err.print(f"image: {image} converted {written.note}", highlight=False)
    err.print(f"seed {written.seed} (repeat with --seed {written.seed})", highlight=False)
    for line in written.warnings:
        err.print(f"[yellow]note: {escape(line)}[/yellow]", highlight=False)
    summary(f"completions -> {written.out}", {"completions": written.images, "known codes": f"{written.known_codes}/{written.codes}",
                                              "seed": written.seed, "grid": written.grid})
