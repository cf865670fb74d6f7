"""The work on one shard of an export: encoding its images into codes (and detecting their
sketches: the edge map and the outline, bit-packed), written as .npy files atomically; and the
typical boxes of the objects, measured on the exported outlines.

Layout (nanoGPT's habit for tokens, with a record): `<split>-NNNNN.codes.npy` holds (n, *code_shape)
uint16 codes (uint32 when K > 65536), `<split>-NNNNN.labels.npy` their (n,) labels and, for a
sketch prior, `<split>-NNNNN.sketch.npy` each image's maps (`SKETCH_MAPS`), H*W bits each packed
into bytes (np.packbits)."""

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vq.pipeline.codes.record import SKETCH_MAPS, CodeRecord
from vq.pipeline.data.images import image_batch
from vq.pipeline.data.loader import Skipped, batches
from vq.pipeline.errors import VQError
from vq.pipeline.files import atomic_write_bytes
from vq.pipeline.records import SketchRecord
from vq.pipeline.sketch.boxes import class_boxes, object_box
from vq.pipeline.sketch.edges import OUTLINE_VERSION, SKETCH_DETECTOR, edge_map, outline_map

SHARD_SIZE = 16_384  # images per shard: the unit of resumption and of work per rank


def code_dtype(k: int) -> str:
    if k > 2**32:
        raise VQError(f"a codebook of {k} codes does not fit the export's uint32 code maps")
    return "uint16" if k <= 2**16 else "uint32"


def shard_name(split: str, i: int) -> str:
    return f"{split}-{i:05d}"


def save_npy(path: Path, array: np.ndarray) -> None:
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


def typical_boxes(out: Path, shards: list[str], size: int, num_classes: int) -> tuple[float, list]:
    """The train split's typical object size (`boxes.object_box`) and each class's typical frame
    (`boxes.class_boxes`), over up to `BOX_SAMPLE` of its outlines spread evenly over the split
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
    return object_box(outlines), class_boxes(outlines, y, num_classes)


def sketch_record(out: Path, record: CodeRecord) -> SketchRecord:
    """An export's sketch record, with the class boxes measured now where an export made before
    they were recorded lacks them (a new sketch prior records them either way; its box stays the
    export's)."""
    if record.sketch.class_boxes:
        return record.sketch
    _, boxes = typical_boxes(out, record.shards["train"], record.sketch.size, len(record.class_names))
    return replace(record.sketch, class_boxes=tuple(boxes))


def new_sketch_record(out: Path, shards: list[str], size: int, num_classes: int) -> SketchRecord:
    """The sketch record of a new export: the detector's and the outlines' versions, and the boxes."""
    box, boxes = typical_boxes(out, shards, size, num_classes)
    return SketchRecord(SKETCH_DETECTOR, OUTLINE_VERSION, size, box, tuple(boxes),
                        {"maps": list(SKETCH_MAPS), "packed": "np.packbits"})


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
    packed = join_packed(edges, model.config.image_size) if sketches else None
    empty = np.zeros((0, *model.code_shape), dtype)
    return (np.concatenate(codes) if codes else empty), (np.concatenate(labels) if labels else np.zeros(0, np.int64)), packed


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
