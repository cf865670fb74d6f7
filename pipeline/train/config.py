"""A fit's train config (`TrainConfig`: what a preset, a config file and flags set), its
optimizers (AdamW, one per part of the model), and its schedule: warm-up then cosine over the
steps, or over as many steps as a time budget allows."""

import math
import re
import time
from dataclasses import dataclass

import torch

from vq.pipeline.device import check_precision, resolve_device
from vq.pipeline.errors import VQError

MEASURE_FROM, MEASURE_TO = 5, 25  # steps timed (after compilation and worker start-up) to fit a time budget


@dataclass
class TrainConfig:
    steps: int | None = None  # optimizer steps; wins over epochs when both are given
    epochs: float | None = None
    time_budget: str | None = None  # e.g. "90s", "5m", "1h": train until spent (wins over steps / epochs)
    batch_size: int = 128  # the global batch: under torchrun each of N processes takes batch_size / N
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    grad_clip: float = 1.0
    seed: int = 0  # initial weights, data order, dropout
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16 on CUDA, else fp32) | bf16 | fp32
    compile: bool = False  # torch.compile the model for training (the uncompiled weights are saved)
    deterministic: bool = False  # deterministic kernels: bit-exact reruns and resumes, slower on GPUs
    eval_every: int = 500
    log_every: int = 50  # steps between reads of the loss (each read waits for the device)
    workers: int | None = None  # DataLoader processes that decode images (None: from the CPU count)
    save_every: str = "10m"  # save the training state every N steps ("500") or this much time ("10m")
    skip_nonfinite: bool = False  # skip a batch whose loss or gradients are not finite (one device sync per step)
    wandb: bool = False
    wandb_project: str = "vq"

    def validate(self) -> None:
        """Fail before any data is loaded, naming the option."""
        for name, low in (("batch_size", 1), ("eval_every", 1), ("log_every", 1), ("steps", 0), ("workers", 0),
                          ("epochs", 0), ("lr", 0), ("warmup_steps", 0), ("grad_clip", 0)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise VQError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
        if self.time_budget:
            try:
                parse_duration(self.time_budget)
            except VQError as e:
                raise VQError(f"--time-budget: {e}") from None
        save_interval(self.save_every)
        check_precision(self.precision)
        resolve_device(self.device)


def parse_duration(text: str) -> float:
    """'90', '90s', '5m', '1.5h', '1h30m' -> seconds."""
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(text))
    if not parts or not any(parts.groups()):
        raise VQError(f"cannot read the duration '{text}' (examples: 90s, 5m, 1h30m)")
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    seconds = 3600 * h + 60 * m + s
    if seconds <= 0:
        raise VQError(f"the time budget '{text}' is not positive")
    return seconds


def save_interval(text: str) -> tuple[int | None, float | None]:
    """--save-every: '500' -> (500 steps, None); '10m' -> (None, 600 seconds)."""
    text = str(text).strip()
    if text.isdigit():
        if int(text) < 1:
            raise VQError("--save-every must be at least 1 step (or a time such as 10m)")
        return int(text), None
    if re.search(r"[hms]\s*$", text):  # a time must say its unit: '500.0' is neither steps nor a time
        try:
            return None, parse_duration(text)
        except VQError:
            pass
    raise VQError(f"cannot read --save-every '{text}' (a whole number of steps such as 500, or a time such as 10m)")


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Schedule:
    """Warm-up then cosine over `total` steps; under a time budget `total` is a placeholder until
    the step time is measured (`fitted` False), then refitted as the run goes."""

    def __init__(self, cfg: TrainConfig, total: int, fitted: bool = True):
        self.cfg, self.total, self.fitted = cfg, total, fitted

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total, min(self.cfg.warmup_steps, self.total // 2), self.cfg.min_lr_ratio)


def total_steps(cfg: TrainConfig, epoch_size: int | None) -> int:
    if cfg.steps is not None:
        return cfg.steps
    if epoch_size is None:
        raise VQError("a stream of unknown length has no epochs; pass --steps or --time-budget")
    return max(1, round((cfg.epochs if cfg.epochs is not None else 1) * epoch_size))


def fit_budget(step: int, start_step: int, t_measure: float, t_loop: float, budget: float,
               eval_seconds: float, cfg: TrainConfig) -> int:
    """The total step count that spends the budget, from the step time measured so far (since
    step start_step + MEASURE_FROM, evaluation time included) plus one more evaluation for the end."""
    now = time.time()
    per_step = (now - t_measure) / max(1, step - start_step - MEASURE_FROM)
    evals_so_far = max(1, (step - start_step) // cfg.eval_every)  # this session's, like eval_seconds
    final_eval = eval_seconds / evals_so_far if eval_seconds else 0.0
    left = budget - (now - t_loop) - final_eval
    return max(step, step + int(left / per_step))


FUSED_ADAM = ("cuda", "cpu")  # devices with a fused AdamW in the pinned torch


def make_optimizers(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> dict:
    """One AdamW per part of the model: the whole model, or the parts it names itself
    (`model.optimizer_parts()` -> {name: (parameters, betas)}, e.g. an autoencoder and its
    discriminator). Weight decay on matrices and convolutions only."""
    parts = model.optimizer_parts() if hasattr(model, "optimizer_parts") else {"model": (list(model.parameters()), (0.9, 0.99))}
    optimizers = {}
    for name, (params, betas) in parts.items():
        params = [p for p in params if p.requires_grad]
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        # Fused: one kernel for every tensor (on a CPU too: 0.7 against 2.5 ms a step for the demo prior).
        optimizers[name] = torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, fused=device.type in FUSED_ADAM)
    return optimizers


def clip(opt: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Clip the gradients of one optimizer's parameters; returns their norm before clipping."""
    return torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], max_norm)
