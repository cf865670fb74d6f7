"""Tokenizer -> code maps of the dataset's splits, as Hugging Face datasets on disk (memory-mapped
Arrow) beside a `meta.json`: tokenizer fingerprint, codebook size, grid shape, class names,
format version. A prior trained on these codes records the same fingerprint, so a prior is never
paired with a tokenizer whose codes mean something else."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.runs import VQError, atomic_write_json, read_json, run_lock
from pipeline.trainer import resolve_device

CODES_FORMAT = 1
SPLITS = ("train", "test")


@dataclass
class CodeSet:
    codes: dict[str, torch.Tensor]  # split -> (N, h, w) int64
    labels: dict[str, torch.Tensor]  # split -> (N,) int64
    meta: dict

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]


def read_meta(codes_dir: Path) -> dict | None:
    path = Path(codes_dir) / "meta.json"
    return read_json(path) if path.exists() else None


def check_codes_match(meta: dict, tokenizer_info: dict, codes_dir: Path) -> None:
    if meta.get("tokenizer_fingerprint") != tokenizer_info["fingerprint"]:
        raise VQError(
            f"{codes_dir} holds codes of another tokenizer (fingerprint {meta.get('tokenizer_fingerprint')}, "
            f"this one is {tokenizer_info['fingerprint']}); pass --force to re-export or --codes DIR"
        )


@torch.no_grad()
def encode_split(model, images: torch.Tensor, batch_size: int, device, progress: Progress, label: str) -> np.ndarray:
    from pipeline.data import to_float

    out = []
    task = progress.add_task(label, total=images.shape[0])
    for i in range(0, images.shape[0], batch_size):
        batch = to_float(images[i : i + batch_size].to(device))
        out.append(model.encode_indices(batch).cpu().numpy())
        progress.advance(task, batch.shape[0])
    return np.concatenate(out) if out else np.zeros((0, *model.grid_shape), dtype=np.int64)


def export_codes(
    tokenizer_dir: Path,
    out: Path = Path("runs/codes"),
    *,
    device: str = "auto",
    batch_size: int = 500,
    force: bool = False,
    workers: int = 0,
    console: Console | None = None,
) -> dict:
    """Encode the tokenizer's dataset; reuse an export of the same tokenizer. Returns meta."""
    import datasets

    from pipeline.tokenizer import DataOptions, load_tokenizer

    console = console or Console(stderr=True)
    out = Path(out)
    model, info = load_tokenizer(tokenizer_dir, "cpu")
    if info["model"] != "vqvae":
        raise VQError(f"{tokenizer_dir} holds a {info['model']}, which has no discrete codes; train a VQ-VAE (--model vqvae)")
    meta = read_meta(out)
    if meta is not None and not force:
        check_codes_match(meta, info, out)
        console.print(f"codes: reusing {out} (same tokenizer {info['fingerprint']})")
        return meta
    if out.exists() and any(out.iterdir()) and meta is None and not force:
        raise VQError(f"{out} exists and holds something other than exported codes; choose another --codes/--out")

    dev = resolve_device(device)
    model.to(dev)
    data = DataOptions(**info["data_options"]).load(workers)
    if data.class_names != info["class_names"]:
        raise VQError(f"the dataset's classes changed since {tokenizer_dir} was trained")
    datasets.disable_progress_bars()  # ours below is enough
    k = model.config.codebook_size
    dtype = "int16" if k <= np.iinfo(np.int16).max else "int32"
    h, w = model.grid_shape
    features = datasets.Features({
        "codes": datasets.Array2D(shape=(h, w), dtype=dtype),
        "label": datasets.ClassLabel(names=info["class_names"]),
    })
    with run_lock(out), Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        splits = {}
        for name in SPLITS:
            split = getattr(data, name)
            codes = encode_split(model, split.images, batch_size, dev, progress, f"encoding {name}")
            splits[name] = datasets.Dataset.from_dict(
                {"codes": codes.astype(dtype), "label": split.labels.numpy()}, features=features)
        for name, ds in splits.items():
            ds.save_to_disk(str(out / name))
        meta = {
            "kind": "codes",
            "format_version": CODES_FORMAT,
            "tokenizer_fingerprint": info["fingerprint"],
            "tokenizer_dir": str(tokenizer_dir),
            "codebook_size": k,
            "grid": [h, w],
            "class_names": info["class_names"],
            "image": {"channels": model.config.channels, "image_size": model.config.image_size},
            "splits": {name: len(ds) for name, ds in splits.items()},
            "dataset": info.get("dataset", {}),
        }
        atomic_write_json(out / "meta.json", meta)
    return meta


def load_codes(codes_dir: Path) -> CodeSet:
    import datasets

    codes_dir = Path(codes_dir)
    meta = read_meta(codes_dir)
    if meta is None:
        raise VQError(f"no exported codes at {codes_dir} (no meta.json); run `vq export-codes`")
    if meta.get("format_version", 0) > CODES_FORMAT:
        raise VQError(f"{codes_dir} was written by a newer vq; upgrade vq")
    codes, labels = {}, {}
    for name in SPLITS:
        try:
            ds = datasets.load_from_disk(str(codes_dir / name)).with_format("numpy")
        except FileNotFoundError:
            raise VQError(f"{codes_dir} lacks its {name} split; re-export with --force") from None
        table = ds[:]  # one slice of the memory-mapped table: fast, unlike per-column access
        codes[name] = torch.from_numpy(np.asarray(table["codes"])).long()
        labels[name] = torch.from_numpy(np.asarray(table["label"])).long()
    return CodeSet(codes, labels, meta)
