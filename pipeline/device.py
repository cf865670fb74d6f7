"""Where models run: the device a name asks for (checked, with one-line refusals), bf16 autocast
where it pays, and the seed that decides initial weights. Every job and the `Pipeline` use these."""

import os
from contextlib import nullcontext

import torch

from vq.pipeline import distributed as dist
from vq.pipeline.errors import VQError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return dist.local_device(torch.device("cuda"))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VQError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VQError(f"device '{name}' asked for, but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise VQError(f"device '{name}' asked for, but this machine has {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise VQError(f"device '{name}' asked for, but MPS is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise VQError(f"unsupported device '{name}' (use auto, cpu, cuda, cuda:N or mps)")
    return dist.local_device(device) if device.index is None else device


def training_device(name: str, deterministic: bool) -> torch.device:
    """The device a training run asks for, set up for training: TF32 for fp32 matmuls on CUDA
    (outside the quantizer, which switches it off for itself); with `deterministic`, deterministic
    kernels only."""
    device = resolve_device(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' condition for determinism
        torch.use_deterministic_algorithms(True)
    return device


PRECISIONS = ("auto", "bf16", "fp32")  # auto: bf16 on CUDA, else fp32


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise VQError(f"unknown precision '{precision}' (use {', '.join(PRECISIONS)})")


def autocast_context(device: torch.device, precision: str):
    check_precision(precision)
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def seed_everything(seed: int) -> None:
    """Before a model is built: `--seed` decides the initial weights too."""
    torch.manual_seed(seed)
