"""Stage 1 as a job: data -> tokenizer -> trained checkpoint, test metrics and a reconstruction grid."""

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.configs import build, read_config_file, to_dict
from pipeline.data import ImageData, Split, image_batch, load_image_data
from pipeline.images import grid, save_grid
from pipeline.metrics import psnr, ssim
from pipeline.presets import TOKENIZER_PRESETS
from pipeline.runs import VQError, check_run_dir, run_lock
from pipeline.trainer import TrainConfig, fit, resolve_device
from stage1_vqvae import TOKENIZERS

EVAL_BATCH = 500


@dataclass
class DataOptions:
    spec: str = "fashion-mnist"
    image_size: int | None = None
    channels: int | None = None
    image_column: str | None = None
    label_column: str | None = None
    limit: int | None = None

    def load(self, workers: int = 0) -> ImageData:
        return load_image_data(
            self.spec, image_size=self.image_size, channels=self.channels, image_column=self.image_column,
            label_column=self.label_column, workers=workers, limit=self.limit,
        )


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


@torch.no_grad()
def evaluate_tokenizer(model, split: Split, batch_size: int = EVAL_BATCH) -> dict:
    """Test-split MSE, PSNR and SSIM (images in [-1, 1], a range of 2); for a VQ-VAE
    also codebook usage (share of codes used at least once) and perplexity."""
    device = next(model.parameters()).device
    sq_err, psnr_sum, ssim_sum, n = 0.0, 0.0, 0.0, 0
    counts = torch.zeros(getattr(model.config, "codebook_size", 1), device=device)
    for i in range(0, len(split), batch_size):
        images, labels = image_batch((split.images[i : i + batch_size], split.labels[i : i + batch_size]), device)
        recon = model.reconstruct(images, labels).float().clamp(-1, 1)
        sq_err += float((recon - images).pow(2).flatten(1).mean(1).sum())
        psnr_sum += float(psnr(recon, images).sum())
        ssim_sum += float(ssim(recon, images).sum())
        n += images.shape[0]
        if model.name == "vqvae":
            counts += torch.bincount(model.encode_indices(images).flatten(), minlength=counts.numel())
    metrics = {"mse": sq_err / n, "psnr": psnr_sum / n, "ssim": ssim_sum / n}
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


def fit_tokenizer(job: TokenizerJob, console: Console | None = None) -> dict:
    console = console or Console(stderr=True)
    cls = tokenizer_class(job.model)
    _, train_preset = preset(TOKENIZER_PRESETS, job.model, job.preset)
    file_cfg = read_config_file(job.config_file)
    train_cfg = build(TrainConfig, train_preset, file_cfg.get("train", {}), job.train_overrides, where="train config")
    resolve_device(train_cfg.device)
    check_run_dir(job.out, resume=job.resume, force=job.force, what="tokenizer")
    if job.resume and (job.out / "config.json").exists():
        from pipeline.checkpoint import read_info

        info = read_info(job.out, "tokenizer")
        if info["model"] != cls.name:
            raise VQError(f"{job.out} holds a {info['model']} tokenizer; resume it with --model {info['model']}")
    model_layers = (preset(TOKENIZER_PRESETS, job.model, job.preset)[0], file_cfg.get("model", {}), job.model_overrides)
    build(cls.config_class, *model_layers, where="model config")  # fail on a bad key before loading data

    t0 = time.time()
    data = job.data.load(train_cfg.workers)
    console.print(f"data: {data.spec} ({len(data.train)} train / {len(data.test)} test, "
                  f"{data.channels}x{data.image_size}x{data.image_size}, {len(data.class_names)} classes)")
    model = build_tokenizer(cls, data, model_layers)
    params = sum(p.numel() for p in model.parameters())
    console.print(f"model: {cls.name}, {params / 1e6:.2f}M parameters"
                  + (f", {model.grid_shape[0]}x{model.grid_shape[1]} codes from {model.config.codebook_size}" if cls.name == "vqvae" else ""))
    # What export needs to rebuild exactly these splits from the tokenizer alone.
    data_options = {**asdict(job.data), "image_size": data.image_size, "channels": data.channels}
    meta = {"class_names": data.class_names, "dataset": data.describe(), "data_options": data_options,
            "train": to_dict(train_cfg), "preset": job.preset}

    def save(m, metrics):
        save_checkpoint(job.out, m, kind="tokenizer", meta={**meta, "metrics": metrics})

    with run_lock(job.out):
        result = fit(
            model, (data.train.images, data.train.labels),
            prepare=image_batch, evaluate=lambda m: evaluate_tokenizer(m, data.test), save=save,
            run_dir=job.out, cfg=train_cfg, resume=job.resume,
            preview=lambda m: grid(reconstruction_grid(m, data.test), nrow=16), console=console,
            run_config={"model": to_dict(model.config), "train": to_dict(train_cfg), "data": data.describe()},
        )
        save_grid(reconstruction_grid(model, data.test), job.out / "reconstructions.png", nrow=16)
    result["wall_seconds"] = time.time() - t0
    result["out"] = str(job.out)
    result["parameters"] = params
    return result


def load_tokenizer(run_dir: Path, device: str = "cpu"):
    return load_checkpoint(Path(run_dir), "tokenizer", TOKENIZERS, device)
