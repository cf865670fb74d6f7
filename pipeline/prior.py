"""Stage 2 as a job: exported codes -> class-conditional prior, keeping the checkpoint with the
best validation NLL (priors overfit small datasets within a few epochs) and reporting the test
NLL in bits per code token and bits per pixel dimension."""

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from pipeline.checkpoint import load_checkpoint, read_info, save_checkpoint
from pipeline.configs import build, read_config_file, to_dict
from pipeline.export import export_codes, load_codes
from pipeline.presets import PRIOR_PRESETS
from pipeline.runs import VQError, atomic_write_json, check_run_dir, run_lock
from pipeline.tokenizer import preset
from pipeline.trainer import TrainConfig, fit, resolve_device
from stage2_prior import PRIORS

VAL_FRACTION = 0.05
EVAL_BATCH = 256


@dataclass
class PriorJob:
    tokenizer: Path = Path("runs/tokenizer")
    codes: Path = Path("runs/codes")
    out: Path = Path("runs/prior")
    preset: str = "demo"
    config_file: Path | None = None
    model_overrides: dict = field(default_factory=dict)
    train_overrides: dict = field(default_factory=dict)
    resume: bool = False
    force: bool = False


def prepare_batch(batch: tuple, device: torch.device) -> tuple:
    codes, labels = batch
    return codes.to(device, non_blocking=True).long(), labels.to(device, non_blocking=True)


@torch.no_grad()
def nll_bits(model, codes: torch.Tensor, labels: torch.Tensor, batch_size: int = EVAL_BATCH) -> float:
    """Mean negative log-likelihood of the codes given their class, in bits per code token."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, codes.shape[0], batch_size):
        c, y = prepare_batch((codes[i : i + batch_size], labels[i : i + batch_size]), device)
        total += float(model(c, y).loss.float()) * c.numel()
        count += c.numel()
    return total / max(count, 1) / math.log(2)


def validation_split(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = max(1, int(n * VAL_FRACTION)) if n > 1 else 0
    return perm[k:], perm[:k]


def pixel_dims(meta: dict) -> int:
    img = meta["image"]
    return img["channels"] * img["image_size"] ** 2


def fit_prior(job: PriorJob, console: Console | None = None) -> dict:
    console = console or Console(stderr=True)
    cls = PRIORS["transformer"]
    model_preset, train_preset = preset(PRIOR_PRESETS, "transformer", job.preset)
    file_cfg = read_config_file(job.config_file)
    train_cfg = build(TrainConfig, train_preset, file_cfg.get("train", {}), job.train_overrides, where="train config")
    build(cls.config_class, model_preset, file_cfg.get("model", {}), job.model_overrides, where="model config")
    resolve_device(train_cfg.device)
    tok_info = read_info(job.tokenizer, "tokenizer")
    if tok_info["model"] != "vqvae":
        raise VQError(f"{job.tokenizer} holds a {tok_info['model']}, which has no codes for a prior; "
                      "a VAE samples from its own latent prior with `vq sample`")
    check_run_dir(job.out, resume=job.resume, force=job.force, what="prior")
    if job.resume and (job.out / "config.json").exists():
        if read_info(job.out, "prior").get("tokenizer_fingerprint") != tok_info["fingerprint"]:
            raise VQError(f"{job.out} was trained on another tokenizer's codes; it cannot resume on {job.tokenizer}")

    t0 = time.time()
    meta = export_codes(job.tokenizer, job.codes, device=train_cfg.device, console=console)  # refuses another tokenizer's codes
    codeset = load_codes(job.codes)
    h, w = meta["grid"]
    train_idx, val_idx = validation_split(codeset.codes["train"].shape[0], seed=0)
    train = (codeset.codes["train"][train_idx].to(torch.int16 if meta["codebook_size"] < 2**15 else torch.int32),
             codeset.labels["train"][train_idx])
    val = (codeset.codes["train"][val_idx], codeset.labels["train"][val_idx])
    from_codes = {"codebook_size": meta["codebook_size"], "height": h, "width": w,
                  "num_classes": len(codeset.class_names)}
    config = build(cls.config_class, model_preset, from_codes, file_cfg.get("model", {}), job.model_overrides, where="model config")
    try:
        model = cls(config)
    except ValueError as e:
        raise VQError(str(e)) from None
    params = sum(p.numel() for p in model.parameters())
    console.print(f"prior: {params / 1e6:.2f}M parameters over {h}x{w} codes from {meta['codebook_size']}, "
                  f"{len(train[0])} train / {len(val[0])} val / {len(codeset.codes['test'])} test maps")
    ckpt_meta = {"class_names": codeset.class_names, "tokenizer_fingerprint": tok_info["fingerprint"],
                 "tokenizer_dir": str(job.tokenizer), "codes_dir": str(job.codes), "train": to_dict(train_cfg),
                 "preset": job.preset, "image": meta["image"]}

    def save(m, metrics):
        save_checkpoint(job.out, m, kind="prior", meta={**ckpt_meta, "metrics": metrics})

    with run_lock(job.out):
        result = fit(
            model, train, prepare=prepare_batch,
            evaluate=lambda m: {"val_bits": nll_bits(m, *val)}, save=save,
            run_dir=job.out, cfg=train_cfg, resume=job.resume, best_metric="val_bits", console=console,
            run_config={"model": to_dict(config), "train": to_dict(train_cfg), "codes": meta},
        )
        best, info = load_checkpoint(job.out, "prior", PRIORS, str(resolve_device(train_cfg.device)))
        test_bits = nll_bits(best, codeset.codes["test"], codeset.labels["test"])
        info["metrics"] = {**info.get("metrics", {}), "test_bits_per_token": test_bits,
                           "test_bits_per_dim": test_bits * h * w / pixel_dims(meta)}
        atomic_write_json(job.out / "config.json", info)
    result.update(wall_seconds=time.time() - t0, out=str(job.out), parameters=params, metrics=info["metrics"])
    return result


def load_prior(run_dir: Path, tokenizer_info: dict, device: str = "cpu"):
    """Load a prior and refuse one trained on another tokenizer's codes."""
    info = read_info(run_dir, "prior")
    if info.get("tokenizer_fingerprint") != tokenizer_info["fingerprint"]:
        raise VQError(f"{run_dir} was trained on the codes of another tokenizer "
                      f"({info.get('tokenizer_fingerprint')}, not {tokenizer_info['fingerprint']}); "
                      "pass the matching --tokenizer or retrain the prior")
    return load_checkpoint(Path(run_dir), "prior", PRIORS, device)
