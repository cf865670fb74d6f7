"""Batches for training, evaluation and export, from any split (`splits`).

- The batch order is a function of (seed, epoch, step) only: a seeded permutation per epoch, the
  global batch `step` a slice of it, and under torchrun each rank takes its share of that slice.
  The global batches are therefore the same for any number of processes, and a resumed run
  continues with exactly the batch the interrupted one would have drawn next.
- Data in memory is batched by indexing, on the training device when it fits there: no
  DataLoader, no per-step host work beyond slicing an index tensor computed once per epoch.
- Lazy data goes through a DataLoader: workers decode, pinned memory, prefetch.
- Streams (IterableDataset) are sharded over ranks and workers and shuffled through a buffer.
- An image that cannot be decoded is skipped and counted (`Skipped`), or stops the run with
  --strict; the summary names the count and the first few.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Sampler

from vq.pipeline import distributed as dist
from vq.pipeline.data.splits import IN_MEMORY_BYTES, Split, StreamImages
from vq.pipeline.errors import VQError

SHOWN_SKIPS = 5
STREAM_SHUFFLE_BUFFER = 10_000


@dataclass
class Skipped:
    """Unreadable items met so far: how many, and where the first few were."""

    strict: bool = False
    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, bad: list[str]) -> None:
        if not bad:
            return
        if self.strict:
            raise VQError(f"cannot read {bad[0]} (--strict stops at the first unreadable image)")
        self.count += len(bad)
        self.first += bad[: max(0, SHOWN_SKIPS - len(self.first))]

    def summary(self) -> str:
        return f"skipped {self.count} unreadable image(s), e.g. " + "; ".join(self.first) if self.count else ""


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """[(uint8 tensor or None, label, problem or None)] -> (stacked tensors, labels, problems)."""
    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [p for x, _, p in items if x is None]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), bad
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good], dtype=torch.int64), bad


def default_workers() -> int:
    """Decoding processes per rank: the CPUs this process may use, shared between the ranks of
    one machine, at most 8, leaving one CPU for the training process itself."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_rank = cpus // int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, min(8, per_rank - 1))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The seeded permutation of epoch `epoch`; computed on the CPU so that it is the same on
    every device (a resumed run may move between CPU and GPU)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def local_batch(global_batch: int) -> int:
    w = dist.world_size()
    if global_batch % w:
        raise VQError(f"--batch-size {global_batch} is not divisible by the {w} processes; "
                      "the batch size is the global one, split evenly over the processes")
    return global_batch // w


def per_epoch(n: int, global_batch: int) -> int:
    return max(1, n // min(global_batch, n))


class StepSampler(Sampler):
    """Index lists of this rank's share of global batches `start, start + 1, ...`: global batch s
    is positions [s*B, (s+1)*B) of its epoch's permutation (the last partial batch is dropped),
    and rank r takes the r-th of world_size equal slices of it."""

    def __init__(self, n: int, global_batch: int, seed: int, start: int = 0):
        self.n, self.batch, self.seed, self.start = n, min(global_batch, n), seed, start
        self.per_epoch = per_epoch(n, global_batch)
        self.local = self.batch // dist.world_size()
        self.offset = dist.rank() * self.local

    def batch_at(self, step: int, order: torch.Tensor) -> torch.Tensor:
        pos = (step % self.per_epoch) * self.batch + self.offset
        return order[pos : pos + self.local]

    def __iter__(self) -> Iterator[list[int]]:
        step, epoch, order = self.start, None, None
        while True:
            if step // self.per_epoch != epoch:
                epoch = step // self.per_epoch
                order = epoch_order(self.n, self.seed, epoch)
            yield self.batch_at(step, order).tolist()
            step += 1


def in_memory(split, device: torch.device, workers: int, skipped: Skipped) -> Split | None:
    """The split as decoded tensors when its pixels fit in IN_MEMORY_BYTES (decoding it once, in
    parallel, if it is lazy); None when it must stay lazy."""
    if isinstance(split, Split):
        return split
    if isinstance(split, StreamImages) or split.nbytes > IN_MEMORY_BYTES:
        return None
    return materialize(split, workers, skipped)


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether a tensor of nbytes may live on the device for the whole run (a quarter of what is
    free on a GPU, always on the CPU)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < free // 4


class TrainBatches:
    """Training batches `start, start + 1, ...` as (uint8 images or codes, labels) on the device."""

    def __init__(self, split, *, batch_size: int, seed: int, device: torch.device, workers: int,
                 start: int = 0, skipped: Skipped | None = None):
        self.device, self.skipped = device, skipped or Skipped()
        self.local = local_batch(batch_size)
        self.memory = in_memory(split, device, workers, self.skipped)
        self.stream = split if isinstance(split, StreamImages) else None
        self.start, self.seed, self.workers, self.batch_size = start, seed, workers, batch_size
        if self.memory is not None:
            if len(self.memory) == 0:
                raise VQError("the training split is empty")
            where = device if fits_on(device, self.memory.nbytes) else torch.device("cpu")
            self.tensors = (self.memory.images.to(where), self.memory.labels.to(where))
            self.sampler = StepSampler(len(self.memory), batch_size, seed, start)
        elif self.stream is None:
            if len(split) == 0:
                raise VQError("the training split is empty")
            self.sampler = StepSampler(len(split), batch_size, seed, start)
            self.loader = DataLoader(split, batch_sampler=self.sampler, collate_fn=collate, **loader_options(workers, device))
        self.split = split

    @property
    def workers_started(self) -> int:
        """The DataLoader processes this starts: none for data held in memory."""
        return 0 if self.memory is not None else self.workers

    @property
    def epoch_size(self) -> int | None:
        """Steps per epoch, or None for a stream of unknown length."""
        if self.stream is not None:
            return None if self.stream.num_rows is None else max(1, self.stream.num_rows // self.batch_size)
        return self.sampler.per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.memory is not None:
            yield from self._from_memory()
        elif self.stream is not None:
            yield from self._from_stream()
        else:
            for images, labels, bad in self.loader:
                self.skipped.add(bad)
                if labels.numel():
                    yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def _from_memory(self):
        images, labels = self.tensors
        s, step, epoch, order = self.sampler, self.start, None, None
        while True:
            if step // s.per_epoch != epoch:
                epoch = step // s.per_epoch
                order = epoch_order(s.n, s.seed, epoch).to(images.device)  # once per epoch
            idx = s.batch_at(step, order)
            yield images[idx].to(self.device, non_blocking=True), labels[idx].to(self.device, non_blocking=True)
            step += 1

    def _from_stream(self):
        """Epoch after epoch of the stream, each with its own shuffle; a resumed run starts a new
        epoch rather than skipping to the exact item (streams cannot seek)."""
        epoch_size = self.epoch_size
        epoch = self.start // epoch_size if epoch_size else self.start
        while True:
            stream = self.stream.configure(rank=dist.rank(), world=dist.world_size(), seed=self.seed,
                                           shuffle_buffer=STREAM_SHUFFLE_BUFFER)
            stream.set_epoch(epoch)
            loader = DataLoader(stream, batch_size=self.local, collate_fn=collate, drop_last=True,
                                **loader_options(self.workers, self.device))
            seen = False
            for images, labels, bad in loader:
                self.skipped.add(bad)
                if labels.numel():
                    seen = True
                    yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            if not seen:
                raise VQError(f"the stream yielded no full batch of {self.local} readable images; lower --batch-size")
            epoch += 1


def loader_options(workers: int, device: torch.device, persistent: bool = True) -> dict:
    # A generator of its own: a DataLoader otherwise draws its workers' seed from the global RNG,
    # and a resumed run, which decodes at other moments, would then draw different dropout.
    opts = {"num_workers": workers, "pin_memory": device.type == "cuda", "generator": torch.Generator().manual_seed(0)}
    if workers > 0:
        opts.update(prefetch_factor=4, persistent_workers=persistent)
    return opts


def batches(split, batch_size: int, *, workers: int = 0, device: torch.device = torch.device("cpu"),
            skipped: Skipped | None = None, indices: list[int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The split (or the items at `indices`) in order, as (uint8 images, labels) batches: slices
    of memory, or a DataLoader whose workers decode. Unreadable items are skipped and counted."""
    skipped = skipped if skipped is not None else Skipped()
    if isinstance(split, Split):
        idx = torch.arange(len(split)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        for i in range(0, idx.numel(), batch_size):
            sel = idx[i : i + batch_size]
            yield split.images[sel], split.labels[sel]
        return
    if indices is not None:
        split = torch.utils.data.Subset(split, list(indices))
    kwargs = {} if isinstance(split, StreamImages) else {"shuffle": False}
    loader = DataLoader(split, batch_size=batch_size, collate_fn=collate, **kwargs,
                        **loader_options(workers, device, persistent=False))
    for images, labels, bad in loader:
        skipped.add(bad)
        if labels.numel():
            yield images, labels


def materialize(split, workers: int = 0, skipped: Skipped | None = None, indices: list[int] | None = None) -> Split:
    """Decode a lazy split (or the items at `indices`) into memory."""
    if isinstance(split, Split) and indices is None:
        return split
    n = len(indices) if indices is not None else getattr(split, "num_rows", None) if isinstance(split, StreamImages) else len(split)
    parts = list(batches(split, 256, workers=workers if n and n > 1000 else 0, skipped=skipped, indices=indices))
    if not parts:
        raise VQError("no readable images in the split")
    return Split(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))


EVAL_IMAGES = 10_000  # held-out images evaluated during training (the whole test split when smaller)


class EvalImages:
    """The held-out images every evaluation reads, decoded once on first use (by rank 0 only):
    the whole test split, or its first EVAL_IMAGES when it is larger."""

    def __init__(self, split, workers: int | None, skipped: Skipped):
        self.source, self.workers, self.skipped, self._split = split, workers, skipped, None

    @property
    def split(self) -> Split:
        if self._split is None:
            src = self.source if isinstance(self.source, Split) else self.source.head(EVAL_IMAGES)
            self._split = materialize(src, default_workers() if self.workers is None else self.workers, self.skipped)
        return self._split


def real_images(train, per_class: int, num_classes: int, seed: int) -> Split:
    """Up to `per_class` random train images of each class, decoded; from a stream (whose labels
    are not known up front), the first per_class * num_classes images it yields."""
    if isinstance(train, StreamImages):
        return materialize(train.head(per_class * num_classes))
    return materialize(train, indices=balanced(train.labels, per_class, num_classes, seed).tolist())


def balanced(labels: torch.Tensor, per_class: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of up to `per_class` random items of each class."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        picks.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]])
    return torch.cat(picks)
