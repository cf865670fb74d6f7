"""THE training loop, for both stages.

A stage hands over a model whose `forward(*batch, step=step)` returns an object with `.loss` and
`.metrics`; the loop does the rest: AdamW with linear warm-up and cosine decay, gradient clipping,
bf16 autocast on CUDA, a rich progress bar, periodic evaluation, wandb, checkpoints (the best one
when a metric to minimise is given), resume, and a clean stop on Ctrl-C.
"""

import io
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pipeline.configs import to_dict
from pipeline.runs import Interrupted, VQError, atomic_write_bytes

STATE_FILE = "train_state.pt"


@dataclass
class TrainConfig:
    steps: int | None = None  # optimizer steps; wins over epochs when both are given
    epochs: float | None = None
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16 on CUDA, else fp32) | bf16 | fp32
    eval_every: int = 500
    workers: int = 0  # processes for decoding images when loading a dataset
    wandb: bool = False
    wandb_project: str = "vq"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VQError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VQError(f"device '{name}' asked for, but CUDA is not available here; use --device cpu")
    return device


def autocast_context(device: torch.device, precision: str):
    if precision not in ("auto", "bf16", "fp32"):
        raise VQError(f"unknown precision '{precision}' (use auto, bf16 or fp32)")
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def total_steps(cfg: TrainConfig, n: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    per_epoch = max(1, n // cfg.batch_size)
    return max(1, round((cfg.epochs if cfg.epochs is not None else 1) * per_epoch))


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """The indices of batch `step`: a fresh seeded permutation per epoch, last partial batch
    dropped, so a resumed run sees exactly the batches the uninterrupted run would have."""
    bs = min(batch_size, n)
    per_epoch = n // bs
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return perm[pos * bs : (pos + 1) * bs]


def fmt(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))


def fit(
    model: torch.nn.Module,
    tensors: tuple[torch.Tensor, ...],
    *,
    prepare: Callable[[tuple, torch.device], tuple],
    evaluate: Callable[[torch.nn.Module], dict],
    save: Callable[[torch.nn.Module, dict], None],
    run_dir: Path,
    cfg: TrainConfig,
    resume: bool = False,
    best_metric: str | None = None,
    preview: Callable[[torch.nn.Module], torch.Tensor] | None = None,  # -> (C, H, W) uint8 image
    console: Console | None = None,
    run_config: dict | None = None,
) -> dict:
    """Train `model` on batches of `tensors` (indexed along dim 0). `prepare` turns a batch into
    forward arguments on the device; `evaluate` returns metrics; `save` writes the checkpoint.
    Returns the final evaluation and timing."""
    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    ctx = autocast_context(device, cfg.precision)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    n = tensors[0].shape[0]
    if n == 0:
        raise VQError("the training split is empty")
    steps = total_steps(cfg, n)
    model.to(device)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.99), fused=device.type == "cuda",
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, steps, min(cfg.warmup_steps, steps // 2), cfg.min_lr_ratio))
    step, best = 0, math.inf
    state_path = run_dir / STATE_FILE
    if resume:
        if not state_path.exists():
            raise VQError(f"nothing to resume in {run_dir} (no {STATE_FILE})")
        try:
            state = torch.load(state_path, map_location=device, weights_only=True)
            model.load_state_dict(state["model"], strict=True)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise VQError(f"cannot resume from {state_path}: {str(e).splitlines()[0]}") from None
        step, best = int(state["step"]), float(state["best"])
        torch.set_rng_state(state["rng"].cpu())
        console.print(f"resuming {run_dir} at step {step}/{steps}")

    wandb_run = None
    if cfg.wandb:
        import wandb

        wandb_run = wandb.init(
            project=cfg.wandb_project, dir=str(run_dir), config=run_config or to_dict(cfg),
            mode=os.environ.get("WANDB_MODE", "offline"), resume="allow" if resume else None,
        )

    history = run_dir / "metrics.jsonl"

    def checkpoint(metrics: dict) -> None:
        nonlocal best
        better = best_metric is None or metrics.get(best_metric, math.inf) < best
        if better or not (run_dir / "model.safetensors").exists():
            if best_metric is not None and best_metric in metrics:
                best = metrics[best_metric]
            save(model, metrics)
        state = {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "step": step, "best": best, "rng": torch.get_rng_state(),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(state_path, buf.getvalue())

    def run_eval() -> dict:
        model.eval()
        with torch.no_grad(), ctx:
            metrics = {k: float(v) for k, v in evaluate(model).items()}
        model.train()
        with history.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if wandb_run is not None:
            log = {f"val/{k}": v for k, v in metrics.items()}
            if preview is not None:
                import wandb

                img = preview(model).cpu().permute(1, 2, 0).numpy()  # (C, H, W) uint8 -> (H, W, C)
                log["val/preview"] = wandb.Image(img[..., 0] if img.shape[-1] == 1 else img)
            wandb_run.log(log, step=step)
        return metrics

    start = time.time()
    start_step = step
    model.train()
    metrics: dict = {}
    running = None
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("training", total=steps, completed=step, info="")
            while step < steps:
                idx = batch_indices(step, n, cfg.batch_size, cfg.seed)
                batch = prepare(tuple(t[idx] for t in tensors), device)
                with ctx:
                    out = model(*batch, step=step)
                loss = out.loss
                if not torch.isfinite(loss):
                    raise VQError(f"the loss became {loss.item()} at step {step}; lower --lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                step += 1
                value = loss.item()
                running = value if running is None else 0.95 * running + 0.05 * value
                progress.update(task, advance=1, info=f"loss {running:.4f}")
                if wandb_run is not None and step % 10 == 0:
                    wandb_run.log({"train/loss": value, "train/lr": sched.get_last_lr()[0],
                                   **{f"train/{k}": float(v) for k, v in out.metrics.items()}}, step=step)
                if step % cfg.eval_every == 0 and step < steps:
                    metrics = run_eval()
                    checkpoint(metrics)
                    progress.console.print(f"step {step}: {fmt(metrics)}")
        metrics = run_eval()
        checkpoint(metrics)
    except KeyboardInterrupt:
        checkpoint({})
        raise Interrupted(f"interrupted at step {step}/{steps}; saved to {run_dir}, continue with --resume") from None
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    elapsed = time.time() - start
    return {"step": step, "steps": steps, "seconds": elapsed, "steps_run": step - start_step,
            "best": best if best_metric else None, "metrics": metrics, "device": str(device)}
