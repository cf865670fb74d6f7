"""A checkpoint is a directory: `config.json` (kind, model name, format version, the model's
config, class names, dataset, fingerprint) + `model.safetensors`, loaded with strict key
checking; a training run's full state (weights, optimizer, step, RNG) is one more safetensors
file. Nothing a user hands in is ever unpickled."""

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from vq.pipeline.configs import to_dict
from vq.pipeline.runs import VQError, atomic_write_bytes, atomic_write_json, read_json

FORMAT_VERSION = 1


def save_checkpoint(run_dir: Path, model: torch.nn.Module, *, kind: str, meta: dict) -> str:
    """Write weights then config (each atomically); returns the weights' fingerprint."""
    run_dir = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = save(state)
    fp = hashlib.sha256(blob).hexdigest()[:16]
    atomic_write_bytes(run_dir / "model.safetensors", blob)
    atomic_write_json(run_dir / "config.json", {
        "kind": kind,
        "model": model.name,
        "format_version": FORMAT_VERSION,
        "fingerprint": fp,
        "config": to_dict(model.config),
        **meta,
    })
    return fp


def read_info(run_dir: Path, kind: str) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.exists():
        hint = "vq fit-tokenizer" if kind == "tokenizer" else "vq fit-prior"
        raise VQError(f"no {kind} at {run_dir} (no config.json); train one with `{hint}`")
    info = read_json(path)
    if not isinstance(info, dict) or "format_version" not in info:
        raise VQError(f"{path} was not written by vq (no format_version); pass a {kind} run directory")
    if info.get("kind") != kind:
        raise VQError(f"{run_dir} holds a {info.get('kind', 'unknown thing')}, not a {kind}")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise VQError(f"{run_dir} was written by a newer vq (format {info['format_version']}); upgrade vq")
    return info


def load_checkpoint(run_dir: Path, kind: str, registry: dict, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """-> (model in eval mode, config.json contents)"""
    run_dir = Path(run_dir)
    info = read_info(run_dir, kind)
    cls = registry.get(info.get("model"))
    if cls is None:
        raise VQError(f"{run_dir}: unknown {kind} model '{info.get('model')}' (known: {', '.join(registry)})")
    try:
        model = cls(cls.config_class(**info["config"]))
    except (TypeError, ValueError, KeyError) as e:
        raise VQError(f"{run_dir}/config.json has an invalid model config: {e}") from None
    try:
        state = load_file(run_dir / "model.safetensors")
    except FileNotFoundError:
        raise VQError(f"{run_dir} has no model.safetensors") from None
    except (SafetensorError, OSError) as e:
        raise VQError(f"{run_dir}/model.safetensors is unreadable: {e}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise VQError(f"{run_dir}: weights do not match config.json ({first[1].strip() if len(first) > 1 else first[0]})") from None
    return model.to(device).eval(), info


# --- a training run's state: nested dicts / lists of tensors and plain values ------------------

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


def state_bytes(state: dict, kind: str) -> bytes:
    """A nested state (the model's and optimizer's state dicts, step, RNG states, ...) as one
    safetensors blob: tensors in the table, the structure and plain values as JSON metadata."""
    tensors: dict = {}
    tree = _pack(state, tensors, "state")
    return save(tensors, metadata={"vq": json.dumps({"kind": kind, "format_version": FORMAT_VERSION, "tree": tree})})


def check_state(path: Path, kind: str | None = None) -> None:
    """Refuse a training state that load_state would refuse, reading only its header (before a
    resumed run loads any data)."""
    load_state(path, kind, tensors=False)


def load_state(path: Path, kind: str | None = None, tensors: bool = True) -> dict | None:
    """The inverse of state_bytes, refusing anything but a vq training state of this kind."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("vq", "null"))
            if not isinstance(meta, dict) or "tree" not in meta:
                raise VQError(f"{path} is a safetensors file but not a vq training state; start a new run")
            if kind is not None and meta.get("kind") != kind:
                raise VQError(f"{path} is the training state of a {meta.get('kind')}, not a {kind}")
            if meta.get("format_version", 0) > FORMAT_VERSION:
                raise VQError(f"{path} was written by a newer vq (format {meta['format_version']}); upgrade vq")
            return _unpack(meta["tree"], f) if tensors else None
    except VQError:
        raise
    except (SafetensorError, OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise VQError(f"{path} is not a readable training state ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                      "start a new run with --force") from None
