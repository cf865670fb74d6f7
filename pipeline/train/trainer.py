"""THE training loop, for both stages and for the evaluation classifier.

A stage hands over a model whose `forward(*batch, step=step)` returns an object with `.loss` and
`.metrics`, and a training split (any split of `pipeline.data`, or code maps); the loop does the
rest: AdamW with linear warm-up and cosine decay, gradient clipping, bf16 autocast on CUDA,
`torch.compile`, DDP under torchrun, a time budget, a rich progress bar, periodic evaluation,
wandb, checkpoints (the best one when a metric to minimise is given) and periodic saves of the
whole training state, exact resume, a clean stop on Ctrl-C or SIGTERM, and a stop (or a skipped
batch) on a non-finite loss that never saves non-finite weights.

`fit` is the entry point: it sets up a `Trainer`, whose `run` is the loop, each part of a step
one of its methods, and returns a `FitResult`.

The loop never waits on the device within a step (nanoGPT's habit): the loss is summed on the
device and read, with the non-finite check, every `log_every` steps.
"""

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from vq.pipeline import distributed as dist
from vq.pipeline.configs import to_dict
from vq.pipeline.data.loader import Skipped, TrainBatches, default_workers
from vq.pipeline.device import autocast_context, training_device
from vq.pipeline.errors import Interrupted, VQError
from vq.pipeline.files import STATE_FILE
from vq.pipeline.threads import Threads
from vq.pipeline.train.config import (MEASURE_FROM, MEASURE_TO, Schedule, TrainConfig, clip, fit_budget, make_optimizers,
                                      parse_duration, save_interval, total_steps)
from vq.pipeline.train.progress import LogLines, progress_bar
from vq.pipeline.train.state import MetricsLog, TrainState, stop_signals

STOP_EVERY = 10  # under torchrun, steps between agreements on a Ctrl-C (torchrun kills after 30 s)
MAX_SKIPPED_IN_A_ROW = 50  # --skip-nonfinite: this many non-finite batches in a row stop the run


def fmt(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))


@dataclass
class FitResult:
    """What `fit` returns: where training ended, its timing and the final evaluation. The fields
    after `device` are the stages' own figures, which they fill in (None until then)."""

    step: int  # the step training ended at
    steps: int  # the schedule's total
    seconds: float  # the loop's wall time, its evaluations included
    steps_run: int  # steps taken by this call (a resumed run counts from where it resumed)
    samples_per_second: float | None  # over the loop less its evaluations; None when no step ran
    world_size: int
    main: bool  # rank 0, which speaks for every rank under torchrun
    skipped: int  # unreadable training items skipped by the loader
    nonfinite_skipped: int  # batches skipped by --skip-nonfinite
    best: float | None  # the best value of `best_metric`, None without one
    metrics: dict  # the final evaluation (empty on ranks other than 0)
    device: str
    wall_seconds: float | None = None
    out: str | None = None
    parameters: int | None = None
    tokens_per_second: float | None = None
    flops_per_token: float | None = None


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
) -> FitResult:
    """Train `model` on `train` (a dataset of (tensor, label, problem) items). `prepare` turns a
    batch into forward arguments on the device; `evaluate` returns metrics (rank 0 only); `save`
    writes the checkpoint (rank 0 only). Returns the final evaluation and timing.

    keep_schedule: on resume, finish the saved schedule (its total steps) rather than one
    recomputed from `cfg` (the caller passes True unless the user set a new length)."""
    return Trainer(model, train, prepare=prepare, evaluate=evaluate, save=save, run_dir=run_dir, cfg=cfg,
                   resume=resume, keep_schedule=keep_schedule, best_metric=best_metric, preview=preview,
                   console=console, run_config=run_config, skipped=skipped).run()


class Trainer:
    """One call of `fit`: the constructor sets the run up (device, optimizers, resumed state,
    data, schedule, wandb), `run` is the loop, and each part of a step is a method; what the
    steps share (the step, the best metric, the last save, the loss read so far) lives here."""

    def __init__(self, model, train, *, prepare, evaluate, save, run_dir, cfg, resume, keep_schedule,
                 best_metric, preview, console, run_config, skipped):
        self.t_setup = time.time()
        self.model, self.prepare, self.evaluate, self.save, self.cfg = model, prepare, evaluate, save, cfg
        self.best_metric, self.preview = best_metric, preview
        self.console = console or Console(stderr=True)
        self.state_kind = type(model)  # a resumed state must be of this kind (`state.load_state`)
        self.every_steps, self.every_seconds = save_interval(cfg.save_every)
        self.main = dist.is_main()
        self.run_dir = Path(run_dir)
        self.state_path = self.run_dir / STATE_FILE
        self.device = training_device(cfg.device, cfg.deterministic)
        dist.setup(self.device)
        self.ctx = autocast_context(self.device, cfg.precision)
        self.budget = parse_duration(cfg.time_budget) if cfg.time_budget else None
        self.skipped = skipped or Skipped()

        model.to(self.device)
        self.optimizers = make_optimizers(model, cfg, self.device)
        self.step, self.best, self.wandb_id = 0, math.inf, None
        saved_total = self._restore() if resume else None
        if dist.rank() > 0:  # other ranks: their own dropout stream, reproducible from seed and step
            torch.manual_seed(cfg.seed * 7919 + self.step * 131 + dist.rank())
        self.start_step = self.step
        self.data = TrainBatches(train, batch_size=cfg.batch_size, seed=cfg.seed, device=self.device,
                                 workers=default_workers() if cfg.workers is None else cfg.workers,
                                 start=self.step, skipped=self.skipped)
        self.schedule = self._make_schedule(saved_total, keep_schedule)
        self.threads = Threads(self.data.workers_started, follow=not cfg.deterministic)
        started = self.threads.start()
        if self.main:
            self.console.print(started)
        self.scheds = [torch.optim.lr_scheduler.LambdaLR(opt, self.schedule, last_epoch=self.step - 1)
                       for opt in self.optimizers.values()]
        if resume and self.main:
            self.console.print(f"resuming {self.run_dir} at step {self.step}"
                               + (f"/{self.schedule.total}" if not self.budget else ""))

        self.net = dist.wrap(model, self.device)
        if cfg.compile:
            self.net = torch.compile(self.net)
        self.wandb_run = self._start_wandb(run_config) if cfg.wandb and self.main else None
        self.history = MetricsLog(self.run_dir / "metrics.jsonl", self.step if resume else None) if self.main else None
        self.saved_step = self.step if resume else None  # the step of the training state on disk
        self.last_save = time.time()
        self.eval_seconds = 0.0
        self.nonfinite_skipped = self.skipped_in_a_row = 0
        self.bad_step = torch.full((), -1, device=self.device, dtype=torch.long)  # the first step whose loss was not finite
        self.loss_sum = torch.zeros((), device=self.device)  # since the last read, on the device
        self.window = 0  # the steps in loss_sum
        self.running = None  # the smoothed loss on the progress bar
        self.t_measure = None  # when the steps timed for a time budget began

    def run(self) -> FitResult:
        """Train to the schedule's end, then evaluate and checkpoint once more."""
        self.model.train()
        self.t_loop = time.time()
        batches = iter(self.data)
        lines = LogLines(self.console, self.main, self.step)
        try:
            with stop_signals() as self.stop, progress_bar(self.console, self.main) as self.progress:
                self.task = self.progress.add_task("training", total=None if self.budget else self.schedule.total,
                                                   completed=self.step, info="")
                while self.step < self.schedule.total:
                    out = self._train_step(self.prepare(next(batches), self.device))
                    self.progress.update(self.task, advance=1)
                    lines.tick(self.step, None if self.budget else self.schedule.total, self.progress.tasks[0].fields["info"])
                    if (changed := self.threads.follow()) and self.main:
                        self.progress.console.print(changed)
                    self._time_the_steps()
                    if self._read_due():
                        self._read_loss(out.metrics)
                    if self.step % self.cfg.eval_every == 0 and self.step < self.schedule.total:
                        self._evaluate_midway()
                    else:
                        self._maybe_periodic_save()
            loop_seconds = time.time() - self.t_loop
            loop_eval_seconds = self.eval_seconds  # evaluations inside the loop, not the final one below
            metrics = self._evaluate()
            self._checkpoint(metrics)
            self.model.eval()  # what callers do next (grids, scores) must not update a codebook
        except KeyboardInterrupt:
            self._checkpoint({}, weights=not (self.run_dir / "model.safetensors").exists())
            raise Interrupted(f"interrupted at step {self.step}; saved to {self.run_dir}, continue with --resume") from None
        finally:
            if self.wandb_run is not None:
                self.wandb_run.finish()
        return self._result(metrics, loop_seconds, loop_eval_seconds)

    def _restore(self) -> int | None:
        """Load the training state of `run_dir` (weights, optimizers, step, best metric, random
        state); returns the schedule's total it was saved with (None before a budget was fitted)."""
        if not self.state_path.exists():
            raise VQError(f"nothing to resume in {self.run_dir} (no {STATE_FILE})")
        state = TrainState.load(self.state_path, self.state_kind)
        state.restore(self.model, self.optimizers, self.device, self.state_path)
        self.step, self.best, self.wandb_id = int(state.step), float(state.best), state.wandb_id
        return state.total

    def _make_schedule(self, saved_total: int | None, keep_schedule: bool) -> Schedule:
        if keep_schedule and saved_total is not None:
            self.budget = None  # a resumed run finishes the schedule its budget was fitted to
            return Schedule(self.cfg, int(saved_total))
        if self.budget:
            # A placeholder until the step time is measured; a resumed run keeps its learning rate
            # where it was meanwhile, rather than jumping back to the start of a fresh cosine.
            total = max(int(saved_total), self.step + MEASURE_TO + 1) if saved_total is not None else self.step + 10**9
            return Schedule(self.cfg, total, fitted=False)
        return Schedule(self.cfg, total_steps(self.cfg, self.data.epoch_size))

    def _start_wandb(self, run_config: dict | None):
        import wandb

        run = wandb.init(
            project=self.cfg.wandb_project, dir=str(self.run_dir), config=run_config or to_dict(self.cfg),
            id=self.wandb_id, mode=os.environ.get("WANDB_MODE", "offline"), resume="allow" if self.wandb_id else None,
        )
        self.wandb_id = run.id
        return run

    def _train_step(self, batch: tuple):
        """Forward, backward and the optimizer update; returns the model's output."""
        with self.ctx:
            out = self.net(*batch, step=self.step)
        loss = out.loss
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        skip = False
        if self.cfg.skip_nonfinite:
            skip = self._clip_or_skip(loss)
        elif self.cfg.grad_clip > 0:
            for opt in self.optimizers.values():
                clip(opt, self.cfg.grad_clip)
        self.stop["updating"] = True
        if not skip:
            for opt in self.optimizers.values():
                opt.step()
        for sched in self.scheds:  # a skipped batch still counts as a step: the schedule and data order go on
            sched.step()
        self.step += 1
        self.stop["updating"] = False
        if self.stop["now"]:
            raise KeyboardInterrupt
        if not skip:
            self.loss_sum += loss.detach().float()
            self.window += 1
            if not self.cfg.skip_nonfinite:  # on the device: no sync, read with the loss
                self.bad_step.copy_(torch.where((self.bad_step < 0) & ~torch.isfinite(loss.detach()), self.step, self.bad_step))
        return out

    def _clip_or_skip(self, loss: torch.Tensor) -> bool:
        """--skip-nonfinite: clip, and whether to skip this batch for a non-finite loss or gradient."""
        # The gradient norms are the same on every rank after DDP's all-reduce, so all
        # skip together (a rank's own loss would not be: in one process it counts too).
        norms = [clip(opt, self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf) for opt in self.optimizers.values()]
        ok = torch.isfinite(torch.stack(norms)).all()
        skip = not bool(ok if dist.active() else ok & torch.isfinite(loss.detach()))
        self.nonfinite_skipped += skip
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skip else 0
        if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise self._nonfinite(f"{self.step + 1} and the {MAX_SKIPPED_IN_A_ROW - 1} before it (every batch skipped)")
        return skip

    def _time_the_steps(self) -> None:
        """Report the set-up time; under a time budget, time steps MEASURE_FROM to MEASURE_TO
        (after compilation and worker start-up) and fit the schedule to the budget from them."""
        if self.step == self.start_step + 1 and self.main:
            self.progress.console.print(f"first step after {time.time() - self.t_setup:.1f} s of set-up")
        if self.budget and self.step == self.start_step + MEASURE_FROM:
            self.t_measure = time.time()
        if self.budget and self.step == self.start_step + MEASURE_TO:
            self._refit_budget()
            self.schedule.fitted = True

    def _refit_budget(self) -> None:
        self.schedule.total = dist.broadcast_object(fit_budget(self.step, self.start_step, self.t_measure, self.t_loop,
                                                               self.budget, self.eval_seconds, self.cfg))
        self.progress.update(self.task, total=self.schedule.total)

    def _read_due(self) -> bool:
        # Every rank reads at the same steps (the reads carry collectives under torchrun);
        # one process also stops at the very step a signal arrived.
        return (self.step % self.cfg.log_every == 0 or self.step == self.schedule.total
                or self.step == self.start_step + MEASURE_TO or (self.stop["stop"] and not dist.active())
                or (dist.active() and self.step % STOP_EVERY == 0))

    def _read_loss(self, train_metrics: dict) -> None:
        """The one host read per log interval: the mean loss since the last read and the
        non-finite check. Then every rank agrees on the schedule's end and on a stop."""
        value = float(self.loss_sum) / max(1, self.window)
        # Every rank stops together: the first non-finite step over all ranks, or none.
        first_bad = torch.where(self.bad_step < 0, torch.iinfo(torch.long).max, self.bad_step).reshape(1)
        if dist.active():
            torch.distributed.all_reduce(first_bad, op=torch.distributed.ReduceOp.MIN)
        if int(first_bad) != torch.iinfo(torch.long).max:
            raise self._nonfinite(int(first_bad))
        self.loss_sum.zero_()
        self.window = 0
        self.running = value if self.running is None else 0.7 * self.running + 0.3 * value
        self.progress.update(self.task, info=f"loss {self.running:.4f}" + (
            f", {self.nonfinite_skipped} non-finite batches skipped" if self.nonfinite_skipped else ""))
        if self.wandb_run is not None:
            self.wandb_run.log({"train/loss": value, "train/lr": self.scheds[0].get_last_lr()[0],
                                **{f"train/{k}": float(v) for k, v in train_metrics.items()}}, step=self.step)
        if self.budget and time.time() - self.t_loop > self.budget:
            self.schedule.total, self.schedule.fitted = self.step, True  # spent: stop here
        self.schedule.total = dist.broadcast_object(self.schedule.total)
        if dist.broadcast_object(self.stop["stop"]):
            raise KeyboardInterrupt

    def _evaluate_midway(self) -> None:
        """An evaluation every eval_every steps, with a checkpoint; its time refits a budget."""
        metrics = self._evaluate()
        self._checkpoint(metrics)
        if self.main:
            self.progress.console.print(f"step {self.step}: {fmt(metrics)}")
        if self.budget and self.t_measure is not None:
            self._refit_budget()

    def _maybe_periodic_save(self) -> None:
        """--save-every: rank 0 alone saves the training state, what a kill -9 would otherwise lose."""
        if self.main and self.step < self.schedule.total and (
                (self.every_steps and self.step % self.every_steps == 0)
                or (self.every_seconds and time.time() - self.last_save >= self.every_seconds)):
            self._checkpoint({}, weights=False, agree=False)

    def _evaluate(self) -> dict:
        """Rank 0 runs the caller's `evaluate` and logs it (metrics.jsonl, wandb); every rank waits."""
        t = time.time()
        metrics = {}
        if self.main:
            self.model.eval()
            with torch.no_grad(), self.ctx:
                metrics = {k: float(v) for k, v in self.evaluate(self.model).items()}
            self.model.train()
            self.history.write({"step": self.step, **metrics})
            if self.wandb_run is not None:
                log = {f"val/{k}": v for k, v in metrics.items()}
                if self.preview is not None:
                    import wandb

                    img = self.preview(self.model).cpu().permute(1, 2, 0).numpy()  # (C, H, W) uint8 -> (H, W, C)
                    log["val/preview"] = wandb.Image(img[..., 0] if img.shape[-1] == 1 else img)
                self.wandb_run.log(log, step=self.step)
        dist.barrier()
        self.eval_seconds += time.time() - t
        return metrics

    def _checkpoint(self, metrics: dict, weights: bool = True, agree: bool = True) -> None:
        """Rank 0 writes the training state (and with `weights`, the checkpoint users load) —
        never non-finite weights. Called by every rank (`agree`), they stop together on those,
        with the last good state kept; a periodic save by rank 0 alone just skips the write and
        leaves the stop to the next agreed loss read."""
        self.last_save = time.time()
        finite = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all() & (self.bad_step < 0)
        bad = (~finite).float().reshape(1)
        if agree:
            dist.all_reduce_sum_(bad)
        if float(bad) > 0:
            if not agree:
                return
            raise self._nonfinite(int(self.bad_step) if int(self.bad_step) >= 0 else f"{self.step} or before")
        if not self.main:
            return
        better = self.best_metric is None or metrics.get(self.best_metric, math.inf) < self.best
        if weights and (better or not (self.run_dir / "model.safetensors").exists()):
            if self.best_metric is not None and self.best_metric in metrics:
                self.best = metrics[self.best_metric]
            self.save(self.model, metrics)
        TrainState.capture(self.model, self.optimizers, self.step, self.schedule.total if self.schedule.fitted else None,
                           self.best, self.device, self.wandb_id, finished=self.step >= self.schedule.total
                           ).save(self.state_path, self.state_kind)
        self.saved_step = self.step

    def _nonfinite(self, at: int | str) -> VQError:
        kept = (f"the last good training state (step {self.saved_step}) in {self.run_dir} is kept; continue it with "
                "--resume and a lower --lr, or" if self.saved_step is not None else "nothing was saved; lower --lr, or")
        return VQError(f"the loss became non-finite at step {at}; stopped without saving: {kept} "
                       "pass --skip-nonfinite to skip such batches")

    def _result(self, metrics: dict, loop_seconds: float, loop_eval_seconds: float) -> FitResult:
        if self.skipped.count and self.main:
            self.console.print(f"[yellow]{self.skipped.summary()}[/yellow]")
        if self.nonfinite_skipped and self.main:
            self.console.print(f"[yellow]{self.nonfinite_skipped} batches with a non-finite loss or gradient were skipped[/yellow]")
        steps_run = self.step - self.start_step
        train_seconds = max(1e-9, loop_seconds - loop_eval_seconds)
        return FitResult(step=self.step, steps=self.schedule.total, seconds=loop_seconds, steps_run=steps_run,
                         samples_per_second=steps_run * self.cfg.batch_size / train_seconds if steps_run else None,
                         world_size=dist.world_size(), main=self.main, skipped=self.skipped.count,
                         nonfinite_skipped=self.nonfinite_skipped,
                         best=self.best if self.best_metric else None, metrics=metrics, device=str(self.device))
