"""`vq fit-tokenizer`, `vq export-codes`, `vq fit-prior`: options -> a fit job -> one library call
-> a short summary."""

import json
from pathlib import Path
from typing import Optional

import typer

from vq.cli.app import app, err, friendly, summary
from vq.cli.options import (CODES_HELP, TRAIN_FLAGS, BatchOpt, ChannelsOpt, CompileOpt, ConfigOpt, DataOpt, DeterministicOpt,
                            DeviceOpt, EpochsOpt, EvalEveryOpt, ForceOpt, ImageColOpt, ImageSizeOpt, LabelColOpt, LimitOpt,
                            LogEveryOpt, LrOpt, PrecisionOpt, PresetOpt, PrintConfigOpt, ResumeOpt, SaveEveryOpt, SeedOpt,
                            SkipNonfiniteOpt, StepsOpt, StreamingOpt, StrictOpt, ThreadsOpt, TimeBudgetOpt, TokenizerDirOpt,
                            WandbOpt, WorkersOpt, check, conditions, library_choice, prior_kinds, quantizers, sketch_styles,
                            tokenizer_kinds)


def given(**kw) -> dict:
    """The settings a user gave: None is unset (the preset or config file decides); False is kept,
    so --no-wandb switches off what a config file switched on."""
    return {k: v for k, v in kw.items() if v is not None}


def train_flags(values: dict) -> dict:
    """The train config's flags a command was given, from its locals (`compile_`: --compile)."""
    return given(**{k: values.get(k, values.get(f"{k}_")) for k in TRAIN_FLAGS})


@app.command("fit-tokenizer")
@friendly
def fit_tokenizer(
    model: str = typer.Option("vqvae", "--model", "-m", parser=library_choice("a tokenizer kind", tokenizer_kinds), help="The tokenizer kind: vqvae (default), vae, cvae (a class-conditional VAE), or one a package adds; `vq kinds` lists them."),
    data: str = DataOpt,
    preset: str = PresetOpt,
    out: Path = typer.Option(Path("runs/tokenizer"), "--out", "-o", help="Run directory to write."),
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    batch_size: Optional[int] = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    epochs: Optional[float] = EpochsOpt,
    steps: Optional[int] = StepsOpt,
    lr: Optional[float] = LrOpt,
    seed: Optional[int] = SeedOpt,
    eval_every: Optional[int] = EvalEveryOpt,
    precision: Optional[str] = PrecisionOpt,
    quantizer: Optional[str] = typer.Option(None, "--quantizer", parser=library_choice("a quantizer", quantizers), help="VQ-VAE: ema (a learned codebook, EMA updates), l2 (the same on unit vectors, low-dimensional codes) or fsq (finite scalar quantization: no codebook, K = the product of its levels)."),
    codebook_size: Optional[int] = typer.Option(None, "--codebook-size", min=2, max=65536, help="VQ-VAE: number of codes K."),
    downsample: Optional[int] = typer.Option(None, "--downsample", callback=check(lambda d: d >= 1 and not d & (d - 1), "a power of two"), help="Total stride, a power of two: 4 gives 7x7 codes at 28 px, 2 gives 14x14."),
    image_size: Optional[int] = ImageSizeOpt,
    channels: Optional[int] = ChannelsOpt,
    image_column: Optional[str] = ImageColOpt,
    label_column: Optional[str] = LabelColOpt,
    limit: Optional[int] = LimitOpt,
    streaming: bool = StreamingOpt,
    strict: bool = StrictOpt,
    time_budget: Optional[str] = TimeBudgetOpt,
    save_every: Optional[str] = SaveEveryOpt,
    skip_nonfinite: Optional[bool] = SkipNonfiniteOpt,
    log_every: Optional[int] = LogEveryOpt,
    deterministic: Optional[bool] = DeterministicOpt,
    compile_: Optional[bool] = CompileOpt,
    wandb: Optional[bool] = WandbOpt,
    resume: bool = ResumeOpt,
    force: bool = ForceOpt,
    show_config: bool = PrintConfigOpt,
):
    """Train a tokenizer (VQ-VAE, VAE or conditional VAE) on images; writes OUT/config.json,
    OUT/model.safetensors and OUT/reconstructions.png.

    On N GPUs (or N CPU processes): torchrun --nproc-per-node N --no-python vq fit-tokenizer ..."""
    from vq.pipeline.kinds import tokenizer_class
    from vq.pipeline.records import DataOptions, TokenizerRecord
    from vq.pipeline.train.fit_tokenizer import fit_tokenizer as run
    from vq.pipeline.train.jobs import FitJob, resolved_config

    job = FitJob(kind=model, preset=preset.lower(), out=out, config_file=config, resume=resume, force=force,
                 data=DataOptions(data, image_size, channels, image_column, label_column, limit, streaming, strict),
                 model_overrides=given(quantizer=quantizer, codebook_size=codebook_size, downsample=downsample),
                 train_overrides=train_flags(locals()))
    if show_config:
        from_data = {"channels": channels, "image_size": image_size, "num_classes": None}
        print(json.dumps(resolved_config(job, tokenizer_class(model), TokenizerRecord, from_data), indent=2))
        return
    result = run(job, console=err)
    if not result.main:  # under torchrun, rank 0 speaks for all
        return
    summary(f"tokenizer -> {result.out}", {
        "model": model, "steps": result.step, "device": result.device, "processes": result.world_size,
        "train seconds": round(result.seconds, 1), "wall seconds": round(result.wall_seconds, 1),
        "images/s": round(result.samples_per_second or 0, 1), **({"skipped images": result.skipped} if result.skipped else {}),
        **({"skipped non-finite batches": result.nonfinite_skipped} if result.nonfinite_skipped else {}),
        **{f"test {k}": v for k, v in result.metrics.items()},
        "reconstructions": str(Path(result.out) / "reconstructions.png"),
    })


@app.command("export-codes")
@friendly
def export_codes(
    tokenizer: Path = TokenizerDirOpt,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=CODES_HELP),
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Images encoded at once, per process."),
    workers: Optional[int] = WorkersOpt,
    force: bool = typer.Option(False, "--force", help="Re-export even if OUT holds codes (of any tokenizer)."),
    sketches: bool = typer.Option(False, "--sketches", help="Also store every image's edge map, for a sketch prior (added to an export that lacks them; fit-prior --condition sketch does this itself)."),
):
    """Encode the tokenizer's dataset (train and test) into compact code-map shards for the prior;
    an export of the same tokenizer is reused, an interrupted one resumed. Under torchrun the
    shards are shared out over the processes."""
    from vq.pipeline.codes.export import export_codes as run
    from vq.pipeline.codes.maps import default_codes_dir
    from vq.pipeline.distributed import is_main

    record = run(tokenizer, out, device=device or "auto", batch_size=batch_size, force=force, workers=workers,
                 sketches=sketches, console=err)
    if is_main():
        summary(f"codes -> {out or default_codes_dir(tokenizer)}", {
            "tokenizer": record.tokenizer_fingerprint, "grid": "x".join(map(str, record.code_shape)),
            "codebook": record.codebook_size, **{f"{k} maps": v for k, v in record.splits.items()}})


@app.command("fit-prior")
@friendly
def fit_prior(
    tokenizer: Path = TokenizerDirOpt,
    kind: str = typer.Option("autoregressive", "--kind", parser=library_choice("a prior kind", prior_kinds), help="autoregressive (default): one code at a time in raster order, with an exact likelihood; masked: MaskGIT, all codes at once over a few steps, completing any region natively; or one a package adds (`vq kinds` lists them)."),
    codes: Optional[Path] = typer.Option(None, "--codes", help=CODES_HELP),
    out: Path = typer.Option(Path("runs/prior"), "--out", "-o", help="Run directory to write."),
    preset: str = PresetOpt,
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    batch_size: Optional[int] = BatchOpt,
    epochs: Optional[float] = EpochsOpt,
    steps: Optional[int] = StepsOpt,
    lr: Optional[float] = LrOpt,
    seed: Optional[int] = SeedOpt,
    eval_every: Optional[int] = EvalEveryOpt,
    precision: Optional[str] = PrecisionOpt,
    dim: Optional[int] = typer.Option(None, "--dim", min=1, help="Transformer width."),
    depth: Optional[int] = typer.Option(None, "--depth", min=1, help="Transformer layers."),
    condition: Optional[str] = typer.Option(None, "--condition", parser=library_choice("a condition", conditions), help="class (default), or sketch: the prior also reads each image's edge map, so `vq sample --sketch drawing.png` follows a drawing (the codes are exported again with sketches)."),
    kv_heads: Optional[int] = typer.Option(None, "--kv-heads", min=1, help="Key/value heads shared by the query heads (grouped-query attention): a smaller KV cache for faster sampling; default one per head."),
    sketch_styles_: Optional[str] = typer.Option(None, "--sketch-styles", parser=library_choice("a sketch style", sketch_styles), help="What a sketch prior trains on: free (the default: per row, the exact edge map, or a free-hand sketch made from it: the edge map, the object's outline or a simplified sketch, deformed like a hand's drawing; drawings are then read as drawings, edge maps as edge maps) or edges (the edge maps alone, as sketch priors before)."),
    workers: Optional[int] = WorkersOpt,
    time_budget: Optional[str] = TimeBudgetOpt,
    save_every: Optional[str] = SaveEveryOpt,
    skip_nonfinite: Optional[bool] = SkipNonfiniteOpt,
    log_every: Optional[int] = LogEveryOpt,
    deterministic: Optional[bool] = DeterministicOpt,
    compile_: Optional[bool] = CompileOpt,
    wandb: Optional[bool] = WandbOpt,
    resume: bool = ResumeOpt,
    force: bool = ForceOpt,
    show_config: bool = PrintConfigOpt,
):
    """Train a class-conditional transformer prior over the tokenizer's codes (exporting them
    first if needed), autoregressive or masked; keeps the checkpoint with the best validation
    score (NLL; for a masked prior, masked-code cross-entropy).

    On N GPUs: torchrun --nproc-per-node N --no-python vq fit-prior ..."""
    from vq.pipeline.kinds import prior_class
    from vq.pipeline.records import PriorRecord
    from vq.pipeline.train.fit_prior import fit_prior as run
    from vq.pipeline.train.jobs import FitJob, resolved_config

    job = FitJob(kind=kind, tokenizer=tokenizer, codes=codes, out=out, preset=preset.lower(), config_file=config, resume=resume,
                 force=force, model_overrides=given(dim=dim, depth=depth, condition=condition, kv_heads=kv_heads,
                                                    sketch_styles=sketch_styles_), train_overrides=train_flags(locals()))
    if show_config:
        from_data = dict.fromkeys(("codebook_size", "height", "width", "num_classes", "sketch_size"))
        print(json.dumps(resolved_config(job, prior_class(kind), PriorRecord, from_data), indent=2))
        return
    result = run(job, console=err)
    if not result.main:  # under torchrun, rank 0 speaks for all
        return
    held_out = prior_class(kind).held_out
    summary(f"prior -> {result.out}", {
        "kind": kind, "steps": result.step, "device": result.device, "processes": result.world_size,
        "train seconds": round(result.seconds, 1), "wall seconds": round(result.wall_seconds, 1),
        "tokens/s": round(result.tokens_per_second or 0, 1),
        **({"skipped non-finite batches": result.nonfinite_skipped} if result.nonfinite_skipped else {}),
        f"best {held_out.val.replace('_', ' ')}": result.best,
        **{k.replace("_", " "): v for k, v in result.metrics.items()},
    })
