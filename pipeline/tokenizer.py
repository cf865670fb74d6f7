"""Stage 1 as a job: data -> tokenizer -> trained checkpoint, test metrics and a reconstruction grid."""

import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from vq.pipeline import distributed as dist
from vq.pipeline.checkpoint import check_state, load_checkpoint, read_info, save_checkpoint
from vq.pipeline.configs import build, read_config_file, to_dict
from vq.pipeline.data import ImageData, Split, image_batch, load_image_data
from vq.pipeline.images import grid, save_grid
from vq.pipeline.loader import Skipped, batches, default_workers, materialize
from vq.pipeline.metrics import psnr, ssim
from vq.pipeline.presets import TOKENIZER_PRESETS
from vq.pipeline.runs import STATE_FILE, VQError, check_run_dir, run_lock, stored_path
from vq.pipeline.device import resolve_device, seed_everything
from vq.pipeline.trainer import FitResult, TrainConfig, fit
from vq.stage1_vqvae import TOKENIZERS
from vq.stage1_vqvae.losses import abs_laplacian, check_perceptual

EVAL_PIXELS = 500 * 28 * 28  # images evaluated at once: 500 at 28 px, fewer at larger sizes (flat memory)
EVAL_IMAGES = 10_000  # held-out images evaluated during training (the whole test split when smaller)


@dataclass
class DataOptions:
    spec: str | None = None  # None: fashion-mnist for a new run, the run's own data on --resume
    image_size: int | None = None
    channels: int | None = None
    image_column: str | None = None
    label_column: str | None = None
    limit: int | None = None
    streaming: bool = False
    strict: bool = False

    def load(self) -> ImageData:
        return load_image_data(
            self.spec or "fashion-mnist", image_size=self.image_size, channels=self.channels,
            image_column=self.image_column, label_column=self.label_column, limit=self.limit,
            streaming=self.streaming,
        )


def data_options_to_store(opts: dict, run_dir: Path) -> dict:
    """A local --data path is kept absolute and relative to the run, so both a moved run and a
    project moved with its data find it, from any working directory."""
    spec = opts["spec"]
    if spec and Path(spec).exists():
        opts = {**opts, "spec": str(Path(spec).resolve()), "spec_from_run": stored_path(spec, run_dir)}
    return opts


def stored_data_options(info: dict, run_dir: Path) -> "DataOptions":
    """How a run read its data, with a stored local path resolved (see data_options_to_store)."""
    saved = info["data_options"]
    opts = DataOptions(**{k: v for k, v in saved.items() if k in DataOptions.__dataclass_fields__})
    if saved.get("spec_from_run") and (Path(run_dir) / saved["spec_from_run"]).exists():
        opts.spec = os.path.normpath(Path(run_dir) / saved["spec_from_run"])
    return opts


def saved_data_options(info: dict, given: "DataOptions", run_dir: Path) -> "DataOptions":
    """A resumed (or exported) run reads its data exactly as it was trained; a different --data is
    refused rather than silently mixed in."""
    saved = stored_data_options(info, run_dir)
    def same(a: str, b: str) -> bool:
        return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())

    if given.spec is not None and not same(given.spec, saved.spec):
        raise VQError(f"{run_dir} was trained on --data {saved.spec}, not {given.spec}; "
                      "drop --data to resume it, or start a new run with --out")
    saved.strict = given.strict
    return saved


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


def preset(table: dict, model: str, name: str) -> tuple[dict, dict]:
    if name not in table[model]:
        raise VQError(f"unknown preset '{name}'; choose one of {', '.join(table[model])}")
    return table[model][name]


def eval_batch(image_size: int) -> int:
    return max(1, EVAL_PIXELS // (image_size * image_size))


@torch.no_grad()
def evaluate_tokenizer(model, split: Split) -> dict:
    """Test-split MSE, PSNR, SSIM (images in [-1, 1], a range of 2) and sharpness (high-frequency
    energy of the reconstructions over the originals', stage1_vqvae.losses.abs_laplacian); for a VQ-VAE
    also codebook usage (share of codes used at least once) and perplexity."""
    device = next(model.parameters()).device
    batch_size = eval_batch(model.config.image_size)
    sq_err, psnr_sum, ssim_sum, lap_recon, lap_real, n = 0.0, 0.0, 0.0, 0.0, 0.0, 0
    counts = torch.zeros(getattr(model.config, "codebook_size", 1), device=device)
    for batch in batches(split, batch_size):
        images, labels = image_batch(batch, device)
        recon = model.reconstruct(images, labels).float().clamp(-1, 1)
        sq_err += float((recon - images).pow(2).flatten(1).mean(1).sum())
        psnr_sum += float(psnr(recon, images).sum())
        ssim_sum += float(ssim(recon, images).sum())
        lap_recon += float(abs_laplacian(recon).sum())
        lap_real += float(abs_laplacian(images).sum())
        n += images.shape[0]
        if model.name == "vqvae":
            counts += torch.bincount(model.encode_indices(images).flatten(), minlength=counts.numel())
    metrics = {"mse": sq_err / n, "psnr": psnr_sum / n, "ssim": ssim_sum / n, "sharpness": lap_recon / max(lap_real, 1e-8)}
    if model.name == "vqvae":
        p = counts / counts.sum()
        metrics["usage"] = float((counts > 0).float().mean())
        metrics["perplexity"] = float(torch.exp(-(p * p.clamp(min=1e-10).log()).sum()))
    return metrics


@torch.no_grad()
def reconstruction_grid(model, split: Split, n: int = 32) -> torch.Tensor:
    """Rows of 16: originals, then their reconstructions beneath, twice."""
    device = next(model.parameters()).device
    images, labels = image_batch((split.images[:n], split.labels[:n]), device)
    recon = model.reconstruct(images, labels).float()
    rows = []
    for i in range(0, images.shape[0], 16):
        rows += [images[i : i + 16].float(), recon[i : i + 16]]
    return torch.cat(rows)


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


def job_configs(job, presets: dict, model_name: str, config_class, saved: dict | None) -> tuple[TrainConfig, tuple[dict, ...]]:
    """(train config, model config layers) of a fit job. A new run: preset, then the config file,
    then the flags. A resumed run: what the run saved, then the flags (a new length, device, ...);
    its model is fixed."""
    model_preset, train_preset = preset(presets, model_name, job.preset)
    file_cfg = read_config_file(job.config_file)
    if saved is None:
        if "epochs" in job.train_overrides and "steps" not in job.train_overrides:
            train_preset = {**train_preset, "steps": None}  # an explicit --epochs beats the preset's steps
        train_cfg = build(TrainConfig, train_preset, file_cfg.get("train", {}), job.train_overrides, where="train config")
        layers = (model_preset, file_cfg.get("model", {}), job.model_overrides)
    else:
        asked = to_dict(build(config_class, saved["config"], file_cfg.get("model", {}), job.model_overrides, where="model config"))
        stored = to_dict(build(config_class, saved["config"], where="model config"))  # keys added since: their defaults
        changed = sorted(k for k in asked if asked[k] != stored[k])
        if changed:
            raise VQError(f"the model of a resumed run is fixed by {job.out}/config.json; "
                          f"{changed[0]} differs ({saved['config'].get(changed[0])} there, {asked[changed[0]]} asked)")
        train_cfg = build(TrainConfig, saved["train"], file_cfg.get("train", {}), job.train_overrides, where="train config")
        layers = (saved["config"],)
    build(config_class, *layers, where="model config")  # a bad key fails here, before any data is loaded
    train_cfg.validate()
    return train_cfg, layers


def new_length(job) -> bool:
    """Whether the user gave the resumed run a new length (else it finishes its own schedule)."""
    return bool({"steps", "epochs", "time_budget"} & set(job.train_overrides))


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
                      + (f", {model.grid_shape[0]}x{model.grid_shape[1]} codes from {model.config.codebook_size}" if cls.name == "vqvae" else ""))
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


class EvalImages:
    """The held-out images every evaluation reads, decoded once on first use (by rank 0 only):
    the whole test split, or its first EVAL_IMAGES when it is larger."""

    def __init__(self, split, workers: int | None, skipped: Skipped):
        self.source, self.workers, self.skipped, self._split = split, workers, skipped, None

    @property
    def split(self) -> Split:
        if self._split is None:
            src = self.source if isinstance(self.source, Split) else self.source.head(EVAL_IMAGES)
            self._split = materialize(src, default_workers() if self.workers is None else self.workers, self.skipped)
        return self._split


def load_tokenizer(run_dir: Path, device: str = "cpu"):
    return load_checkpoint(Path(run_dir), "tokenizer", TOKENIZERS, device)
