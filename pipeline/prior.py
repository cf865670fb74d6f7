"""Stage 2 as a job: exported codes -> class-conditional prior, keeping the checkpoint with the
best validation NLL (priors overfit small datasets within a few epochs) and reporting the test
NLL in bits per code token and bits per pixel dimension. A sketch prior (`condition = "sketch"`)
is trained on the same codes exported with every image's edge map."""

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from vq.pipeline import distributed as dist
from vq.pipeline.checkpoint import check_state, load_checkpoint, read_info, save_checkpoint
from vq.pipeline.configs import build, to_dict
from vq.pipeline.data import IN_MEMORY_BYTES, stored_data_options, to_float
from vq.pipeline.device import resolve_device, seed_everything
from vq.pipeline.export import codes_of_run, export_codes, load_codes, sketch_record
from vq.pipeline.generate import SamplingOptions, generate_images
from vq.pipeline.images import grid
from vq.pipeline.jobs import job_configs, new_length
from vq.pipeline.loader import real_images
from vq.pipeline.presets import PRIOR_PRESETS
from vq.pipeline.records import TokenizerInfo
from vq.pipeline.runs import STATE_FILE, VQError, atomic_write_json, check_run_dir, resolve_stored, run_lock, stored_path
from vq.pipeline.stage_scores import batch_preparer, held_out_bits, pixel_dims
from vq.pipeline.trainer import FitResult, fit
from vq.stage1_vqvae import TOKENIZERS
from vq.stage2_prior import PRIOR_KINDS, PRIORS

VAL_FRACTION = 0.05
PREVIEW_PER_CLASS = 6  # --wandb: real images and as many guided samples in each class's row
PREVIEW_GUIDANCE = 2.0  # as `vq sample`'s default


def prior_class(kind: str):
    """A prior's class by kind (autoregressive, masked) or by the registry name a run stores."""
    name = PRIOR_KINDS.get(kind, kind)
    if name not in PRIORS:
        raise VQError(f"unknown prior kind '{kind}'; choose one of {', '.join(PRIOR_KINDS)}")
    return PRIORS[name]


@dataclass
class PriorJob:
    model: str = "autoregressive"  # a kind in PRIOR_KINDS (or a name in PRIORS)
    tokenizer: Path = Path("runs/tokenizer")
    codes: Path | None = None  # None: the tokenizer's own (TOKENIZER/codes), or on --resume the run's
    out: Path = Path("runs/prior")
    preset: str = "demo"
    config_file: Path | None = None
    model_overrides: dict = field(default_factory=dict)
    train_overrides: dict = field(default_factory=dict)
    resume: bool = False
    force: bool = False


def validation_split(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = max(1, int(n * VAL_FRACTION)) if n > 1 else 0
    return perm[k:], perm[:k]


def code_splits(codeset, codebook_size: int, sketches: bool = False) -> tuple:
    """(train, validation, test) of the exported codes (with sketches: records of codes and
    sketch): in memory when they fit (the fast path), else memory-mapped shards read by
    DataLoader workers."""
    train_all, test = codeset.splits["train"], codeset.splits["test"]
    if sketches:
        train_all, test = train_all.with_sketches(), test.with_sketches()
    train_idx, val_idx = validation_split(len(train_all), seed=0)
    train, val = train_all.subset(train_idx.numpy()), train_all.subset(val_idx.numpy())
    if train_all.nbytes <= IN_MEMORY_BYTES:
        train, val, test = (s.to_memory(codebook_size) for s in (train, val, test))
    return train, val, test


def sample_preview(tokenizer_dir: Path, device: torch.device, class_names: list[str], per_class: int = PREVIEW_PER_CLASS):
    """For --wandb: a callable that draws guided samples of every class from the prior being
    trained, through the code `vq sample` uses, beside real test images of that class: one row
    per class, the real images first -> (C, H, W) uint8."""
    tok = TokenizerInfo.read(tokenizer_dir)
    tokenizer, _ = load_checkpoint(tok.run_dir, "tokenizer", TOKENIZERS, str(device))
    test = real_images(stored_data_options(tok.stored, tokenizer_dir).load().test, per_class, len(class_names), seed=0)
    images = to_float(test.images)
    blank = -torch.ones(per_class, *images.shape[1:])
    real = [torch.cat([images[test.labels == c], blank])[:per_class] for c in range(len(class_names))]
    labels = torch.arange(len(class_names)).repeat_interleave(per_class)

    def preview(model) -> torch.Tensor:
        samples = generate_images(tokenizer, model, labels, SamplingOptions(cfg=PREVIEW_GUIDANCE, seed=0)).cpu()
        rows = [torch.cat([real[c], samples[c * per_class : (c + 1) * per_class]]) for c in range(len(class_names))]
        return grid(torch.cat(rows), nrow=2 * per_class)

    return preview


def fit_prior(job: PriorJob, console: Console | None = None) -> FitResult:
    console = console or Console(stderr=True)
    cls = prior_class(job.model)
    tok = TokenizerInfo.read(job.tokenizer)
    if not tok.discrete:
        raise VQError(f"{job.tokenizer} holds a {tok.model}, which has no codes for a prior; "
                      "it samples from its own latent prior with `vq sample`")
    check_run_dir(job.out, resume=job.resume, force=job.force, what="prior")
    saved = None
    if job.resume and (job.out / "config.json").exists():
        saved = read_info(job.out, "prior")
        if saved.get("model") != cls.name:
            kind = next((k for k, name in PRIOR_KINDS.items() if name == saved.get("model")), saved.get("model"))
            raise VQError(f"{job.out} holds a {kind} prior; resume it with --kind {kind}")
        if saved.get("tokenizer_fingerprint") != tok.fingerprint:
            raise VQError(f"{job.out} was trained on another tokenizer's codes; it cannot resume on {job.tokenizer}")
    if job.resume:
        check_state(job.out / STATE_FILE, cls.name)
    train_cfg, model_layers = job_configs(job, PRIOR_PRESETS, cls.name, cls.config_class, saved)
    codes_dir = Path(job.codes) if job.codes is not None else (
        codes_of_run(resolve_stored(saved["codes_dir"], job.out) if saved and saved.get("codes_dir") else None, job.tokenizer))
    device = resolve_device(train_cfg.device)
    main = dist.is_main()
    dist.setup(device)
    # The model config as the codes will make it, checked before a (re-)export that may take long.
    (h, w) = tok.grid
    probe = build(cls.config_class, model_layers[0], {"height": h, "width": w, "sketch_size": tok.image_size},
                  *model_layers[1:], where="model config")
    try:
        probe.validate()
    except ValueError as e:
        raise VQError(str(e)) from None
    sketched = "sketch" in probe.conditions

    t0 = time.time()
    meta = export_codes(job.tokenizer, codes_dir, device=train_cfg.device, workers=train_cfg.workers,
                        sketches=sketched, console=console)  # refuses another tokenizer's codes
    codeset = load_codes(codes_dir)
    h, w = meta["grid"]
    train, val, test = code_splits(codeset, meta["codebook_size"], sketched)
    from_codes = {"codebook_size": meta["codebook_size"], "height": h, "width": w,
                  "num_classes": len(codeset.class_names), "sketch_size": meta["image"]["image_size"]}
    seed_everything(train_cfg.seed)
    config = build(cls.config_class, model_layers[0], from_codes, *model_layers[1:], where="model config")
    try:
        model = cls(config)
    except ValueError as e:
        raise VQError(str(e)) from None
    params = sum(p.numel() for p in model.parameters())
    if main:
        console.print(f"prior: {params / 1e6:.2f}M parameters over {h}x{w} codes from {meta['codebook_size']}"
                      f"{', conditioned on class and sketch' if sketched else ''}, "
                      f"{len(train)} train / {len(val)} val / {len(test)} test maps")
    ckpt_meta = {"class_names": codeset.class_names, "tokenizer_fingerprint": tok.fingerprint,
                 "tokenizer_dir": stored_path(job.tokenizer, job.out), "codes_dir": stored_path(codes_dir, job.out),
                 "train": to_dict(train_cfg),
                 "preset": job.preset, "image": meta["image"],
                 **({"sketch": sketch_record(codes_dir, meta)} if sketched else {})}  # detector, drawings' boxes

    def save(m, metrics):
        save_checkpoint(job.out, m, kind="prior", meta={**ckpt_meta, "metrics": metrics})

    # The validation metric keeps the name older runs resume with; a masked prior's says what it is.
    val_metric = "val_bits" if model.exact_likelihood else "val_masked_bits"
    with run_lock(job.out) if main else nullcontext():
        result = fit(
            model, train, prepare=batch_preparer(config, train=True),
            evaluate=lambda m: {val_metric: held_out_bits(m, val)[1]}, save=save,
            run_dir=job.out, cfg=train_cfg, resume=job.resume, keep_schedule=not new_length(job),
            best_metric=val_metric, console=console,
            preview=sample_preview(job.tokenizer, device, codeset.class_names) if train_cfg.wandb and main else None,
            run_config={"model": to_dict(config), "train": to_dict(train_cfg), "codes": meta},
        )
        info = {"metrics": {}}
        if main:
            best, info = load_checkpoint(job.out, "prior", PRIORS, str(device))
            name, test_bits = held_out_bits(best, test)
            info["metrics"] = {**info.get("metrics", {}), f"test_{name}": test_bits,
                               **({"test_bits_per_dim": test_bits * h * w / pixel_dims(meta)} if best.exact_likelihood else {})}
            atomic_write_json(job.out / "config.json", info)
    result.wall_seconds, result.out, result.parameters = time.time() - t0, str(job.out), params
    result.metrics = info["metrics"]
    result.tokens_per_second = result.samples_per_second * h * w if result.samples_per_second else None
    result.flops_per_token = flops_per_token(config, causal=not model.parallel_decoding)
    return result


def flops_per_token(c, causal: bool = True) -> float:
    """Training FLOPs per token (forward + backward): 6 x the matmul parameters, plus attention's
    12 x layers x dim x context (Kaplan et al. 2020; nanoGPT's estimate_mfu, averaged over the
    causal context). Grouped-query attention shrinks the key/value projections; a sketch prior's
    cross-attention adds one more attention block per layer over h*w condition tokens (as many
    as the codes, so its key/value projections count once per token too)."""
    kv_dim = c.dim * (c.kv_heads or c.heads) // c.heads
    attention = 2 * c.dim * c.dim + 2 * c.dim * kv_dim
    cross = c.condition == "sketch"
    per_layer = attention * (2 if cross else 1) + 2 * c.ff_mult * c.dim * c.dim
    matmul_params = c.depth * per_layer + c.dim * c.codebook_size
    context = (c.seq_len + 1) / (2 if causal else 1) + (c.seq_len if cross else 0)  # a bidirectional prior attends to all
    return 6 * matmul_params + 12 * c.depth * c.dim * context
