"""A model on disk is a directory: `config.json` (its record, `records`) + `model.safetensors`,
written atomically (weights first) and loaded with strict checks. Loading checks everything before
it allocates: the record's types and ranges, then the model the config describes, built on
PyTorch's meta device (no memory), which must have exactly the tensors the weights file's header
lists, be of a size vq makes (parameters, and the memory one image takes: the kind's own
`image_memory`); then the weights must be finite. Nothing a user hands in is ever unpickled."""

import hashlib
import json
import stat
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from vq.pipeline.errors import VQError
from vq.pipeline.files import atomic_write_bytes
from vq.pipeline.records import RunRecord

WEIGHTS = "model.safetensors"
MAX_PARAMETERS = 4_000_000_000  # a model larger than this is no model vq trains (16 GB of fp32 weights)
MAX_IMAGE_BYTES = 2**31  # working memory to make one image (a prior's caches, a decoder's activations), and
# what one sampling batch may take (`generate.draw.CHUNK_BYTES`)


def save_checkpoint(run_dir: Path, model: torch.nn.Module, record: RunRecord) -> RunRecord:
    """Write the weights, then the record with their fingerprint (each atomically) -> the record written."""
    run_dir = Path(run_dir)
    blob = save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    record = replace(record, fingerprint=hashlib.sha256(blob).hexdigest()[:16], config=model.config)
    atomic_write_bytes(run_dir / WEIGHTS, blob)
    record.write(run_dir)
    return record


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in a safetensors file, from its header alone (nothing is loaded)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise VQError(f"{path.parent} has no {WEIGHTS}") from None
    if not stat.S_ISREG(st.st_mode):
        raise VQError(f"{path} is not a regular file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise VQError(f"{path} is unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def check_size(record: RunRecord) -> None:
    """Before anything is allocated: the model the record's config describes, built on the meta
    device, must have the very tensors the weights file holds, and be of a size vq makes."""
    kind, run_dir = record.kind, record.run_dir
    with torch.device("meta"):
        try:
            skeleton = kind(record.config)
        except (ValueError, TypeError, RuntimeError) as e:
            raise VQError(f"{run_dir}/config.json has an invalid model config: {str(e).splitlines()[0]}") from None
    params = sum(p.numel() for p in skeleton.parameters())
    if params > MAX_PARAMETERS:
        raise VQError(f"{run_dir}/config.json describes a model of {params:,} parameters, more than the "
                      f"{MAX_PARAMETERS:,} vq loads")
    needed, what = kind.image_memory(record.config)
    if needed > MAX_IMAGE_BYTES:
        raise VQError(f"{run_dir}/config.json describes a model that needs about {needed / 2**30:,.1f} GB to make one "
                      f"image ({what}), more than the {MAX_IMAGE_BYTES / 2**30:.0f} GB vq allows")
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = weight_shapes(run_dir / WEIGHTS)
    for key in sorted(set(expected) | set(stored)):
        if expected.get(key) != stored.get(key):
            have = "missing" if key not in stored else f"{list(stored[key])}"
            want = "no such tensor" if key not in expected else f"{list(expected[key])}"
            raise VQError(f"{run_dir}: weights do not match config.json ({key}: {have} in {WEIGHTS}, "
                          f"{want} in the model config.json describes)")


def load_model(record: RunRecord, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model of a run whose record was read (`RunRecord.read`), in eval mode on `device`."""
    check_size(record)
    model = record.kind(record.config)
    try:
        state = load_file(record.run_dir / WEIGHTS)
    except (SafetensorError, OSError) as e:
        raise VQError(f"{record.run_dir}/{WEIGHTS} is unreadable: {e}") from None
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise VQError(f"{record.run_dir}/{WEIGHTS} holds weights that are not finite (NaN or inf) in {bad}")
    model.load_state_dict(state, strict=True)  # `check_size` matched every key and shape
    return model.to(device).eval()


MAX_STATE_HEADER = 4 * 2**20  # a training state's header (its structure as JSON) is far smaller


def unfinished_training(run_dir: Path) -> tuple[int, int | None] | None:
    """(step, total steps or None) of a run whose training stopped before its last step (Ctrl-C,
    a kill, a crash after a periodic save), read from its training state's header alone; None when
    its training finished, when it has no training state (a saved pipeline) or when the state is
    older than the mark (it cannot tell). Reads at most MAX_STATE_HEADER bytes of a regular file."""
    from vq.pipeline.files import STATE_FILE

    path = Path(run_dir) / STATE_FILE
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= MAX_STATE_HEADER:
                return None
            meta = json.loads(f.read(size)).get("__metadata__", {})
        tree = json.loads(meta.get("vq", "{}")).get("tree", {})
    except (OSError, ValueError, TypeError, AttributeError, RecursionError):
        return None
    step, total = tree.get("step"), tree.get("total")
    if tree.get("finished") is not False or not isinstance(step, int):
        return None
    return step, total if isinstance(total, int) else None
