"""THE training loop, for both stages and for the evaluation classifier.

A stage hands over a model whose `forward(*batch, step=step)` returns an object with `.loss` and
`.metrics`, and a training split (any split of `pipeline.data`, or code maps); the loop does the
rest: AdamW with linear warm-up and cosine decay, gradient clipping, bf16 autocast on CUDA,
`torch.compile`, DDP under torchrun, a time budget, a rich progress bar, periodic evaluation,
wandb, checkpoints (the best one when a metric to minimise is given) and periodic saves of the
whole training state, exact resume, a clean stop on Ctrl-C or SIGTERM, and a stop (or a skipped
batch) on a non-finite loss that never saves non-finite weights.

The loop never waits on the device within a step (nanoGPT's habit): the loss is summed on the
device and read, with the non-finite check, every `log_every` steps.
"""

import json
import math
import os
import re
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vq.pipeline import distributed as dist
from vq.pipeline.checkpoint import load_state, state_bytes
from vq.pipeline.configs import to_dict
from vq.pipeline.device import autocast_context, resolve_device
from vq.pipeline.loader import Skipped, TrainBatches, default_workers
from vq.pipeline.runs import STATE_FILE, Interrupted, VQError, atomic_write_bytes

MEASURE_FROM, MEASURE_TO = 5, 25  # steps timed (after compilation and worker start-up) to fit a time budget
STOP_EVERY = 10  # under torchrun, steps between agreements on a Ctrl-C (torchrun kills after 30 s)
MAX_SKIPPED_IN_A_ROW = 50  # --skip-nonfinite: this many non-finite batches in a row stop the run


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
        if self.precision not in ("auto", "bf16", "fp32"):
            raise VQError(f"unknown precision '{self.precision}' (use auto, bf16 or fp32)")
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


def fmt(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))


class MetricsLog:
    """metrics.jsonl, one row per evaluation; a resumed run first drops the rows written after
    its checkpoint (and a re-evaluated step replaces its row), so no step appears twice."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        self.rows = []
        if resume_step is not None and path.exists():
            self.rows = [r for r in map(json.loads, path.read_text().splitlines()) if r.get("step", 0) <= resume_step]
            self._flush()

    def write(self, row: dict) -> None:
        self.rows = [r for r in self.rows if r.get("step") != row["step"]] + [row]
        self._flush()

    def _flush(self) -> None:
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in self.rows).encode())


@contextmanager
def stop_signals():
    """SIGINT / SIGTERM during training set a flag that the loop reads at the end of a step, so
    the saved state is always that of a finished step. A second signal stops at once, except
    within an optimizer update (`flag["updating"]`), which it lets finish first: a checkpoint of
    half an update would resume into a different run."""
    flag = {"stop": False, "updating": False, "now": False}

    def handler(signum, frame):
        if not flag["stop"]:
            flag["stop"] = True
        elif flag["updating"]:
            flag["now"] = True
        else:
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def fit(
    model: torch.nn.Module,
    train,
    *,
    prepare: Callable[[tuple, torch.device], tuple],
    evaluate: Callable[[torch.nn.Module], dict],
    save: Callable[[torch.nn.Module, dict], None],
    run_dir: Path,
    cfg: TrainConfig,
    resume: bool = False,
    keep_schedule: bool = False,
    best_metric: str | None = None,
    preview: Callable[[torch.nn.Module], torch.Tensor] | None = None,  # -> (C, H, W) uint8 image
    console: Console | None = None,
    run_config: dict | None = None,
    skipped: Skipped | None = None,
) -> dict:
    """Train `model` on `train` (a dataset of (tensor, label, problem) items). `prepare` turns a
    batch into forward arguments on the device; `evaluate` returns metrics (rank 0 only); `save`
    writes the checkpoint (rank 0 only). Returns the final evaluation and timing.

    keep_schedule: on resume, finish the saved schedule (its total steps) rather than one
    recomputed from `cfg` (the caller passes True unless the user set a new length)."""
    t_setup = time.time()
    console = console or Console(stderr=True)
    state_kind = getattr(model, "name", type(model).__name__)
    every_steps, every_seconds = save_interval(cfg.save_every)
    main = dist.is_main()
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    dist.setup(device)
    ctx = autocast_context(device, cfg.precision)
    if device.type == "cuda":  # TF32 for fp32 matmuls outside the quantizer, which switches it off for itself
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' condition for determinism
        torch.use_deterministic_algorithms(True)
    budget = parse_duration(cfg.time_budget) if cfg.time_budget else None
    skipped = skipped or Skipped()
    workers = default_workers() if cfg.workers is None else cfg.workers

    model.to(device)
    optimizers = make_optimizers(model, cfg, device)
    step, best, wandb_id, total, saved_total = 0, math.inf, None, None, None
    state_path = run_dir / STATE_FILE
    if resume:
        if not state_path.exists():
            raise VQError(f"nothing to resume in {run_dir} (no {STATE_FILE})")
        state = load_state(state_path, state_kind)
        try:
            model.load_state_dict(state["model"], strict=True)
            if set(state["optimizers"]) != set(optimizers):
                raise KeyError(f"optimizers {sorted(state['optimizers'])}, not {sorted(optimizers)}")
            for name, opt in optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise VQError(f"cannot resume from {state_path}: it does not fit this model ({str(e).strip().splitlines()[0]})") from None
        step, best, wandb_id = int(state["step"]), float(state["best"]), state.get("wandb_id")
        saved_total = state.get("total")
        total = int(saved_total) if keep_schedule and saved_total is not None else None
        torch.set_rng_state(state["rng"].cpu())
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        if dist.rank() > 0:  # other ranks: their own dropout stream, reproducible from seed and step
            torch.manual_seed(cfg.seed * 7919 + step * 131 + dist.rank())
    elif dist.rank() > 0:
        torch.manual_seed(cfg.seed * 7919 + dist.rank())

    if total is not None:
        budget = None  # a resumed run finishes the schedule its budget was fitted to
    data = TrainBatches(train, batch_size=cfg.batch_size, seed=cfg.seed, device=device, workers=workers,
                        start=step, skipped=skipped)
    if total is None and budget:
        # A placeholder until the step time is measured; a resumed run keeps its learning rate
        # where it was meanwhile, rather than jumping back to the start of a fresh cosine.
        total = max(int(saved_total), step + MEASURE_TO + 1) if resume and saved_total is not None else step + 10**9
    elif total is None:
        total = total_steps(cfg, data.epoch_size)
    schedule = Schedule(cfg, total, fitted=not budget)
    scheds = [torch.optim.lr_scheduler.LambdaLR(opt, schedule, last_epoch=step - 1) for opt in optimizers.values()]
    if resume and main:
        console.print(f"resuming {run_dir} at step {step}" + (f"/{total}" if not budget else ""))

    net = dist.wrap(model, device)
    if cfg.compile:
        net = torch.compile(net)

    wandb_run = None
    if cfg.wandb and main:
        import wandb

        wandb_run = wandb.init(
            project=cfg.wandb_project, dir=str(run_dir), config=run_config or to_dict(cfg), id=wandb_id,
            mode=os.environ.get("WANDB_MODE", "offline"), resume="allow" if wandb_id else None,
        )
        wandb_id = wandb_run.id
    history = MetricsLog(run_dir / "metrics.jsonl", step if resume else None) if main else None

    saved_step = step if resume else None  # the step of the training state on disk
    last_save = time.time()
    bad_step = torch.full((), -1, device=device, dtype=torch.long)  # the first step whose loss was not finite

    def nonfinite(at: int | str) -> VQError:
        kept = (f"the last good training state (step {saved_step}) in {run_dir} is kept; continue it with --resume "
                "and a lower --lr, or" if saved_step is not None else "nothing was saved; lower --lr, or")
        return VQError(f"the loss became non-finite at step {at}; stopped without saving: {kept} "
                       "pass --skip-nonfinite to skip such batches")

    def checkpoint(metrics: dict, weights: bool = True, agree: bool = True) -> None:
        """Rank 0 writes the training state (and with `weights`, the checkpoint users load) —
        never non-finite weights. Called by every rank (`agree`), they stop together on those,
        with the last good state kept; a periodic save by rank 0 alone just skips the write and
        leaves the stop to the next agreed loss read."""
        nonlocal best, saved_step, last_save
        last_save = time.time()
        finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all() & (bad_step < 0)
        bad = (~finite).float().reshape(1)
        if agree:
            dist.all_reduce_sum_(bad)
        if float(bad) > 0:
            if not agree:
                return
            raise nonfinite(int(bad_step) if int(bad_step) >= 0 else f"{step} or before")
        if not main:
            return
        better = best_metric is None or metrics.get(best_metric, math.inf) < best
        if weights and (better or not (run_dir / "model.safetensors").exists()):
            if best_metric is not None and best_metric in metrics:
                best = metrics[best_metric]
            save(model, metrics)
        state = {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()}, "step": step, "total": schedule.total if schedule.fitted else None, "best": best,
            "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "wandb_id": wandb_id,
        }
        atomic_write_bytes(state_path, state_bytes(state, state_kind))
        saved_step = step

    eval_seconds = 0.0
    nonfinite_skipped = skipped_in_a_row = 0

    def run_eval() -> dict:
        nonlocal eval_seconds
        t = time.time()
        metrics = {}
        if main:
            model.eval()
            with torch.no_grad(), ctx:
                metrics = {k: float(v) for k, v in evaluate(model).items()}
            model.train()
            history.write({"step": step, **metrics})
            if wandb_run is not None:
                log = {f"val/{k}": v for k, v in metrics.items()}
                if preview is not None:
                    import wandb

                    img = preview(model).cpu().permute(1, 2, 0).numpy()  # (C, H, W) uint8 -> (H, W, C)
                    log["val/preview"] = wandb.Image(img[..., 0] if img.shape[-1] == 1 else img)
                wandb_run.log(log, step=step)
        dist.barrier()
        eval_seconds += time.time() - t
        return metrics

    start_step = step
    model.train()
    metrics: dict = {}
    running = None
    loss_sum = torch.zeros((), device=device)
    window = 0
    t_loop = time.time()
    t_measure = None
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    batches = iter(data)
    try:
        with stop_signals() as stop, Progress(*columns, console=console, transient=False, disable=not main) as progress:
            task = progress.add_task("training", total=None if budget else total, completed=step, info="")
            while step < schedule.total:
                batch = prepare(next(batches), device)
                with ctx:
                    out = net(*batch, step=step)
                loss = out.loss
                for opt in optimizers.values():
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                skip = False
                if cfg.skip_nonfinite:
                    # The gradient norms are the same on every rank after DDP's all-reduce, so all
                    # skip together (a rank's own loss would not be: in one process it counts too).
                    norms = [clip(opt, cfg.grad_clip if cfg.grad_clip > 0 else math.inf) for opt in optimizers.values()]
                    ok = torch.isfinite(torch.stack(norms)).all()
                    skip = not bool(ok if dist.active() else ok & torch.isfinite(loss.detach()))
                    nonfinite_skipped += skip
                    skipped_in_a_row = skipped_in_a_row + 1 if skip else 0
                    if skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                        raise nonfinite(f"{step + 1} and the {MAX_SKIPPED_IN_A_ROW - 1} before it (every batch skipped)")
                elif cfg.grad_clip > 0:
                    for opt in optimizers.values():
                        clip(opt, cfg.grad_clip)
                stop["updating"] = True
                if not skip:
                    for opt in optimizers.values():
                        opt.step()
                for sched in scheds:  # a skipped batch still counts as a step: the schedule and data order go on
                    sched.step()
                step += 1
                stop["updating"] = False
                if stop["now"]:
                    raise KeyboardInterrupt
                if not skip:
                    loss_sum += loss.detach().float()
                    window += 1
                    if not cfg.skip_nonfinite:  # on the device: no sync, read with the loss
                        bad_step.copy_(torch.where((bad_step < 0) & ~torch.isfinite(loss.detach()), step, bad_step))
                progress.update(task, advance=1)
                if step == start_step + 1:
                    if main:
                        progress.console.print(f"first step after {time.time() - t_setup:.1f} s of set-up")
                if budget and step == start_step + MEASURE_FROM:
                    t_measure = time.time()
                if budget and step == start_step + MEASURE_TO:
                    schedule.total = dist.broadcast_object(
                        fit_budget(step, start_step, t_measure, t_loop, budget, eval_seconds, cfg))
                    schedule.fitted = True
                    progress.update(task, total=schedule.total)
                # Every rank reads at the same steps (the reads carry collectives under torchrun);
                # one process also stops at the very step a signal arrived.
                read_now = (step % cfg.log_every == 0 or step == schedule.total or step == start_step + MEASURE_TO
                            or (stop["stop"] and not dist.active()) or (dist.active() and step % STOP_EVERY == 0))
                if read_now:
                    value = float(loss_sum) / max(1, window)  # the one host read per log interval
                    # Every rank stops together: the first non-finite step over all ranks, or none.
                    first_bad = torch.where(bad_step < 0, torch.iinfo(torch.long).max, bad_step).reshape(1)
                    if dist.active():
                        torch.distributed.all_reduce(first_bad, op=torch.distributed.ReduceOp.MIN)
                    if int(first_bad) != torch.iinfo(torch.long).max:
                        raise nonfinite(int(first_bad))
                    loss_sum.zero_()
                    window = 0
                    running = value if running is None else 0.7 * running + 0.3 * value
                    progress.update(task, info=f"loss {running:.4f}")
                    if wandb_run is not None:
                        wandb_run.log({"train/loss": value, "train/lr": scheds[0].get_last_lr()[0],
                                       **{f"train/{k}": float(v) for k, v in out.metrics.items()}}, step=step)
                    if nonfinite_skipped:
                        progress.update(task, info=f"loss {running:.4f}, {nonfinite_skipped} non-finite batches skipped")
                    if budget and time.time() - t_loop > budget:
                        schedule.total, schedule.fitted = step, True  # spent: stop here
                    schedule.total = dist.broadcast_object(schedule.total)
                    if dist.broadcast_object(stop["stop"]):
                        raise KeyboardInterrupt
                if step % cfg.eval_every == 0 and step < schedule.total:
                    metrics = run_eval()
                    checkpoint(metrics)
                    if main:
                        progress.console.print(f"step {step}: {fmt(metrics)}")
                    if budget and t_measure is not None:
                        schedule.total = dist.broadcast_object(
                            fit_budget(step, start_step, t_measure, t_loop, budget, eval_seconds, cfg))
                        progress.update(task, total=schedule.total)
                elif main and step < schedule.total and (
                        (every_steps and step % every_steps == 0)
                        or (every_seconds and time.time() - last_save >= every_seconds)):
                    checkpoint({}, weights=False, agree=False)  # rank 0 alone: what a kill -9 would otherwise lose
        loop_seconds = time.time() - t_loop
        loop_eval_seconds = eval_seconds  # evaluations inside the loop, not the final one below
        metrics = run_eval()
        checkpoint(metrics)
        model.eval()  # what callers do next (grids, scores) must not update a codebook
    except KeyboardInterrupt:
        checkpoint({}, weights=not (run_dir / "model.safetensors").exists())
        raise Interrupted(f"interrupted at step {step}; saved to {run_dir}, continue with --resume") from None
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    if skipped.count and main:
        console.print(f"[yellow]{skipped.summary()}[/yellow]")
    if nonfinite_skipped and main:
        console.print(f"[yellow]{nonfinite_skipped} batches with a non-finite loss or gradient were skipped[/yellow]")
    steps_run = step - start_step
    train_seconds = max(1e-9, loop_seconds - loop_eval_seconds)
    return {"step": step, "steps": schedule.total, "seconds": loop_seconds, "steps_run": steps_run,
            "samples_per_second": steps_run * cfg.batch_size / train_seconds if steps_run else None,
            "world_size": dist.world_size(), "main": main, "skipped": skipped.count,
            "nonfinite_skipped": nonfinite_skipped,
            "best": best if best_metric else None, "metrics": metrics, "device": str(device)}


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
        optimizers[name] = torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, fused=device.type == "cuda")
    return optimizers


def clip(opt: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Clip the gradients of one optimizer's parameters; returns their norm before clipping."""
    return torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], max_norm)


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
