"""What a training run keeps beside its checkpoint: its whole state (the model's and optimizers'
state dicts, step, schedule, RNG states, ...) as one safetensors file, tensors in its table and
the structure and plain values as JSON in its metadata (`--resume` reads it back exactly; nothing
is ever unpickled); its metrics log; and the signals that stop it cleanly."""

import json
import signal
from dataclasses import dataclass, fields
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from vq.pipeline.errors import VQError
from vq.pipeline.files import atomic_write_bytes

FORMAT_VERSION = 1


def _pack(obj, tensors: dict, key: str):
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"$tensor": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _pack(v, tensors, f"{key}/{k}") for k, v in obj.items()}
        return {"$items": [[k, _pack(v, tensors, f"{key}/{k}")] for k, v in obj.items()]}  # e.g. int keys
    if isinstance(obj, (list, tuple)):
        return [_pack(v, tensors, f"{key}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {key}")


def _unpack(obj, tensors):
    if isinstance(obj, dict):
        if "$tensor" in obj:
            return tensors.get_tensor(obj["$tensor"])
        if "$items" in obj:
            return {k: _unpack(v, tensors) for k, v in obj["$items"]}
        return {k: _unpack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, tensors) for v in obj]
    return obj


def state_bytes(state: dict, kind: type) -> bytes:
    """A nested state (the model's and optimizer's state dicts, step, RNG states, ...) as one
    safetensors blob: tensors in the table, the structure and plain values as JSON metadata."""
    tensors: dict = {}
    tree = _pack(state, tensors, "state")
    return save(tensors, metadata={"vq": json.dumps({"kind": kind.name, "format_version": FORMAT_VERSION, "tree": tree})})


def check_state(path: Path, kind: type | None = None) -> None:
    """Refuse a training state that load_state would refuse, reading only its header (before a
    resumed run loads any data)."""
    load_state(path, kind, tensors=False)


def load_state(path: Path, kind: type | None = None, tensors: bool = True) -> dict | None:
    """The inverse of state_bytes, refusing anything but a vq training state of this kind (the
    name it stored is one of the kind's names, present or former)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("vq", "null"))
            if not isinstance(meta, dict) or "tree" not in meta:
                raise VQError(f"{path} is a safetensors file but not a vq training state; start a new run")
            if kind is not None and meta.get("kind") not in (kind.name, *getattr(kind, "former_names", ())):
                raise VQError(f"{path} is the training state of a {str(meta.get('kind'))[:40]}, not a {kind.name}")
            if meta.get("format_version", 0) > FORMAT_VERSION:
                raise VQError(f"{path} was written by a newer vq (format {meta['format_version']}); upgrade vq")
            return _unpack(meta["tree"], f) if tensors else None
    except VQError:
        raise
    except (SafetensorError, OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise VQError(f"{path} is not a readable training state ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                      "start a new run with --force") from None


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


@dataclass
class TrainState:
    """A training run at the end of a step: everything `--resume` needs to continue it exactly."""

    model: dict  # the model's state dict, on the CPU
    optimizers: dict  # name -> an optimizer's state dict
    step: int
    total: int | None  # the schedule's total steps (None before a time budget was fitted)
    best: float  # the best value so far of the metric the checkpoint is kept by
    rng: torch.Tensor
    cuda_rng: torch.Tensor | None = None
    wandb_id: str | None = None
    finished: bool | None = None  # whether the run reached its last step (None: a state from before this mark)

    @classmethod
    def capture(cls, model: torch.nn.Module, optimizers: dict, step: int, total: int | None, best: float,
                device: torch.device, wandb_id: str | None, finished: bool = False) -> "TrainState":
        return cls({k: v.detach().cpu() for k, v in model.state_dict().items()},
                   {name: opt.state_dict() for name, opt in optimizers.items()}, step, total, best, torch.get_rng_state(),
                   torch.cuda.get_rng_state(device) if device.type == "cuda" else None, wandb_id, finished)

    def save(self, path: Path, kind: type) -> None:
        atomic_write_bytes(path, state_bytes({f.name: getattr(self, f.name) for f in fields(self)}, kind))

    @classmethod
    def load(cls, path: Path, kind: type) -> "TrainState":
        tree = load_state(path, kind)
        try:
            return cls(**{f.name: tree[f.name] for f in fields(cls) if f.name in tree})
        except (KeyError, TypeError) as e:
            raise VQError(f"{path} is not a readable training state ({e}); start a new run with --force") from None

    def restore(self, model: torch.nn.Module, optimizers: dict, device: torch.device, path: Path) -> None:
        """Put the weights, the optimizers' state and the random state back."""
        try:
            model.load_state_dict(self.model, strict=True)
            if set(self.optimizers) != set(optimizers):
                raise KeyError(f"optimizers {sorted(self.optimizers)}, not {sorted(optimizers)}")
            for name, opt in optimizers.items():
                opt.load_state_dict(self.optimizers[name])
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise VQError(f"cannot resume from {path}: it does not fit this model ({str(e).strip().splitlines()[0]})") from None
        torch.set_rng_state(self.rng.cpu())
        if device.type == "cuda" and self.cuda_rng is not None:
            torch.cuda.set_rng_state(self.cuda_rng.cpu(), device)
