"""Config dataclasses filled from presets, a TOML/JSON file and CLI flags, in that order.
Unknown keys and wrong types are errors, not silently ignored."""

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path

from vq.pipeline.errors import VQError


def read_config_file(path: Path | None) -> dict:
    """A TOML or JSON file with optional [model] and [train] tables (and for a prior, [sampling]:
    the defaults it is saved with)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise VQError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VQError(f"cannot parse {path}: {e}") from None
    if not isinstance(data, dict):
        raise VQError(f"{path} must hold a table of settings")
    unknown = set(data) - {"model", "train", "sampling"}
    if unknown:
        raise VQError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; expected [model], [train] and [sampling]")
    bad = next((k for k, v in data.items() if not isinstance(v, dict)), None)
    if bad:
        raise VQError(f"{path}: [{bad}] must be a table of settings")
    return data


def _accepts(tp, value) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(t, value) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    return isinstance(value, tp)


def build(cls, *layers: dict, where: str = "config"):
    """cls(**merged layers), checking every key and value type against cls's fields."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    merged: dict = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None and key in merged:
                continue
            if key not in fields:
                raise VQError(f"unknown {where} key '{key}' (known: {', '.join(sorted(fields))})")
            if not _accepts(hints[key], value):
                raise VQError(f"{where} key '{key}' expects {getattr(hints[key], '__name__', hints[key])}, got {value!r}")
            merged[key] = float(value) if hints[key] is float else value
    for key, (low, high) in getattr(cls, "RANGES", {}).items():
        value = merged.get(key)
        if value is not None and not low <= value <= high:  # NaN fails too
            raise VQError(f"{where} key '{key}' must lie from {low:g} to {high:g}, got {value!r}")
    return cls(**merged)


def to_dict(config) -> dict:
    return dataclasses.asdict(config)
