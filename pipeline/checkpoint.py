"""A checkpoint is a directory: `config.json` (kind, model name, format version, the model's
config, class names, dataset, fingerprint) + `model.safetensors`, loaded with strict key
checking; a training run's full state (weights, optimizer, step, RNG) is one more safetensors
file. Nothing a user hands in is ever unpickled."""

import hashlib
import json
import stat
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from vq.pipeline.configs import build, to_dict
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


MAX_CLASSES = 100_000
MAX_PARAMETERS = 4_000_000_000  # a model larger than this is no model vq trains (16 GB of fp32 weights)
MAX_IMAGE_BYTES = 2**31  # working memory to make one image (a prior's caches, a decoder's activations): one
# sampling batch's (`generate.CHUNK_BYTES`)
# What vq writes into a run's config.json beside the model config, with its type: a crafted
# folder (a Hub repo is someone else's) is refused here in one line rather than deep in the code.
STORED_TYPES = {"kind": str, "model": str, "fingerprint": str, "config": dict, "class_names": list, "metrics": dict,
                "tokenizer_fingerprint": str, "tokenizer_dir": str, "codes_dir": str, "sketch": dict, "image": dict,
                "dataset": dict, "data_options": dict, "train": dict, "preset": str}


def check_stored(info, path: Path, kind: str) -> None:
    """config.json as vq writes it: a table, a whole format version this vq reads, the kind asked
    for, and each key vq reads of the type it has."""
    if not isinstance(info, dict) or "format_version" not in info:
        raise VQError(f"{path} was not written by vq (no format_version); pass a {kind} run directory")
    version = info["format_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise VQError(f"{path}: format_version must be a whole number, not {str(version)[:40]!r}")
    if info.get("kind") != kind:
        raise VQError(f"{path.parent} holds a {str(info.get('kind', 'unknown thing'))[:40]}, not a {kind}")
    if version > FORMAT_VERSION:
        raise VQError(f"{path.parent} was written by a newer vq (format {version}); upgrade vq")
    for key, tp in STORED_TYPES.items():
        if key in info and not isinstance(info[key], tp) and not (key in ("fingerprint", "tokenizer_fingerprint") and info[key] is None):
            raise VQError(f"{path}: '{key}' must be a {tp.__name__}, not {type(info[key]).__name__}")
    names = info.get("class_names", [])
    if len(names) > MAX_CLASSES or not all(isinstance(n, str) and 0 < len(n) <= 200 for n in names):
        raise VQError(f"{path}: class_names must be at most {MAX_CLASSES:,} names of 1 to 200 characters")
    if not all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in info.get("metrics", {}).items()):
        raise VQError(f"{path}: metrics must map names to numbers")


def read_info(run_dir: Path, kind: str) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.exists():
        hint = "vq fit-tokenizer" if kind == "tokenizer" else "vq fit-prior"
        raise VQError(f"no {kind} at {run_dir} (no config.json); train one with `{hint}`")
    info = read_json(path)
    check_stored(info, path, kind)
    return info


def model_class(info: dict, run_dir: Path, kind: str, registry: dict):
    cls = registry.get(info.get("model"))
    if cls is None:
        raise VQError(f"{run_dir}: unknown {kind} model '{str(info.get('model'))[:40]}' (known: {', '.join(registry)})")
    return cls


def model_config(info: dict, run_dir: Path, cls):
    """The stored model config as its dataclass: every key known and of its type (`configs.build`),
    every value in its range (the config's `validate`)."""
    where = f"{Path(run_dir) / 'config.json'} model config"
    config = build(cls.config_class, info.get("config", {}), where=where)
    try:
        config.validate()
    except (ValueError, TypeError) as e:
        raise VQError(f"{where}: {e}") from None
    return config


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in a safetensors file, from its header alone (nothing is loaded)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise VQError(f"{path.parent} has no model.safetensors") from None
    if not stat.S_ISREG(st.st_mode):
        raise VQError(f"{path} is not a regular file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise VQError(f"{path} is unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def check_size(cls, config, run_dir: Path, path: Path) -> None:
    """Before anything is allocated: the model the config describes, built without memory (on the
    meta device), must have the very tensors the weights file holds, and be of a size vq makes
    (parameters, and the memory one image takes, the model's own estimate)."""
    with torch.device("meta"):
        try:
            skeleton = cls(config)
        except (ValueError, TypeError, RuntimeError) as e:
            raise VQError(f"{run_dir}/config.json has an invalid model config: {str(e).splitlines()[0]}") from None
    params = sum(p.numel() for p in skeleton.parameters())
    if params > MAX_PARAMETERS:
        raise VQError(f"{run_dir}/config.json describes a model of {params:,} parameters, more than the "
                      f"{MAX_PARAMETERS:,} vq loads")
    needed, what = cls.image_memory(config)
    if needed > MAX_IMAGE_BYTES:
        raise VQError(f"{run_dir}/config.json describes a model that needs about {needed / 2**30:,.1f} GB to make one "
                      f"image ({what}), more than the {MAX_IMAGE_BYTES / 2**30:.0f} GB vq allows")
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = weight_shapes(path)
    for key in sorted(set(expected) | set(stored)):
        if expected.get(key) != stored.get(key):
            have = "missing" if key not in stored else f"{list(stored[key])}"
            want = "no such tensor" if key not in expected else f"{list(expected[key])}"
            raise VQError(f"{run_dir}: weights do not match config.json ({key}: {have} in model.safetensors, "
                          f"{want} in the model config.json describes)")


def load_checkpoint(run_dir: Path, kind: str, registry: dict, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """-> (model in eval mode, config.json contents). Everything is checked before memory is
    allocated (`check_stored`, `model_config`, `check_size`), and the weights after: all finite."""
    run_dir = Path(run_dir)
    info = read_info(run_dir, kind)
    cls = model_class(info, run_dir, kind, registry)
    config = model_config(info, run_dir, cls)
    path = run_dir / "model.safetensors"
    check_size(cls, config, run_dir, path)
    model = cls(config)
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise VQError(f"{run_dir}/model.safetensors is unreadable: {e}") from None
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise VQError(f"{run_dir}/model.safetensors holds weights that are not finite (NaN or inf) in {bad}")
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
