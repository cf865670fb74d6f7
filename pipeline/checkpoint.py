"""A checkpoint is a directory: `config.json` (kind, model name, format version, the model's
config, class names, dataset, fingerprint) + `model.safetensors`, loaded with strict key
checking. Nothing a user hands in is ever unpickled."""

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
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
