"""Stage 1 as a job: data -> tokenizer -> trained checkpoint, test metrics and a reconstruction grid."""

import time
from contextlib import nullcontext
from dataclasses import replace

from rich.console import Console

from vq.pipeline import distributed as dist
from vq.pipeline.checkpoint import save_checkpoint
from vq.pipeline.configs import build, to_dict
from vq.pipeline.data.images import image_batch
from vq.pipeline.data.loader import EvalImages, Skipped
from vq.pipeline.data.sources import load_data, resumed_data
from vq.pipeline.data.splits import ImageData, StreamImages
from vq.pipeline.device import resolve_device, seed_everything
from vq.pipeline.errors import VQError
from vq.pipeline.files import run_lock
from vq.pipeline.generate.images import grid, save_grid
from vq.pipeline.kinds import tokenizer_class
from vq.pipeline.records import TokenizerRecord
from vq.pipeline.train.jobs import FitJob, job_configs, saved_run
from vq.pipeline.train.scores import evaluate_tokenizer, reconstruction_grid
from vq.pipeline.train.trainer import FitResult, fit
from vq.stage1_vqvae.losses import check_perceptual


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


def fit_tokenizer(job: FitJob, console: Console | None = None) -> FitResult:
    console = console or Console(stderr=True)
    kind = tokenizer_class(job.kind)
    saved = saved_run(job, kind, TokenizerRecord)
    train_cfg, model_layers = job_configs(job, kind, saved)
    merged = {k: v for layer in model_layers for k, v in layer.items()}
    try:  # before any data is loaded
        check_perceptual(merged.get("perceptual", "none"), merged.get("lpips_weights"))
    except FileNotFoundError as e:
        raise VQError(str(e)) from None
    device = resolve_device(train_cfg.device)
    data_opts = resumed_data(saved, job.data) if saved else job.data
    main = dist.is_main()
    dist.setup(device)

    t0 = time.time()
    data = load_data(data_opts)
    if main:
        console.print(f"data: {data.spec} ({describe_sizes(data)}, {data.channels}x{data.image_size}x{data.image_size}, "
                      f"{len(data.class_names)} classes)")
    seed_everything(train_cfg.seed)
    model = build_tokenizer(kind, data, model_layers)
    params = sum(p.numel() for p in model.parameters())
    if main:
        shape = "x".join(map(str, model.code_shape or ()))
        console.print(f"model: {kind.name}, {params / 1e6:.2f}M parameters"
                      + (f", {shape} codes from {model.codebook_size}" if kind.discrete else ""))
    # What export needs to rebuild exactly these splits from the tokenizer alone.
    stored_data = replace(data_opts, spec=data.spec, image_size=data.image_size, channels=data.channels).stored(job.out)
    record = TokenizerRecord(job.out, kind, model.config, class_names=tuple(data.class_names), preset=job.preset,
                             train=to_dict(train_cfg), dataset=data.describe(), data=stored_data)
    skipped = Skipped(strict=data_opts.strict)
    held_out = EvalImages(data.test, train_cfg.workers, skipped)

    def save(m, metrics):
        save_checkpoint(job.out, m, replace(record, metrics=metrics, eval_images=len(held_out.split)))

    with (run_lock(job.out) if main else nullcontext()):
        result = fit(
            model, data.train,
            prepare=image_batch, evaluate=lambda m: evaluate_tokenizer(m, held_out.split), save=save,
            run_dir=job.out, cfg=train_cfg, resume=job.resume, keep_schedule=not job.new_length,
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
    train, test = data.sizes
    train = "a stream of" + (f" {train}" if train else "") if isinstance(data.train, StreamImages) else str(train)
    return f"{train} train / {test if test is not None else 'streamed'} test"
