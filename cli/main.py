"""`vq`: options -> a job config -> one pipeline call -> a short rich summary. No torch here."""

import functools
import inspect
import json
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

warnings.filterwarnings("ignore", category=FutureWarning, module="x_transformers")
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)

app = typer.Typer(
    help="vq: train an image tokenizer, a transformer prior over its codes, and sample or complete images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def print_error(message: str) -> None:
    """Every refusal of vq, from the pipeline or from the command line, is one line: `error: ...`."""
    err.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True, highlight=False)


def prose(doc: str | None) -> str | None:
    """A docstring as --help shows it: each paragraph one line, which rich wraps at the terminal's
    width (the docstring's own line breaks would otherwise break sentences mid-line)."""
    if doc is None:
        return None
    paragraphs = [" ".join(line.strip() for line in p.splitlines()) for p in inspect.cleandoc(doc).split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


def friendly(fn):
    """Turn a VQError into one line on stderr and its exit code, never a traceback; and give the
    command its help as prose."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from vq.pipeline.runs import VQError

        try:
            return fn(*args, **kwargs)
        except VQError as e:
            print_error(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/red]")
            raise typer.Exit(130) from None
        except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
            # A path given for output that is a file where a folder belongs, or the reverse.
            print_error(f"cannot use {e.filename}: {e.strerror.lower()}; choose another path")
            raise typer.Exit(1) from None
        finally:
            if "vq.pipeline.distributed" in sys.modules:  # leave torchrun's process group cleanly
                sys.modules["vq.pipeline.distributed"].teardown()

    wrapper.__doc__ = prose(fn.__doc__)
    return wrapper


def summary(title: str, rows: dict) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    for k, v in rows.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)


def choices(name: str, *values: str) -> type[Enum]:
    """A fixed set of values for an option, listed by --help and matched case-insensitively."""
    return Enum(name, {v: v for v in values}, type=str)


def check(ok, rule: str):
    """A typer callback refusing a given value (None is unset) for which ok(value) is false."""

    def callback(value):
        if value is not None and not ok(value):
            raise typer.BadParameter(f"{value} is not {rule}")
        return value

    return callback


TokenizerModel = choices("TokenizerModel", "vqvae", "vae", "cvae")  # = vq.stage1_vqvae.TOKENIZERS
Preset = choices("Preset", "demo", "full")  # = vq.pipeline.presets
Precision = choices("Precision", "auto", "bf16", "fp32")
Keep = choices("Keep", "top", "bottom", "left", "right")
Quantizer = choices("Quantizer", "ema", "l2", "fsq")  # = vq.stage1_vqvae.config.QUANTIZERS
Condition = choices("Condition", "class", "sketch")  # = vq.stage2_prior.config.PriorConfig.condition
SketchStyles = choices("SketchStyles", "free", "edges")  # = PriorConfig.sketch_styles
PriorKind = choices("PriorKind", "autoregressive", "masked")  # = vq.stage2_prior.PRIOR_KINDS

DataOpt = typer.Option(None, "--data", "-d", help="fashion-mnist (default), cifar10, a folder of class sub-folders, a saved Hugging Face dataset, or a hub id. Folders and datasets too big for memory are decoded on the fly. On --resume: the run's own data.")
StreamingOpt = typer.Option(False, "--streaming", help="Read a Hugging Face dataset as a stream (hub datasets larger than the disk); shards are split over processes and workers.")
StrictOpt = typer.Option(False, "--strict", help="Stop at the first unreadable image instead of skipping and counting it.")
ImageSizeOpt = typer.Option(None, "--image-size", min=1, help="Centre-crop and resize images to this many pixels a side (default: the images' own size, when they all share one square size).")
ChannelsOpt = typer.Option(None, "--channels", callback=check(lambda c: c in (1, 3), "1 or 3"), help="1 (grey) or 3 (RGB); default: from the first image.")
ImageColOpt = typer.Option(None, "--image-column", help="Image column of a Hugging Face dataset (default: detected).")
LabelColOpt = typer.Option(None, "--label-column", help="Label column of a Hugging Face dataset (default: detected).")
LimitOpt = typer.Option(None, "--limit", min=1, help="Use only the first N images of each split (quick trials).")
PresetOpt = typer.Option(Preset.demo, "--preset", "-p", case_sensitive=False, help="demo: minutes on a laptop CPU; full: for one GPU. Both are sized for 28 px images (demo: 7x7 codes, full: 14x14); other sizes keep the preset's --downsample.")
ConfigOpt = typer.Option(None, "--config", help="TOML or JSON file with \\[model] and \\[train] tables; flags override it.")
DeviceOpt = typer.Option(None, "--device", help="auto (default), cpu, cuda, cuda:N or mps.")
BatchOpt = typer.Option(None, "--batch-size", "-b", min=1, help="Global batch size: under torchrun each of N processes takes batch-size / N.")
WorkersOpt = typer.Option(None, "--workers", min=0, help="DataLoader processes that decode images, per training process (default: from the CPU count).")
SaveEveryOpt = typer.Option(None, "--save-every", help="Save the whole training state every N steps (500) or every so often (10m, the default), so a killed run (kill -9, a lost node) resumes with --resume losing at most that much.")
SkipNonfiniteOpt = typer.Option(None, "--skip-nonfinite/--no-skip-nonfinite", help="Skip (and count) a batch whose loss or gradients are not finite, instead of stopping the run; costs one device sync per step.")
TimeBudgetOpt = typer.Option(None, "--time-budget", help="Train until this much time is spent (e.g. 90s, 5m, 1h), with the learning-rate schedule fitted to the steps it allows; wins over --steps.")
LogEveryOpt = typer.Option(None, "--log-every", min=1, help="Read the loss (and check it is finite) every N steps; each read waits for the GPU.")
DeterministicOpt = typer.Option(None, "--deterministic/--no-deterministic", help="Deterministic kernels: a rerun or a resumed run gives bit-identical weights (slower on GPUs). Default: the config file's, else off.")
CompileOpt = typer.Option(None, "--compile/--no-compile", help="torch.compile the model for training (the plain weights are saved). Default: the config file's, else off.")
EpochsOpt = typer.Option(None, "--epochs", min=0, help="Train for this many passes over the data.")
StepsOpt = typer.Option(None, "--steps", min=0, help="Train for this many optimizer steps (wins over --epochs).")
LrOpt = typer.Option(None, "--lr", min=0, help="Peak learning rate (AdamW, warm-up then cosine).")
SeedOpt = typer.Option(None, "--seed", help="Random seed of the initial weights, data order and dropout (default: the config file's, else 0).")
EvalEveryOpt = typer.Option(None, "--eval-every", min=1, help="Evaluate on the test split and checkpoint every N steps.")
PrecisionOpt = typer.Option(None, "--precision", case_sensitive=False, help="auto (bf16 on CUDA, else fp32), bf16 or fp32.")
WandbOpt = typer.Option(None, "--wandb/--no-wandb", help="Log to Weights & Biases (offline unless WANDB_MODE says otherwise). Default: the config file's, else off.")
ResumeOpt = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint.")
ForceOpt = typer.Option(False, "--force", help="Replace an existing run in --out.")
PrintConfigOpt = typer.Option(False, "--print-config", help="Print the resolved configuration (preset, then --config, then flags; with --resume the run's own, then flags) as JSON and exit, without reading data or writing anything.")


@app.callback()
def _root() -> None:
    """vq: train an image tokenizer, a transformer prior over its codes, and sample or complete images."""


def train_overrides(**kw) -> dict:
    """The settings a user gave: None is unset (the preset or config file decides); False is kept,
    so --no-wandb switches off what a config file switched on."""
    return {k: v for k, v in kw.items() if v is not None}


def print_config(job, kind: str, presets: dict, model: str, config_class, from_data: dict) -> None:
    """--print-config: the configuration a fit would run with, as JSON on stdout. No data is read,
    no model built, nothing written. Model fields that the data (or the codes) decide are null."""
    from vq.pipeline.checkpoint import read_info
    from vq.pipeline.configs import build, to_dict
    from vq.pipeline.runs import VQError
    from vq.pipeline.jobs import job_configs

    saved = read_info(job.out, kind) if job.resume else None
    if saved and saved["model"] != model:
        raise VQError(f"{job.out} holds a {saved['model']} {kind}; resume it with --model {saved['model']}")
    train, layers = job_configs(job, presets, model, config_class, saved)
    config = to_dict(build(config_class, *layers, where="model config"))
    if saved is None:  # what the data decides, unless the config file or a flag set it
        config.update({k: v for k, v in from_data.items() if k in config and not any(k in layer for layer in layers[1:])})
    print(json.dumps({"kind": kind, "model": model, "preset": saved.get("preset") if saved else job.preset,
                      "model_config": config, "train_config": to_dict(train),
                      "from_data": sorted(k for k in from_data if k in config and config[k] is None)}, indent=2))


@app.command("fit-tokenizer")
@friendly
def fit_tokenizer(
    model: TokenizerModel = typer.Option(TokenizerModel.vqvae, "--model", "-m", case_sensitive=False, help="vqvae, vae or cvae (class-conditional VAE)."),
    data: str = DataOpt,
    preset: Preset = PresetOpt,
    out: Path = typer.Option(Path("runs/tokenizer"), "--out", "-o", help="Run directory to write."),
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = DeviceOpt,
    batch_size: Optional[int] = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    epochs: Optional[float] = EpochsOpt,
    steps: Optional[int] = StepsOpt,
    lr: Optional[float] = LrOpt,
    seed: Optional[int] = SeedOpt,
    eval_every: Optional[int] = EvalEveryOpt,
    precision: Optional[Precision] = PrecisionOpt,
    quantizer: Optional[Quantizer] = typer.Option(None, "--quantizer", case_sensitive=False, help="VQ-VAE: ema (a learned codebook, EMA updates), l2 (the same on unit vectors, low-dimensional codes) or fsq (finite scalar quantization: no codebook, K = the product of its levels)."),
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
    from vq.pipeline.data import DataOptions
    from vq.pipeline.tokenizer import TokenizerJob, fit_tokenizer as run

    job = TokenizerJob(
        model=model.value, preset=preset.value, out=out, config_file=config, resume=resume, force=force,
        data=DataOptions(data, image_size, channels, image_column, label_column, limit, streaming, strict),
        model_overrides=train_overrides(quantizer=quantizer.value if quantizer else None, codebook_size=codebook_size, downsample=downsample),
        train_overrides=train_overrides(device=device, batch_size=batch_size, workers=workers, epochs=epochs,
                                        steps=steps, lr=lr, seed=seed, eval_every=eval_every, time_budget=time_budget, save_every=save_every, skip_nonfinite=skip_nonfinite,
                                        log_every=log_every, precision=precision and precision.value, compile=compile_,
                                        deterministic=deterministic, wandb=wandb),
    )
    if show_config:
        from vq.pipeline.presets import TOKENIZER_PRESETS
        from vq.pipeline.tokenizer import tokenizer_class

        return print_config(job, "tokenizer", TOKENIZER_PRESETS, job.model, tokenizer_class(job.model).config_class,
                            {"channels": channels, "image_size": image_size, "num_classes": None})
    result = run(job, console=err)
    if not result.main:  # under torchrun, rank 0 speaks for all
        return
    summary(f"tokenizer -> {result.out}", {
        "model": job.model, "steps": result.step, "device": result.device, "processes": result.world_size,
        "train seconds": round(result.seconds, 1), "wall seconds": round(result.wall_seconds, 1),
        "images/s": round(result.samples_per_second or 0, 1), **({"skipped images": result.skipped} if result.skipped else {}),
        **({"skipped non-finite batches": result.nonfinite_skipped} if result.nonfinite_skipped else {}),
        **{f"test {k}": v for k, v in result.metrics.items()},
        "reconstructions": str(Path(result.out) / "reconstructions.png"),
    })


TokenizerDirOpt = typer.Option(Path("runs/tokenizer"), "--tokenizer", "-t", help="Tokenizer run directory.")
PriorDirOpt = typer.Option(Path("runs/prior"), "--prior", help="Prior run directory (VQ-VAE tokenizers only).")
PipelineOpt = typer.Option(None, "--pipeline", help="A saved pipeline (a folder written by `vq save`) or a Hugging Face Hub id (user/name); stands for --tokenizer and --prior.")
RevisionOpt = typer.Option(None, "--revision", help="With a Hub id: the branch, tag or commit to load (default: main).")
CODES_HELP = "Directory of exported code maps (default: TOKENIZER/codes, so each tokenizer keeps its own)."
GuidanceOpt = typer.Option(2.0, "--guidance", "-g", min=0, help="Classifier-free guidance scale: 1 = none; higher = more typical of the class, less varied.")
ClassGuidanceOpt = typer.Option(None, "--class-guidance", min=0, help="With a sketch and a class: the class's own guidance scale on top of the sketch's (--guidance); higher = more of the class, less tied to the lines (default: twice --guidance for a drawing, none of its own at --guidance 1 or less; test sketches in eval: --guidance).")
TempOpt = typer.Option(1.0, "--temperature", min=0, help="Sampling temperature (0 = greedy).")
TopKOpt = typer.Option(None, "--top-k", min=1, help="Sample only among the k likeliest codes.")
TopPOpt = typer.Option(None, "--top-p", callback=check(lambda p: 0 < p <= 1, "in (0, 1]"), help="Sample only within the smallest set of codes holding this probability, in (0, 1].")
StepsDecodeOpt = typer.Option(None, "--steps", min=1, help="A masked prior's decoding iterations (default: its own, 8); an autoregressive prior draws one code per step and refuses it.")
SampleSeedOpt = typer.Option(None, "--seed", help="Seed: the same seed gives the same images (default: a fresh one, printed so it can be repeated).")


@app.command("export-codes")
@friendly
def export_codes(
    tokenizer: Path = TokenizerDirOpt,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=CODES_HELP),
    device: Optional[str] = DeviceOpt,
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Images encoded at once, per process."),
    workers: Optional[int] = WorkersOpt,
    force: bool = typer.Option(False, "--force", help="Re-export even if OUT holds codes (of any tokenizer)."),
    sketches: bool = typer.Option(False, "--sketches", help="Also store every image's edge map, for a sketch prior (added to an export that lacks them; fit-prior --condition sketch does this itself)."),
):
    """Encode the tokenizer's dataset (train and test) into compact code-map shards for the prior;
    an export of the same tokenizer is reused, an interrupted one resumed. Under torchrun the
    shards are shared out over the processes."""
    from vq.pipeline.distributed import is_main
    from vq.pipeline.export import default_codes_dir, export_codes as run

    meta = run(tokenizer, out, device=device or "auto", batch_size=batch_size, force=force, workers=workers,
               sketches=sketches, console=err)
    if is_main():
        summary(f"codes -> {out or default_codes_dir(tokenizer)}", {
            "tokenizer": meta["tokenizer_fingerprint"], "grid": "x".join(map(str, meta["grid"])),
            "codebook": meta["codebook_size"], **{f"{k} maps": v for k, v in meta["splits"].items()}})


@app.command("fit-prior")
@friendly
def fit_prior(
    tokenizer: Path = TokenizerDirOpt,
    kind: PriorKind = typer.Option(PriorKind.autoregressive, "--kind", case_sensitive=False, help="autoregressive: one code at a time in raster order, with an exact likelihood; masked: MaskGIT, all codes at once over a few steps, completing any region natively."),
    codes: Optional[Path] = typer.Option(None, "--codes", help=CODES_HELP),
    out: Path = typer.Option(Path("runs/prior"), "--out", "-o", help="Run directory to write."),
    preset: Preset = PresetOpt,
    config: Optional[Path] = ConfigOpt,
    device: Optional[str] = DeviceOpt,
    batch_size: Optional[int] = BatchOpt,
    epochs: Optional[float] = EpochsOpt,
    steps: Optional[int] = StepsOpt,
    lr: Optional[float] = LrOpt,
    seed: Optional[int] = SeedOpt,
    eval_every: Optional[int] = EvalEveryOpt,
    precision: Optional[Precision] = PrecisionOpt,
    dim: Optional[int] = typer.Option(None, "--dim", min=1, help="Transformer width."),
    depth: Optional[int] = typer.Option(None, "--depth", min=1, help="Transformer layers."),
    condition: Optional[Condition] = typer.Option(None, "--condition", case_sensitive=False, help="class (default), or sketch: the prior also reads each image's edge map, so `vq sample --sketch drawing.png` follows a drawing (the codes are exported again with sketches)."),
    kv_heads: Optional[int] = typer.Option(None, "--kv-heads", min=1, help="Key/value heads shared by the query heads (grouped-query attention): a smaller KV cache for faster sampling; default one per head."),
    sketch_styles: Optional[SketchStyles] = typer.Option(None, "--sketch-styles", case_sensitive=False, help="What a sketch prior trains on: free (the default: per row, the exact edge map, or a free-hand sketch made from it: the edge map, the object's outline or a simplified sketch, deformed like a hand's drawing; drawings are then read as drawings, edge maps as edge maps) or edges (the edge maps alone, as sketch priors before)."),
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
    from vq.pipeline.prior import PriorJob, fit_prior as run

    job = PriorJob(
        tokenizer=tokenizer, model=kind.value, codes=codes, out=out, preset=preset.value, config_file=config, resume=resume, force=force,
        model_overrides=train_overrides(dim=dim, depth=depth, condition=condition and condition.value, kv_heads=kv_heads,
                                        sketch_styles=sketch_styles and sketch_styles.value),
        train_overrides=train_overrides(device=device, batch_size=batch_size, epochs=epochs, steps=steps, lr=lr,
                                        seed=seed, eval_every=eval_every, precision=precision and precision.value,
                                        workers=workers, time_budget=time_budget, save_every=save_every, skip_nonfinite=skip_nonfinite, log_every=log_every,
                                        compile=compile_, deterministic=deterministic, wandb=wandb),
    )
    if show_config:
        from vq.pipeline.presets import PRIOR_PRESETS
        from vq.pipeline.prior import prior_class

        cls = prior_class(job.model)
        return print_config(job, "prior", PRIOR_PRESETS, cls.name, cls.config_class,
                            dict.fromkeys(("codebook_size", "height", "width", "num_classes", "sketch_size")))
    result = run(job, console=err)
    if not result.main:  # under torchrun, rank 0 speaks for all
        return
    summary(f"prior -> {result.out}", {
        "steps": result.step, "device": result.device, "processes": result.world_size,
        "train seconds": round(result.seconds, 1), "wall seconds": round(result.wall_seconds, 1),
        "tokens/s": round(result.tokens_per_second or 0, 1),
        **({"skipped non-finite batches": result.nonfinite_skipped} if result.nonfinite_skipped else {}),
        # A masked prior's validation figure is its masked-code cross-entropy, not a likelihood.
        ("best val bits/token" if "test_bits_per_token" in result.metrics else "best val masked bits/code"): result.best,
        **{k.replace("_", " "): v for k, v in result.metrics.items()},
    })


@app.command("sample")
@friendly
def sample(
    class_: Optional[str] = typer.Option(None, "--class", "-c", help="Class name (case-insensitive) or index; default: one row per class."),
    n: int = typer.Option(16, "--per-class", "-n", min=1, help="Images to make of each class (of --class alone when given, or of --sketch)."),
    sketch: Optional[Path] = typer.Option(None, "--sketch", "-s", help="A drawing to follow (any size and mode, dark lines on light or light on dark), for a prior trained with --condition sketch; with --class, of that class."),
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
    force: bool = typer.Option(False, "--force", help="Overwrite same-named files in --out."),
):
    """Sample new images: prior -> decoder for a VQ-VAE, the latent prior for a VAE or conditional
    VAE. Writes one PNG per image (<class>_<i>.png) and grid.png; with --sketch, also the sketch as
    the prior reads it (sketch.png), and the images are sketch_<i>.png unless --class is given."""
    from vq.pipeline.generate import SamplingOptions
    from vq.pipeline.outputs import sample_to_folder
    from vq.pipeline.pipeline import fresh_seed

    seed = fresh_seed(seed)
    result = sample_to_folder(tokenizer, prior, class_, n, SamplingOptions(guidance, temperature, top_k, top_p, seed, steps, class_guidance), out,
                              device=device or "auto", force=force, sketch_path=sketch, pipeline=pipeline)
    if "sketch_note" in result:
        err.print(f"{sketch}: {result['sketch_note']}", highlight=False)
    err.print(f"seed {seed} (repeat with --seed {seed})", highlight=False)
    summary(f"samples -> {result['out']}", {"images": result["images"], "classes": ", ".join(result["classes"]),
                                            "seed": seed, "grid": result["grid"]})


@app.command("complete")
@friendly
def complete(
    image: Path = typer.Argument(..., help="A PNG or JPEG of any mode and size."),
    keep: Keep = typer.Option(Keep.top, "--keep", case_sensitive=False, help="Region to keep (or give --mask)."),
    fraction: float = typer.Option(0.5, "--fraction", callback=check(lambda f: 0 < f < 1, "strictly between 0 and 1"), help="Share of the image that --keep keeps, strictly between 0 and 1."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Mask image, white = keep (instead of --keep)."),
    class_: Optional[str] = typer.Option(None, "--class", "-c", help="Class to complete as (default: unconditional)."),
    n: int = typer.Option(8, "--completions", "-n", min=1, help="Completions to make of the input image."),
    candidates: int = typer.Option(8, "--candidates", min=1, help="Draws per completion, ranked by the prior, when known codes follow unknown ones."),
    guidance: float = GuidanceOpt,
    temperature: float = TempOpt,
    top_k: Optional[int] = TopKOpt,
    top_p: Optional[float] = TopPOpt,
    seed: Optional[int] = SampleSeedOpt,
    steps: Optional[int] = StepsDecodeOpt,
    tokenizer: Path = TokenizerDirOpt,
    prior: Path = PriorDirOpt,
    pipeline: Optional[str] = PipelineOpt,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: a new runs/completions/NNN)."),
    device: Optional[str] = DeviceOpt,
    force: bool = typer.Option(False, "--force", help="Overwrite same-named files in --out."),
):
    """Keep part of an image and let the prior invent the rest, N ways. Writes completion_<i>.png,
    masked.png and grid.png (original | masked | completions)."""
    from vq.pipeline.generate import SamplingOptions
    from vq.pipeline.outputs import complete_to_folder
    from vq.pipeline.pipeline import fresh_seed

    seed = fresh_seed(seed)
    result = complete_to_folder(image, tokenizer, prior, keep=keep.value, fraction=fraction, mask_path=mask, class_value=class_,
                                n=n, opts=SamplingOptions(guidance, temperature, top_k, top_p, seed, steps), candidates=candidates,
                                out=out, device=device or "auto", force=force, pipeline=pipeline)
    err.print(f"image: {image} converted {result['converted']}", highlight=False)
    err.print(f"seed {seed} (repeat with --seed {seed})", highlight=False)
    summary(f"completions -> {result['out']}", {"completions": result["completions"],
                                                "known codes": f"{result['known_codes']}/{result['codes']}",
                                                "seed": seed, "grid": result["grid"]})


@app.command("save")
@friendly
def save(
    out: Path = typer.Argument(..., help="The folder to write (empty, or replaced with --force)."),
    tokenizer: Path = TokenizerDirOpt,
    prior: Path = PriorDirOpt,
    name: Optional[str] = typer.Option(None, "--name", help="The Hub id it will have (user/name), for the model card's examples; default: the folder."),
    license: str = typer.Option("mit", "--license", help="The license the model card declares (a Hub license id)."),
    device: Optional[str] = DeviceOpt,
    force: bool = typer.Option(False, "--force", help="Replace what OUT holds."),
):
    """Save two runs as one pipeline folder to share: tokenizer/ and prior/ (config.json +
    model.safetensors each, no training state), model_index.json, a sample grid, the runs' eval.json
    when `vq eval` has run, and a model card README.md that the Hugging Face Hub reads."""
    from vq.pipeline.hub import files_of
    from vq.pipeline.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(tokenizer, prior, device=device or "auto")  # a VAE takes no prior: ignored
    folder = pipe.save_pretrained(out, license=license, name=name, force=force)
    summary(f"pipeline -> {folder}", {"files": ", ".join(files_of(folder)),
                                       "evaluated": "yes" if (folder / "eval.json").exists() else "no (run `vq eval` first)",
                                       "load it": f"vq sample --pipeline {name or folder}"})


@app.command("push")
@friendly
def push(
    repo_id: str = typer.Argument(..., help="The Hub repo to upload to (user/name); created if missing."),
    pipeline: Path = typer.Option(..., "--pipeline", help="A saved pipeline folder (`vq save`)."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    token: Optional[str] = typer.Option(None, "--token", help="A Hub token with write access (default: the one `hf auth login` stored, or HF_TOKEN)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be uploaded, and upload nothing."),
):
    """Upload a saved pipeline folder to the Hugging Face Hub with huggingface_hub (create_repo,
    upload_folder): only the files vq reads (json, safetensors, png, md)."""
    from vq.pipeline.hub import push as run

    result = run(pipeline, repo_id, private=private, token=token, dry_run=dry_run)
    if dry_run:
        print("\n".join(result["files"]))
        err.print(f"dry run: these {len(result['files'])} files would go to {repo_id}; nothing was uploaded", highlight=False)
        return
    summary(f"pushed -> {result['url']}", {"files": len(result["files"]), "commit": result["commit"]})


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
    classifier: Path = typer.Option(Path("runs/classifier"), "--classifier", help="Cache of evaluation classifiers."),
    fid: bool = typer.Option(False, "--fid/--no-fid", help="Also compute FID and Inception Score the way the field does (torch-fidelity's Inception-v3), samples against the test split; skipped, with how to get the weights, when they cannot be had."),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights", help="torch-fidelity's Inception-v3 weights file (weights-inception-2015-12-05-6726825d.pth), for --fid on a machine that cannot download it."),
    device: Optional[str] = DeviceOpt,
):
    """Measure every stage: reconstruction (MSE, PSNR, SSIM, codebook use), prior NLL, and how
    class-like samples and completions are, judged by a classifier trained on the dataset, beside
    the same figures for real images."""
    from vq.pipeline.evaluate import evaluate_run
    from vq.pipeline.generate import SamplingOptions

    r = evaluate_run(tokenizer, prior, per_class=per_class, opts=SamplingOptions(guidance, temperature, top_k, top_p, seed, steps, class_guidance),
                     completions=complete_images, device=device or "auto", classifier_root=classifier, out=out,
                     sweep=SWEEP if sweep else None, sketch_images=sketch_images, pipeline=pipeline,
                     fid=fid, inception_weights=inception_weights, drawings=drawings, drawing_samples=drawing_samples,
                     console=err)
    print_eval(r)


def print_eval(r: dict) -> None:
    stage = Table(title=f"vq eval: {r['tokenizer_model']} on {r['dataset']['spec']} -> {r['out']}", title_justify="left")
    stage.add_column("stage")
    stage.add_column("metric")
    stage.add_column("value", justify="right")
    stage.add_row("classifier", "test accuracy", f"{r['classifier']['test_acc']:.4f}")
    for k, v in r["tokenizer"].items():
        stage.add_row("tokenizer", f"test {k}", f"{v:.4g}")
    if "prior" in r and "skipped" in r["prior"]:
        stage.add_row("prior", "test bits / code token", f"skipped: {r['prior']['skipped']}")
    elif "prior" in r and "test_masked_bits_per_code" in r["prior"]:
        stage.add_row("prior", "test masked-code cross-entropy, bits (not a likelihood)", f"{r['prior']['test_masked_bits_per_code']:.4f}")
    elif "prior" in r:
        stage.add_row("prior", "test bits / code token", f"{r['prior']['test_bits_per_token']:.4f}")
        stage.add_row("prior", "test bits / pixel dim", f"{r['prior']['test_bits_per_dim']:.4f}")
    if "completion" in r:
        c = r["completion"]
        stage.add_row("completion", f"true class kept, with class (n={c['n']})", f"{c['acc_with_class']:.4f}")
        stage.add_row("completion", f"true class kept, unconditional (n={c['n']})", f"{c['acc_unconditional']:.4f}")
    if "fid" in r:
        f = r["fid"]
        official = "" if f.get("standard_weights", True) else ", NOT the released weights: compares with nothing"
        stage.add_row("samples", "FID (Inception-v3)",
                      f"{f['fid']:.3f} (n={f['n_samples']} vs {f['n_reference']}{official})" if "fid" in f else "skipped")
        if "inception_score" in f:
            stage.add_row("samples", "Inception Score", f"{f['inception_score']:.3f} ± {f['inception_score_std']:.3f}")
    console.print(stage)
    s = r["sampling"]
    t = Table(title=f"class accuracy and Fréchet distance to the test split (guidance {s['cfg']}, T {s['temperature']})", title_justify="left")
    for col in ("images", "n", "class acc", "Fréchet dist."):
        t.add_column(col, justify="right" if col != "images" else "left")
    for name, key in (("real train images (floor)", "real_train"), ("reconstructions", "reconstructions"), ("samples", "samples")):
        j = r[key]
        t.add_row(name, str(j["n"]), f"{j['acc']:.4f}" if "acc" in j else "n/a", f"{j['fd']:.3f}")
    console.print(t)
    if r["samples"].get("per_class"):
        pc = Table(title="per class", title_justify="left")
        for col in ("class", "samples acc", "real acc", "samples FD", "real FD"):
            pc.add_column(col, justify="right" if col != "class" else "left")
        for name, v in r["samples"]["per_class"].items():
            real = r["real_train"]["per_class"].get(name, {})
            pc.add_row(name, f"{v['acc']:.3f}", f"{real.get('acc', float('nan')):.3f}", f"{v['fd']:.2f}", f"{real.get('fd', float('nan')):.2f}")
        console.print(pc)
    if r.get("sketch"):
        sk = r["sketch"]
        st = Table(title=f"sketches: edge agreement with {sk['n']} test sketches (F1 at 1 px; guidance {sk['cfg']})", title_justify="left")
        for col in ("images", "edge F1", "class acc", "Fréchet dist."):
            st.add_column(col, justify="right" if col != "images" else "left")
        for name, key in (("sketch + class", "sketch_and_class"), ("sketch alone", "sketch_only"),
                          ("class alone (floor)", "class_only"), ("reconstructions", "reconstructions"),
                          ("real images (the sketches' source)", "real")):
            v = sk[key]
            st.add_row(name, f"{v['edge_f1']:.4f}", f"{v['acc']:.4f}", f"{v['fd']:.3f}")
        console.print(st)
    if r.get("drawings"):
        d = r["drawings"]
        dt = Table(title=f"free-hand drawings: {d['n_drawings']} from {d['dir']}, {d['per_drawing']} samples each "
                         f"(guidance {d['cfg']})", title_justify="left")
        for col in ("samples given", "drawn class seen", "inside the drawing", "drawing covered"):
            dt.add_column(col, justify="right" if col != "samples given" else "left")
        with_class = f"the drawing + its class (class guidance {d['class_cfg']:g}{', framed to it' if d.get('class_boxes') else ''})"
        for name, key in (("the drawing alone", "sketch_only"), (with_class, "sketch_and_class")):
            v = d[key]
            dt.add_row(name, f"{v['acc']:.4f}", f"{v['inside']:.4f}", f"{v['coverage']:.4f}")
        console.print(dt)
    if r.get("sweep"):
        sw = Table(title="guidance sweep", title_justify="left")
        for col in ("guidance", "temperature", "n", "class acc", "Fréchet dist."):
            sw.add_column(col, justify="right")
        for row in r["sweep"]:
            sw.add_row(f"{row['cfg']}", f"{row['temperature']}", str(row["n"]), f"{row['acc']:.4f}", f"{row['fd']:.3f}")
        console.print(sw)


@app.command("serve")
@friendly
def serve(
    tokenizer: Path = TokenizerDirOpt,
    prior: Path = PriorDirOpt,
    pipeline: Optional[str] = PipelineOpt,
    revision: Optional[str] = RevisionOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on: loopback by default, so only this machine can reach the page; 0.0.0.0 opens it to the network."),
    port: int = typer.Option(7860, "--port", min=1, max=65535, help="Port to listen on."),
    max_n: int = typer.Option(64, "--max-n", min=1, max=1024, help="Most images one request may ask for of each class (or completions of one image)."),
    allowed_host: Optional[list[str]] = typer.Option(None, "--allowed-host", help="Another host name the page may be opened under (a proxy's, or this machine's name on the network); repeat for more. Requests to any other name are refused (against DNS rebinding)."),
    device: Optional[str] = DeviceOpt,
):
    """Open the web studio in a browser: sample by class, draw a sketch (for a sketch prior), paint
    the region of an image to redraw, and see what is loaded. Each action is also an API endpoint
    (/sample, /sketch, /complete) for gradio_client. Needs `pip install 'vq\\[serve]'`."""
    from vq.pipeline.serve import serve as run

    def ready(url: str) -> None:
        err.print(f"vq studio on {url} (Ctrl-C to stop)", highlight=False)

    run(tokenizer, prior, pipeline=pipeline, revision=revision, host=host, port=port, device=device or "auto", max_n=max_n,
        allowed_hosts=tuple(allowed_host or ()), on_ready=ready)
    err.print("vq studio stopped", highlight=False)


def main() -> None:
    """`vq`: a mistyped flag or a value out of range is one line on stderr (exit 2), like every other
    refusal; a command's exit code (typer.Exit, or an int it returns) is the process's."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        code = app(prog_name="vq", standalone_mode=False)
    except typer.Exit as e:
        code = e.exit_code
    except typer.Abort:
        code = 130
    except typer.TyperException as e:  # click's UsageError, BadParameter, NoSuchOption, ...
        code = e.exit_code
        if type(e).__name__ != "NoArgsIsHelpError":  # plain `vq` has printed its help already
            ctx = getattr(e, "ctx", None)
            message = e.format_message().replace("Value error, ", "")  # pydantic's prefix to a refused choice
            print_error(f"{message} (see {ctx.command_path if ctx else 'vq'} --help)")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
