"""Tokenizer -> code maps of the dataset's splits, as compact memory-mapped shards beside a
`meta.json`: tokenizer fingerprint, codebook size, grid shape, class names, shard list, format
version. A prior trained on these codes records the same fingerprint, so a prior is never paired
with a tokenizer whose codes mean something else.

Layout (nanoGPT's habit for tokens, with metadata): `<split>-NNNNN.codes.npy` holds (n, h, w)
uint16 codes (uint32 when K > 65536) and `<split>-NNNNN.labels.npy` their (n,) labels. For a
sketch prior, `<split>-NNNNN.sketch.npy` holds each image's edge map (`pipeline.sketch`), its
H*W bits packed into bytes (np.packbits), and meta.json names the detector's version. Each file
is written atomically, labels last, so a shard whose labels exist is complete; `progress.json`
names the tokenizer of an export in progress, which an interrupted export resumes from its first
missing shard; `meta.json` is written last and marks the export complete.
Under torchrun the shards are shared out over the ranks. The encoder runs batched on the device.
"""

import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch.utils.data import Dataset

from vq.pipeline import distributed as dist
from vq.pipeline.checkpoint import load_checkpoint
from vq.pipeline.data import Split, StreamImages, image_batch, stored_data_options
from vq.pipeline.loader import Skipped, batches, default_workers
from vq.pipeline.records import TokenizerInfo
from vq.pipeline.runs import VQError, atomic_write_bytes, atomic_write_json, read_json, run_lock, stored_path
from vq.pipeline.sketch import OUTLINE_VERSION, SKETCH_DETECTOR, class_boxes, edge_map, object_box, outline_map
from vq.pipeline.device import resolve_device
from vq.stage1_vqvae import TOKENIZERS

CODES_FORMAT = 2
SPLITS = ("train", "test")
SHARD_SIZE = 16_384  # images per shard: the unit of resumption and of work per rank
PROGRESS = "progress.json"


class CodeMaps(Dataset):
    """One split's code maps, memory-mapped from its shards: index -> ((h, w) int64 codes, label).
    With `records=True` (a sketch prior's view, `with_sketches`) an item is instead one flat
    record: the h*w codes followed by the packed bytes of its sketch (`split_record` undoes it),
    so batching, shuffling and memory placement stay those of plain codes."""

    def __init__(self, codes: list[np.ndarray], labels: list[np.ndarray], index: np.ndarray | None = None,
                 sketches: list[np.ndarray] | None = None, records: bool = False):
        self.shard_codes, self.shard_labels, self.shard_sketches = codes, labels, sketches
        self.offsets = np.cumsum([0] + [len(c) for c in codes])
        self.index = index
        self.records = records

    def with_sketches(self) -> "CodeMaps":
        if self.shard_sketches is None:
            raise VQError("these codes were exported without sketches")
        return CodeMaps(self.shard_codes, self.shard_labels, self.index, self.shard_sketches, records=True)

    def __len__(self) -> int:
        return int(self.offsets[-1]) if self.index is None else len(self.index)

    def _locate(self, i: int) -> tuple[int, int]:
        j = int(self.index[i]) if self.index is not None else i
        s = int(np.searchsorted(self.offsets, j, side="right")) - 1
        return s, j - int(self.offsets[s])

    def __getitem__(self, i: int):
        s, r = self._locate(i)
        codes = self.shard_codes[s][r].astype(np.int64)
        if self.records:
            codes = np.concatenate([codes.reshape(-1), self.shard_sketches[s][r].astype(np.int64)])
        return torch.from_numpy(codes), int(self.shard_labels[s][r]), None

    @property
    def labels(self) -> torch.Tensor:
        all_labels = torch.from_numpy(np.concatenate(self.shard_labels).astype(np.int64)) if self.shard_labels else torch.zeros(0, dtype=torch.int64)
        return all_labels if self.index is None else all_labels[torch.from_numpy(self.index)]

    @property
    def nbytes(self) -> int:
        h, w = self.shard_codes[0].shape[1:] if self.shard_codes else (0, 0)
        packed = self.shard_sketches[0].shape[1] if self.records and self.shard_codes else 0
        return len(self) * (h * w + packed) * 4

    def subset(self, index) -> "CodeMaps":
        index = np.asarray(index, dtype=np.int64)
        return CodeMaps(self.shard_codes, self.shard_labels, index if self.index is None else self.index[index],
                        self.shard_sketches, self.records)

    def to_memory(self, codebook_size: int) -> Split:
        """Decoded into one tensor, int16 when the codes fit (else int32): the prior's fast path."""
        dtype = np.int16 if codebook_size <= np.iinfo(np.int16).max else np.int32
        codes = np.concatenate([c.astype(dtype) for c in self.shard_codes]) if self.shard_codes else np.zeros((0, 1, 1), dtype)
        if self.records:  # packed bytes (0..255) fit the codes' dtype
            packed = np.concatenate([p.astype(dtype) for p in self.shard_sketches])
            codes = np.concatenate([codes.reshape(len(codes), int(np.prod(codes.shape[1:]))), packed], axis=1)
        codes = torch.from_numpy(codes)
        labels = torch.from_numpy(np.concatenate(self.shard_labels).astype(np.int64)) if self.shard_labels else torch.zeros(0, dtype=torch.int64)
        if self.index is not None:
            idx = torch.from_numpy(self.index)
            codes, labels = codes[idx], labels[idx]
        return Split(codes, labels)


@dataclass
class CodeSet:
    meta: dict
    splits: dict[str, CodeMaps]

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]


def split_record(records: torch.Tensor, grid: tuple[int, int], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, h*w + k * packed) records -> ((b, h, w) int64 codes, (b, k, size, size) bool maps):
    the k maps `SKETCH_MAPS` names (an export of this vq: the edge map, then the outline)."""
    h, w = grid
    codes = records[:, : h * w].long().view(-1, h, w)
    per_map = -(-size * size // 8)
    packed = records[:, h * w :].to(torch.uint8).view(records.shape[0], -1, per_map)
    bits = (packed[..., None] >> torch.arange(7, -1, -1, device=packed.device, dtype=torch.uint8)) & 1  # packbits' order
    return codes, bits.flatten(2)[..., : size * size].bool().view(records.shape[0], -1, size, size)


SKETCH_MAPS = ("edges", "outline")  # the maps each image's record holds, in order


def has_sketches(meta: dict | None) -> bool:
    """Whether an export holds this vq's sketch maps: the detector's edges and the outlines."""
    sketch = (meta or {}).get("sketch") or {}
    return sketch.get("detector") == SKETCH_DETECTOR and sketch.get("outline") == OUTLINE_VERSION


def default_codes_dir(tokenizer_dir: Path) -> Path:
    """Each tokenizer's codes live inside its run, so a second tokenizer never meets the first's."""
    return Path(tokenizer_dir) / "codes"


def codes_of_run(stored: Path | None, tokenizer_dir: Path) -> Path:
    """Where a prior's codes are: the folder its run recorded, or, when that is gone (runs moved
    or renamed), the tokenizer's own."""
    return Path(stored) if stored is not None and (Path(stored) / "meta.json").exists() else default_codes_dir(tokenizer_dir)


def read_meta(codes_dir: Path) -> dict | None:
    path = Path(codes_dir) / "meta.json"
    return read_json(path) if path.exists() else None


def check_codes_match(meta: dict, tokenizer_info: dict, codes_dir: Path) -> None:
    if meta.get("tokenizer_fingerprint") != tokenizer_info["fingerprint"]:
        raise VQError(
            f"{codes_dir} holds codes of another tokenizer (fingerprint {meta.get('tokenizer_fingerprint')}, "
            f"this one is {tokenizer_info['fingerprint']}); export this tokenizer's codes with "
            f"`vq export-codes --tokenizer TOKENIZER --out DIR` (or `vq fit-prior --codes DIR`), or replace them with --force"
        )


def code_dtype(k: int) -> str:
    if k > 2**32:
        raise VQError(f"a codebook of {k} codes does not fit the export's uint32 code maps")
    return "uint16" if k <= 2**16 else "uint32"


def shard_name(split: str, i: int) -> str:
    return f"{split}-{i:05d}"


def save_npy(path: Path, array: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def packed_sketches(images: torch.Tensor) -> np.ndarray:
    """(b, C, H, W) images in [-1, 1] -> (b, 2 * ceil(H*W / 8)) uint8: their edge maps, then their
    outlines (`SKETCH_MAPS`), each bit-packed."""
    return np.concatenate([np.packbits(m.flatten(1).numpy(), axis=1) for m in (edge_map(images), outline_map(images))], 1)


def join_packed(parts: list[np.ndarray], size: int) -> np.ndarray:
    """A shard's packed sketches from its batches' (none: an empty (0, bytes) array)."""
    return np.concatenate(parts) if parts else np.zeros((0, len(SKETCH_MAPS) * -(-size * size // 8)), np.uint8)


BOX_SAMPLE = 10_000  # train outlines measured for the dataset's typical object box


def typical_boxes(out: Path, shards: list[str], size: int, num_classes: int) -> dict:
    """The train split's typical object size (`sketch.object_box`) and each class's typical frame
    (`sketch.class_boxes`), over up to `BOX_SAMPLE` of its outlines spread evenly over the split
    (a folder dataset lists its classes one after another)."""
    packed = [np.load(out / f"{s}.sketch.npy", mmap_mode="r") for s in shards]
    labels = [np.load(out / f"{s}.labels.npy", mmap_mode="r") for s in shards]
    starts = np.cumsum([0] + [len(p) for p in packed])
    rows = np.unique(np.linspace(0, starts[-1] - 1, min(BOX_SAMPLE, starts[-1])).round().astype(np.int64))
    shard = np.searchsorted(starts, rows, side="right") - 1
    picked = [(packed[i][rows[shard == i] - starts[i]], labels[i][rows[shard == i] - starts[i]]) for i in range(len(shards))]
    per_map, at = -(-size * size // 8), SKETCH_MAPS.index("outline")
    maps = np.concatenate([m for m, _ in picked])
    outlines = np.unpackbits(maps[:, at * per_map : (at + 1) * per_map], axis=1)[:, : size * size]
    outlines = torch.from_numpy(outlines.reshape(-1, 1, size, size).astype(bool))
    y = torch.from_numpy(np.concatenate([l for _, l in picked]).astype(np.int64))
    return {"box": object_box(outlines), "class_boxes": class_boxes(outlines, y, num_classes)}


def sketch_record(out: Path, meta: dict) -> dict:
    """An export's sketch record, with the class boxes measured now where an export made before
    they were recorded lacks them (a new sketch prior records them either way; its box stays the
    export's)."""
    sketch = meta["sketch"]
    if "class_boxes" in sketch:
        return sketch
    measured = typical_boxes(out, meta["shards"]["train"], sketch["size"], len(meta["class_names"]))
    return {**sketch, "class_boxes": measured["class_boxes"]}


@torch.no_grad()
def encode_shard(model, split, lo: int, hi: int, batch_size: int, device, workers: int, skipped: Skipped,
                 dtype: str, sketches: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    codes, labels, edges = [], [], []
    for batch in batches(split, batch_size, workers=workers, device=device, skipped=skipped, indices=range(lo, hi)):
        images, y = image_batch(batch, device)
        codes.append(model.encode_indices(images).to(torch.int64).cpu().numpy().astype(dtype))
        labels.append(y.cpu().numpy().astype(np.int64))
        if sketches:
            edges.append(packed_sketches(images))
    h, w = model.grid_shape
    packed = join_packed(edges, model.config.image_size) if sketches else None
    return (np.concatenate(codes) if codes else np.zeros((0, h, w), dtype)), (np.concatenate(labels) if labels else np.zeros(0, np.int64)), packed


@torch.no_grad()
def detect_shard(split, lo: int, hi: int, batch_size: int, device, workers: int, size: int, expected: int) -> np.ndarray:
    """The packed sketches of a shard whose codes were exported before: the same images, read in
    the same order, so an image skipped then is skipped again; `expected` (the shard's labels)
    checks that they still line up."""
    packed = join_packed([packed_sketches(image_batch(batch, device)[0]) for batch in
                          batches(split, batch_size, workers=workers, device=device, skipped=Skipped(), indices=range(lo, hi))], size)
    if len(packed) != expected:
        raise VQError(f"the dataset no longer reads as it did when its codes were exported ({len(packed)} readable "
                      f"images where the codes have {expected}); export again with --force")
    return packed


def export_codes(
    tokenizer_dir: Path,
    out: Path | None = None,
    *,
    device: str = "auto",
    batch_size: int = 500,
    force: bool = False,
    workers: int | None = None,
    sketches: bool = False,
    console: Console | None = None,
) -> dict:
    """Encode the tokenizer's dataset (and with `sketches`, detect every image's edges); reuse an
    export of the same tokenizer, and resume an interrupted one. Returns meta. Under torchrun
    every rank calls it and shares the work."""
    console = console or Console(stderr=True)
    out = default_codes_dir(tokenizer_dir) if out is None else Path(out)
    if out.exists() and not out.is_dir():
        raise VQError(f"{out} is a file; exported codes need a folder (--out of export-codes, --codes of fit-prior)")
    tok = TokenizerInfo.read(tokenizer_dir)
    if not tok.discrete:
        raise VQError(f"{tokenizer_dir} holds a {tok.model}, which has no discrete codes; train a VQ-VAE (--model vqvae)")
    model, info = load_checkpoint(tokenizer_dir, "tokenizer", TOKENIZERS, "cpu")
    meta = read_meta(out)
    if meta is not None and not force and meta.get("format_version") == CODES_FORMAT and (has_sketches(meta) or not sketches):
        check_codes_match(meta, info, out)
        if dist.is_main():
            console.print(f"codes: reusing {out} (same tokenizer {info['fingerprint']})")
        return meta
    # A current export that lacks sketches keeps its codes: only the sketches are added.
    adding = meta is not None and not force and meta.get("format_version") == CODES_FORMAT
    if meta is not None and not force:  # an older format, or no sketches: export, if it is this tokenizer's
        check_codes_match(meta, info, out)
        if dist.is_main():
            console.print(f"codes: {out} has no sketches of this vq's kind (edges of detector {SKETCH_DETECTOR} and "
                          f"outlines {OUTLINE_VERSION}); adding them" if adding else
                          f"codes: {out} is in an older format; exporting again")
    if force and has_sketches(meta):
        sketches = True  # a forced export keeps what the previous one had
    progress_path = out / PROGRESS
    progress = read_json(progress_path) if progress_path.exists() and not force else None
    if progress is not None and progress.get("tokenizer_fingerprint") != info["fingerprint"]:
        raise VQError(f"{out} holds a partial export of another tokenizer; pass --force to replace it, or choose "
                      "another folder (--out of export-codes, --codes of fit-prior)")
    sketches = sketches or bool(progress and progress.get("sketches"))  # a resumed export keeps its sketches
    if out.exists() and any(out.iterdir()) and meta is None and progress is None and not force:
        raise VQError(f"{out} exists and holds something other than exported codes; choose another folder "
                      "(--out of export-codes, --codes of fit-prior)")

    dev = resolve_device(device)
    dist.setup(dev)
    model.to(dev)
    data = stored_data_options(info, tokenizer_dir).load()
    if any(isinstance(getattr(data, name), StreamImages) for name in SPLITS):
        raise VQError(f"{tokenizer_dir} was trained on a stream; exporting a stream's codes is not supported yet. "
                      "Save the dataset to disk (datasets' save_to_disk) and train the tokenizer on it without --streaming")
    if data.class_names != info["class_names"]:
        raise VQError(f"the dataset's classes changed since {tokenizer_dir} was trained")
    k = model.config.codebook_size
    dtype = code_dtype(k)
    h, w = model.grid_shape
    workers = default_workers() if workers is None else workers
    skipped = Skipped()
    sizes = {name: len(getattr(data, name)) for name in SPLITS}
    plan = [(name, i) for name in SPLITS for i in range(max(1, -(-sizes[name] // SHARD_SIZE)))]
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        if adding and progress is None:  # sketches of another detector version go
            for p in out.glob("*.sketch.npy"):
                p.unlink()
        if force or (meta is not None and not adding):  # a clean slate: drop the previous export first
            for p in list(out.glob("*.npy")) + [out / "meta.json", progress_path]:
                p.unlink(missing_ok=True)
            for old in SPLITS:  # the Hugging Face datasets folders of format 1
                if (out / old).is_dir():
                    shutil.rmtree(out / old)
        atomic_write_json(progress_path, {"tokenizer_fingerprint": info["fingerprint"], "sketches": sketches})
    dist.barrier()

    def complete(shard: str) -> bool:
        return (out / f"{shard}.labels.npy").exists() and (not sketches or (out / f"{shard}.sketch.npy").exists())

    mine = [(name, i) for j, (name, i) in enumerate(plan) if j % dist.world_size() == dist.rank()]
    todo = [(name, i) for name, i in mine if not complete(shard_name(name, i))]
    with run_lock(out) if dist.is_main() else nullcontext(), Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, disable=not dist.is_main()) as bar:
        task = bar.add_task("encoding shards", total=len(mine), completed=len(mine) - len(todo))
        for name, i in todo:
            split = getattr(data, name)
            lo, hi = i * SHARD_SIZE, min(sizes[name], (i + 1) * SHARD_SIZE)
            if (out / f"{shard_name(name, i)}.labels.npy").exists():  # its codes are there: add the sketches
                expected = len(np.load(out / f"{shard_name(name, i)}.labels.npy", mmap_mode="r"))
                save_npy(out / f"{shard_name(name, i)}.sketch.npy",
                         detect_shard(split, lo, hi, batch_size, dev, workers, model.config.image_size, expected))
                bar.advance(task)
                continue
            codes, labels, packed = encode_shard(model, split, lo, hi, batch_size, dev, workers, skipped, dtype, sketches)
            save_npy(out / f"{shard_name(name, i)}.codes.npy", codes)
            if packed is not None:
                save_npy(out / f"{shard_name(name, i)}.sketch.npy", packed)
            save_npy(out / f"{shard_name(name, i)}.labels.npy", labels)  # last: the shard is complete
            bar.advance(task)
        dist.barrier()
        skipped_total = int(dist.all_reduce_sum_(torch.tensor([skipped.count], device=dev))[0])
        if dist.is_main():
            shards = {name: [shard_name(n, i) for n, i in plan if n == name] for name in SPLITS}
            missing = [s for names in shards.values() for s in names if not complete(s)]
            if missing:
                raise VQError(f"the export in {out} lacks shard {missing[0]}; run it again to finish it")
            counts = {name: sum(len(np.load(out / f"{s}.labels.npy", mmap_mode="r")) for s in names) for name, names in shards.items()}
            meta = {
                "kind": "codes",
                "format_version": CODES_FORMAT,
                "tokenizer_fingerprint": info["fingerprint"],
                "tokenizer_dir": stored_path(tokenizer_dir, out),
                "codebook_size": k,
                "grid": [h, w],
                "dtype": dtype,
                "class_names": info["class_names"],
                "image": {"channels": model.config.channels, "image_size": model.config.image_size},
                "splits": counts,
                "shards": shards,
                "skipped": skipped_total,  # this session's, over all ranks
                "dataset": info.get("dataset", {}),
                **({"sketch": {"detector": SKETCH_DETECTOR, "outline": OUTLINE_VERSION, "maps": list(SKETCH_MAPS),
                               "size": model.config.image_size, "packed": "np.packbits",
                               **typical_boxes(out, shards["train"], model.config.image_size, len(info["class_names"]))}}
                   if sketches else {}),
            }
            atomic_write_json(out / "meta.json", meta)
            progress_path.unlink(missing_ok=True)
            if skipped.count:
                console.print(f"[yellow]{skipped.summary()}[/yellow]")
    dist.barrier()
    return read_meta(out)


def load_codes(codes_dir: Path) -> CodeSet:
    codes_dir = Path(codes_dir)
    meta = read_meta(codes_dir)
    if meta is None:
        raise VQError(f"no exported codes at {codes_dir} (no meta.json); run `vq export-codes`")
    if meta.get("format_version", 0) > CODES_FORMAT:
        raise VQError(f"{codes_dir} was written by a newer vq; upgrade vq")
    if meta.get("format_version", 0) < CODES_FORMAT:
        raise VQError(f"{codes_dir} is in an older format; run `vq export-codes --force` to export it again")
    splits = {}
    for name in SPLITS:
        try:
            codes = [np.load(codes_dir / f"{s}.codes.npy", mmap_mode="r") for s in meta["shards"][name]]
            labels = [np.load(codes_dir / f"{s}.labels.npy", mmap_mode="r") for s in meta["shards"][name]]
            sketches = [np.load(codes_dir / f"{s}.sketch.npy", mmap_mode="r") for s in meta["shards"][name]] \
                if has_sketches(meta) else None
        except (FileNotFoundError, ValueError) as e:
            raise VQError(f"{codes_dir} lacks or has a broken {name} shard ({e}); re-export with --force") from None
        splits[name] = CodeMaps(codes, labels, sketches=sketches)
    return CodeSet(meta, splits)
