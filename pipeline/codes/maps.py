"""Exported code maps as a prior reads them: each split memory-mapped from its shards
(`CodeMaps`), held in memory when it fits, and batches of them turned into a prior's inputs
(`batch_preparer`): code maps shaped as the prior's grid, labels, and for a sketch prior the
sketches unpacked from each record (free-hand styles drawn afresh for training).

Shape legend: b - batch, h w - the prior's code grid, S - sketch side.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vq.pipeline.codes.record import CODES_FORMAT, META, SKETCH_MAPS, SPLITS, CodeRecord
from vq.pipeline.data.splits import Split
from vq.pipeline.errors import VQError
from vq.pipeline.sketch.styles import recogniser_sketches, training_sketches

SHARD_NAME = re.compile(r"(train|test)-\d{5}")


class CodeMaps(Dataset):
    """One split's code maps, memory-mapped from its shards: index -> ((*code_shape) int64 codes, label).
    With `records=True` (a sketch prior's view, `with_sketches`) an item is instead one flat
    record: the codes, flat, followed by the packed bytes of its sketch (`split_record` undoes it),
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
        per_map = int(np.prod(self.shard_codes[0].shape[1:])) if self.shard_codes else 0
        packed = self.shard_sketches[0].shape[1] if self.records and self.shard_codes else 0
        return len(self) * (per_map + packed) * 4

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
    record: CodeRecord
    splits: dict[str, CodeMaps]


def default_codes_dir(tokenizer_dir: Path) -> Path:
    """Each tokenizer's codes live inside its run, so a second tokenizer never meets the first's."""
    return Path(tokenizer_dir) / "codes"


def codes_of_run(stored: Path | None, tokenizer_dir: Path) -> Path:
    """Where a prior's codes are: the folder its run recorded, or, when that is gone (runs moved
    or renamed), the tokenizer's own."""
    return Path(stored) if stored is not None and (Path(stored) / META).exists() else default_codes_dir(tokenizer_dir)


def load_codes(codes_dir: Path) -> CodeSet:
    codes_dir = Path(codes_dir)
    record = CodeRecord.read(codes_dir)
    if record is None:
        raise VQError(f"no exported codes at {codes_dir} (no {META}); run `vq export-codes`")
    if record.format_version > CODES_FORMAT:
        raise VQError(f"{codes_dir} was written by a newer vq; upgrade vq")
    if not record.current:
        raise VQError(f"{codes_dir} is in an older format; run `vq export-codes --force` to export it again")
    splits = {}
    for name in SPLITS:
        shards = record.shards[name]
        if not all(isinstance(s, str) and SHARD_NAME.fullmatch(s) for s in shards):
            raise VQError(f"{codes_dir / META} names shards vq does not write; export again with --force")
        try:
            codes = [np.load(codes_dir / f"{s}.codes.npy", mmap_mode="r") for s in shards]
            labels = [np.load(codes_dir / f"{s}.labels.npy", mmap_mode="r") for s in shards]
            sketches = [np.load(codes_dir / f"{s}.sketch.npy", mmap_mode="r") for s in shards] if record.has_sketches else None
        except (FileNotFoundError, ValueError) as e:
            raise VQError(f"{codes_dir} lacks or has a broken {name} shard ({e}); re-export with --force") from None
        splits[name] = CodeMaps(codes, labels, sketches=sketches)
    return CodeSet(record, splits)


def split_record(records: torch.Tensor, grid: tuple[int, int], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, h*w + k * packed) records -> ((b, h, w) int64 codes, (b, k, size, size) bool maps):
    the k maps `SKETCH_MAPS` names (an export of this vq: the edge map, then the outline)."""
    h, w = grid
    codes = records[:, : h * w].long().view(-1, h, w)
    per_map = -(-size * size // 8)
    packed = records[:, h * w :].to(torch.uint8).view(records.shape[0], -1, per_map)
    bits = (packed[..., None] >> torch.arange(7, -1, -1, device=packed.device, dtype=torch.uint8)) & 1  # packbits' order
    return codes, bits.flatten(2)[..., : size * size].bool().view(records.shape[0], -1, size, size)


def batch_preparer(config, train: bool = False, box: float | None = None):
    """The prior's inputs from a batch: (codes, labels), the codes shaped as the prior's grid; or
    for a sketch prior, whose batches hold records (`CodeMaps.with_sketches`), (codes, labels,
    sketches): the edge maps, or, for training a prior with `sketch_styles = "free"`, sketches in
    free-hand styles drawn afresh from each record's edges and outline (`sketch.styles`, with the
    drawing flag as a second channel for a flagged prior), and for a prior with a recogniser, after
    those channels, the recogniser's sketches (`styles.recogniser_sketches`, framed to `box`, the
    export's object size). Evaluation reads the edge maps, flag 0."""
    grid = (config.height, config.width)
    if "sketch" not in config.conditions:
        def prepare_codes(batch: tuple, device: torch.device) -> tuple:
            codes, labels = batch
            return codes.to(device, non_blocking=True).long().view(-1, *grid), labels.to(device, non_blocking=True)

        return prepare_codes
    free = train and config.sketch_styles == "free"

    def prepare(batch: tuple, device: torch.device) -> tuple:
        records, labels = batch
        codes, maps = split_record(records.to(device, non_blocking=True), grid, config.sketch_size)
        edges = maps[:, SKETCH_MAPS.index("edges")][:, None]
        outline = maps[:, SKETCH_MAPS.index("outline")][:, None]
        sketch = training_sketches(edges, outline, config.sketch_channels == 2) if free else edges
        if free and config.recognises:
            sketch = torch.cat([sketch, recogniser_sketches(edges, outline, box)], 1)
        return codes, labels.to(device, non_blocking=True), sketch

    return prepare
