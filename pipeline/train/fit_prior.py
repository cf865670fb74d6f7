"""Stage 2 as a job: exported codes -> a prior of any kind, keeping the checkpoint with the best
validation figure (priors overfit small datasets within a few epochs; the figure is the kind's
`held_out`), and reporting its test figure in bits (and for an exact likelihood, bits per pixel
dimension). A sketch prior (`condition = "sketch"`) is trained on the same codes exported with
every image's sketch maps."""

import math
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from vq.pipeline import distributed as dist
from vq.pipeline.checkpoint import load_model, save_checkpoint
from vq.pipeline.codes.export import export_codes
from vq.pipeline.codes.maps import CodeSet, batch_preparer, codes_of_run, load_codes
from vq.pipeline.codes.shards import sketch_record
from vq.pipeline.configs import build, to_dict
from vq.pipeline.data.images import to_float
from vq.pipeline.data.loader import real_images
from vq.pipeline.data.sources import load_data
from vq.pipeline.data.splits import IN_MEMORY_BYTES
from vq.pipeline.device import resolve_device, seed_everything
from vq.pipeline.errors import VQError
from vq.pipeline.files import run_lock, stored_path
from vq.pipeline.generate.draw import generate_images
from vq.pipeline.generate.images import grid
from vq.pipeline.kinds import prior_class
from vq.pipeline.records import PriorRecord, SamplingDefaults, TokenizerRecord
from vq.pipeline.train.jobs import FitJob, job_configs, sampling_defaults, saved_run
from vq.pipeline.train.scores import held_out_bits
from vq.pipeline.train.trainer import FitResult, fit
from vq.stage2_prior import SamplingOptions

VAL_FRACTION = 0.05
PREVIEW_PER_CLASS = 6  # --wandb: real images and as many guided samples in each class's row
PREVIEW_GUIDANCE = 2.0  # as `vq sample`'s default


def validation_split(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = max(1, int(n * VAL_FRACTION)) if n > 1 else 0
    return perm[k:], perm[:k]


def code_splits(codeset: CodeSet, sketches: bool = False) -> tuple:
    """(train, validation, test) of the exported codes (with sketches: records of codes and
    sketch): in memory when they fit (the fast path), else memory-mapped shards read by
    DataLoader workers."""
    train_all, test = codeset.splits["train"], codeset.splits["test"]
    if sketches:
        train_all, test = train_all.with_sketches(), test.with_sketches()
    train_idx, val_idx = validation_split(len(train_all), seed=0)
    train, val = train_all.subset(train_idx.numpy()), train_all.subset(val_idx.numpy())
    if train_all.nbytes <= IN_MEMORY_BYTES:
        train, val, test = (s.to_memory(codeset.record.codebook_size) for s in (train, val, test))
    return train, val, test


def sample_preview(tok: TokenizerRecord, device: torch.device, sampling: SamplingDefaults | None = None,
                   per_class: int = PREVIEW_PER_CLASS):
    """For --wandb: a callable that draws guided samples of every class from the prior being
    trained, through the code `vq sample` uses and with the run's own cuts (`sampling`), beside
    real test images of that class: one row per class, the real images first -> (C, H, W) uint8."""
    cuts = {"top_k": sampling.top_k, "top_p": sampling.top_p} if sampling is not None else {}
    tokenizer, classes = load_model(tok, device), len(tok.class_names)
    test = real_images(load_data(tok.data_options()).test, per_class, classes, seed=0)
    images = to_float(test.images)
    blank = -torch.ones(per_class, *images.shape[1:])
    real = [torch.cat([images[test.labels == c], blank])[:per_class] for c in range(classes)]
    labels = torch.arange(classes).repeat_interleave(per_class)

    def preview(model) -> torch.Tensor:
        samples = generate_images(tokenizer, model, labels, SamplingOptions(guidance=PREVIEW_GUIDANCE, seed=0, **cuts)).cpu()
        rows = [torch.cat([real[c], samples[c * per_class : (c + 1) * per_class]]) for c in range(classes)]
        return grid(torch.cat(rows), nrow=2 * per_class)

    return preview


def own_fields(kind: type, values: dict) -> dict:
    """What the codes decide, of the fields the kind's config has (a kind without sketches has no sketch_size)."""
    return {k: v for k, v in values.items() if k in kind.config_class.__dataclass_fields__}


def probe_config(kind: type, tok: TokenizerRecord, layers: tuple[dict, ...]):
    """The model config as the codes will make it, checked before a (re-)export that may take long."""
    from_codes = own_fields(kind, {**kind.shape_fields(tok.code_shape), "sketch_size": tok.image_size})
    config = build(kind.config_class, layers[0], from_codes, *layers[1:], where="model config")
    try:
        config.validate()
    except ValueError as e:
        raise VQError(str(e)) from None
    return config


def fit_prior(job: FitJob, console: Console | None = None) -> FitResult:
    console = console or Console(stderr=True)
    kind = prior_class(job.kind)
    tok = TokenizerRecord.read(job.tokenizer)
    if not tok.discrete:
        raise VQError(f"{job.tokenizer} holds a {tok.kind.name}, which has no codes for a prior; "
                      "it samples from its own latent prior with `vq sample`")
    saved = saved_run(job, kind, PriorRecord)
    if saved is not None and saved.tokenizer_fingerprint != tok.fingerprint:
        raise VQError(f"{job.out} was trained on another tokenizer's codes; it cannot resume on {job.tokenizer}")
    train_cfg, layers = job_configs(job, kind, saved)
    sampling = sampling_defaults(job, kind, saved)
    codes_dir = Path(job.codes) if job.codes is not None else codes_of_run(saved.codes_path if saved else None, job.tokenizer)
    device = resolve_device(train_cfg.device)
    main = dist.is_main()
    dist.setup(device)
    sketched = "sketch" in probe_config(kind, tok, layers).conditions

    t0 = time.time()
    export_codes(job.tokenizer, codes_dir, device=train_cfg.device, workers=train_cfg.workers, sketches=sketched,
                 console=console)  # refuses another tokenizer's codes
    codeset = load_codes(codes_dir)
    train, val, test = code_splits(codeset, sketched)
    model = build_prior(kind, codeset, layers, train_cfg.seed)
    params = sum(p.numel() for p in model.parameters())
    if main:
        console.print(f"prior: {params / 1e6:.2f}M parameters over {'x'.join(map(str, codeset.record.code_shape))} codes from "
                      f"{codeset.record.codebook_size}{', conditioned on class and sketch' if sketched else ''}, "
                      f"{len(train)} train / {len(val)} val / {len(test)} test maps")
    record = PriorRecord(job.out, kind, model.config, class_names=codeset.record.class_names, preset=job.preset,
                         train=to_dict(train_cfg), tokenizer_fingerprint=tok.fingerprint,
                         tokenizer_dir=stored_path(job.tokenizer, job.out), codes_dir=stored_path(codes_dir, job.out),
                         image=codeset.record.image, sketch=sketch_record(codes_dir, codeset.record) if sketched else None,
                         sampling=sampling)
    val_metric = kind.held_out.val
    with run_lock(job.out) if main else nullcontext():
        result = fit(
            model, train, prepare=batch_preparer(model.config, train=True, box=record.sketch.box if record.sketch else None),
            evaluate=lambda m: {val_metric: held_out_bits(m, val)},
            save=lambda m, metrics: save_checkpoint(job.out, m, replace(record, metrics=metrics)),
            run_dir=job.out, cfg=train_cfg, resume=job.resume, keep_schedule=not job.new_length, best_metric=val_metric,
            console=console, preview=sample_preview(tok, device, sampling) if train_cfg.wandb and main else None,
            run_config={"model": to_dict(model.config), "train": to_dict(train_cfg), "codes": codeset.record.shards},
        )
        result.metrics = test_figures(job.out, test, codeset, device) if main else {}
    result.wall_seconds, result.out, result.parameters = time.time() - t0, str(job.out), params
    codes_per_map = math.prod(model.code_shape)
    result.tokens_per_second = result.samples_per_second * codes_per_map if result.samples_per_second else None
    result.flops_per_token = kind.flops_per_token(model.config)
    return result


def build_prior(kind: type, codeset: CodeSet, layers: tuple[dict, ...], seed: int):
    """The prior over these codes: the preset, what the codes decide, then the file and the flags."""
    codes = codeset.record
    from_codes = own_fields(kind, {**kind.shape_fields(codes.code_shape), "codebook_size": codes.codebook_size,
                                   "num_classes": len(codes.class_names), "sketch_size": codes.image_size})
    seed_everything(seed)
    config = build(kind.config_class, layers[0], from_codes, *layers[1:], where="model config")
    try:
        return kind(config)
    except ValueError as e:
        raise VQError(str(e)) from None


def test_figures(out: Path, test, codeset: CodeSet, device) -> dict:
    """Rank 0: the best checkpoint's held-out figure on the test codes, written into its record."""
    record = PriorRecord.read(out)
    best = load_model(record, device)
    bits = held_out_bits(best, test)
    per_dim = {"test_bits_per_dim": bits * math.prod(best.code_shape) / codeset.record.pixel_dims} if best.exact_likelihood else {}
    metrics = {**record.metrics, f"test_{best.held_out.name}": bits, **per_dim}
    replace(record, metrics=metrics).write()
    return metrics
