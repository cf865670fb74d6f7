"""Stage 1 as a job: data -> tokenizer -> trained checkpoint, test metrics and a reconstruction grid."""

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from vq.pipeline import distributed as dist
from vq.pipeline.checkpoint import check_state, load_checkpoint, read_info, save_checkpoint
from vq.pipeline.configs import build, to_dict
from vq.pipeline.data import DataOptions, ImageData, data_options_to_store, image_batch, saved_data_options
from vq.pipeline.images import grid, save_grid
from vq.pipeline.jobs import job_configs, new_length
from vq.pipeline.loader import EvalImages, Skipped
from vq.pipeline.stage_scores import evaluate_tokenizer, reconstruction_grid
from vq.pipeline.presets import TOKENIZER_PRESETS
from vq.pipeline.runs import STATE_FILE, VQError, check_run_dir, run_lock
from vq.pipeline.device import resolve_device, seed_everything
from vq.pipeline.trainer import FitResult, fit
from vq.stage1_vqvae import TOKENIZERS
from vq.stage1_vqvae.losses import check_perceptual


@dataclass
class TokenizerJob:
    model: str = "vqvae"
    preset: str = "demo"
    out: Path = Path("runs/tokenizer")
    data: DataOptions = field(default_factory=DataOptions)
    config_file: Path | None = None
    model_overrides: dict = field(default_factory=dict)
    train_overrides: dict = field(default_factory=dict)
    resume: bool = False
    force: bool = False


def tokenizer_class(name: str):
    if name not in TOKENIZERS:
        raise VQError(f"unknown model '{name}'; choose one of {', '.join(TOKENIZERS)}")
    return TOKENIZERS[name]


def build_tokenizer(cls, data: ImageData, layers: tuple[dict, ...]):
    """The model config: preset, then what the data dictates, then the file and the flags."""
    from_data = {"channels": data.channels, "image_size": data.image_size}
    if cls.conditional:
        from_data["num_classes"] = len(data.class_names)
    config = build(cls.config_class, layers[0], from_data, *layers[1:], where="model config")
    try:
        return cls(config)
    except ValueError as e:
        raise VQError(f"{e}; pass --image-size or change the model config") from None


def fit_tokenizer(job: TokenizerJob, console: Console | None = None) -> FitResult:
    console = console or Console(stderr=True)
    cls = tokenizer_class(job.model)
    check_run_dir(job.out, resume=job.resume, force=job.force, what="tokenizer")
    saved = None
    if job.resume and (job.out / "config.json").exists():
        saved = read_info(job.out, "tokenizer")
        if saved["model"] != cls.name:
            raise VQError(f"{job.out} holds a {saved['model']} tokenizer; resume it with --model {saved['model']}")
    if job.resume:
        check_state(job.out / STATE_FILE, cls.name)
    train_cfg, model_layers = job_configs(job, TOKENIZER_PRESETS, job.model, cls.config_class, saved)
    merged = {k: v for layer in model_layers for k, v in layer.items()}
    try:  # before any data is loaded
        check_perceptual(merged.get("perceptual", "none"), merged.get("lpips_weights"))
    except FileNotFoundError as e:
        raise VQError(str(e)) from None
    device = resolve_device(train_cfg.device)
    data_opts = saved_data_options(saved, job.data, job.out) if saved else job.data
    main = dist.is_main()
    dist.setup(device)

    t0 = time.time()
    data = data_opts.load()
    if main:
        console.print(f"data: {data.spec} ({describe_sizes(data)}, {data.channels}x{data.image_size}x{data.image_size}, "
                      f"{len(data.class_names)} classes)")
    seed_everything(train_cfg.seed)
    model = build_tokenizer(cls, data, model_layers)
    params = sum(p.numel() for p in model.parameters())
    if main:
        console.print(f"model: {cls.name}, {params / 1e6:.2f}M parameters"
                      + (f", {model.grid_shape[0]}x{model.grid_shape[1]} codes from {model.config.codebook_size}" if cls.discrete else ""))
    # What export needs to rebuild exactly these splits from the tokenizer alone.
    data_options = {**asdict(data_opts), "spec": data.spec, "image_size": data.image_size, "channels": data.channels}
    data_options.pop("strict")
    data_options = data_options_to_store(data_options, job.out)
    meta = {"class_names": data.class_names, "dataset": data.describe(), "data_options": data_options,
            "train": to_dict(train_cfg), "preset": job.preset}
    skipped = Skipped(strict=data_opts.strict)
    held_out = EvalImages(data.test, train_cfg.workers, skipped)

    def save(m, metrics):
        save_checkpoint(job.out, m, kind="tokenizer", meta={**meta, "metrics": metrics, "eval_images": len(held_out.split)})

    with (run_lock(job.out) if main else nullcontext()):
        result = fit(
            model, data.train,
            prepare=image_batch, evaluate=lambda m: evaluate_tokenizer(m, held_out.split), save=save,
            run_dir=job.out, cfg=train_cfg, resume=job.resume, keep_schedule=not new_length(job),
            preview=lambda m: grid(reconstruction_grid(m, held_out.split), nrow=16), console=console,
            run_config={"model": to_dict(model.config), "train": to_dict(train_cfg), "data": data.describe()},
            skipped=skipped,
        )
        if main:
            save_grid(reconstruction_grid(model, held_out.split), job.out / "reconstructions.png", nrow=16)
    result.wall_seconds = time.time() - t0
    result.out = str(job.out)
    result.parameters = params
    return result


def describe_sizes(data: ImageData) -> str:
    d = data.describe()
    train = "a stream of" + (f" {d['train_size']}" if d["train_size"] else "") if data.columns.get("streaming") else str(d["train_size"])
    return f"{train} train / {d['test_size'] if d['test_size'] is not None else 'streamed'} test"


def load_tokenizer(run_dir: Path, device: str = "cpu"):
    return load_checkpoint(Path(run_dir), "tokenizer", TOKENIZERS, device)
