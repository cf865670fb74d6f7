"""`vq eval`: options -> an evaluation job -> the report, printed as the library lays it out."""

from pathlib import Path
from typing import Optional

import typer

from vq.cli.app import app, err, friendly, print_tables
from vq.cli.options import (ClassGuidanceOpt, DeviceOpt, GuidanceOpt, PipelineOpt, PriorDirOpt, StepsDecodeOpt, TempOpt,
                            ThreadsOpt, TokenizerDirOpt, TopKOpt, TopPOpt)

SWEEP = [(g, t) for t in (1.0, 0.8) for g in (1.0, 1.5, 2.0, 3.0, 5.0)]


@app.command("eval")
@friendly
def evaluate(
    tokenizer: Path = TokenizerDirOpt,
    prior: Path = PriorDirOpt,
    pipeline: Optional[str] = PipelineOpt,
    per_class: int = typer.Option(1000, "--per-class", "-n", min=1, help="Images to make (and real images to compare) of each class."),
    complete_images: int = typer.Option(500, "--complete-images", min=0, help="Test images to complete (0 = skip)."),
    sketch_images: int = typer.Option(1000, "--sketch-images", min=0, help="For a sketch prior: test images whose edge maps are drawn from, to score edge agreement (0 = skip)."),
    drawings: Optional[Path] = typer.Option(None, "--drawings", help="For a sketch prior: a folder of free-hand drawings, each named after its class (ankle-boot-1.png) or in a folder named so; scores the share of samples of the drawn class and how well they fill the drawn outline."),
    drawing_samples: int = typer.Option(8, "--drawing-samples", min=1, help="Samples per drawing and mode (sketch alone, sketch + class) for --drawings."),
    guidance: float = GuidanceOpt,
    class_guidance: Optional[float] = ClassGuidanceOpt,
    temperature: float = TempOpt,
    top_k: Optional[int] = TopKOpt,
    top_p: Optional[float] = TopPOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the samples, completions and real images drawn: fixed, so an evaluation repeats."),
    steps: Optional[int] = StepsDecodeOpt,
    sweep: bool = typer.Option(False, "--sweep", help="Also sweep guidance 1, 1.5, 2, 3, 5 at temperatures 1.0 and 0.8."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write eval.json (default: in the prior's run, or the tokenizer's; beside a saved pipeline's parts; runs/eval/USER--NAME.json for a Hub id)."),
    classifier: Optional[Path] = typer.Option(None, "--classifier", help="Cache of evaluation classifiers (default: $VQ_CACHE/classifier, else ~/.cache/vq/classifier, shared by every directory)."),
    fid: bool = typer.Option(False, "--fid/--no-fid", help="Also compute FID and Inception Score the way the field does (torch-fidelity's Inception-v3), samples against the test split; skipped, with how to get the weights, when they cannot be had."),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights", help="torch-fidelity's Inception-v3 weights file (weights-inception-2015-12-05-6726825d.pth), for --fid on a machine that cannot download it."),
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
):
    """Measure every stage: reconstruction (MSE, PSNR, SSIM, codebook use), prior NLL, and how
    class-like samples and completions are, judged by a classifier trained on the dataset, beside
    the same figures for real images."""
    from vq.pipeline.evaluate.run import EvalJob, evaluate_run
    from vq.pipeline.generate.pipeline import call_options

    options = call_options(guidance, temperature, top_k, top_p, seed, steps, class_guidance=class_guidance)
    job = EvalJob(tokenizer, prior, pipeline, per_class, options, complete_images, sketch_images, SWEEP if sweep else [],
                  fid, inception_weights, drawings, drawing_samples, device or "auto", classifier, out)
    report, written = evaluate_run(job, console=err)
    print_tables(report.tables(str(written)))
