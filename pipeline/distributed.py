"""Multi-process training under torchrun, in one small module: everything else asks this one.

torchrun (PyTorch's own launcher) sets RANK, WORLD_SIZE and LOCAL_RANK; when they are there we
join the process group (NCCL on GPUs, gloo on CPU), each rank takes the GPU of its LOCAL_RANK,
and only rank 0 writes files. Without them every helper here is a no-op, so a plain `vq` run is
one process with no torch.distributed state at all.

    torchrun --nproc-per-node 2 --no-python vq fit-tokenizer ...
"""

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def launched() -> bool:
    """True when torchrun (or any launcher with its environment) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (from torchrun's environment until the group is joined)."""
    return dist.get_rank() if active() else int(os.environ.get("RANK", 0)) if launched() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else int(os.environ.get("WORLD_SIZE", 1)) if launched() else 1


def is_main() -> bool:
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """Under torchrun on CUDA each rank drives the GPU of its LOCAL_RANK."""
    if launched() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def setup(device: torch.device) -> None:
    """Join torchrun's process group once; a no-op outside torchrun."""
    if not launched() or active():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30), **kwargs)


def teardown() -> None:
    if active():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Rank src's Python object on every rank (small things: a decision, an error message)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (the identity in one process)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    if active():
        dist.broadcast(tensor, src=src)
    return tensor


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model in DistributedDataParallel when the group is joined. Buffers (the codebook) are
    not re-broadcast from rank 0 at each forward: the quantizer keeps them identical itself, and
    a broadcast would throw the other ranks' codebook statistics away."""
    if not active():
        return model
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    newer = "forward_sync_buffers" in inspect.signature(DDP).parameters  # torch >= 2.12 renamed the switch
    no_sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)
