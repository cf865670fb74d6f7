"""The split types every source gives, map-style torch Datasets, index -> (uint8 (C, H, W) image,
label, problem or None):

- `Split`: decoded images in memory (Fashion-MNIST, CIFAR-10, any dataset whose decoded pixels
  fit in IN_MEMORY_BYTES), batched by indexing, on the GPU itself when it fits there;
- `FileImages` / `ArrowImages`: a file list or a memory-mapped Arrow table, decoded and resized on
  the fly in DataLoader workers, so memory stays flat however large the dataset;
- `StreamImages` (an IterableDataset): a `datasets` stream, sharded over ranks and workers.

A lazy item that cannot be decoded comes back as None with the reason; `loader` skips and counts
those (or stops, with --strict). `ImageData` is a source's splits with their class names and
geometry, which `geometry` finds from a survey of the images."""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from vq.pipeline.data.images import channels_of_mode, decode, open_image, pil_to_array, problem, reading
from vq.pipeline.errors import VQError

IN_MEMORY_BYTES = 512 * 2**20  # decoded train pixels up to this size are held in memory
SIZE_SURVEY = 256  # images whose size is read (spread over the split) to find the dataset's size


class Split(Dataset):
    """Decoded images in memory: (N, C, H, W) uint8 and (N,) int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i]), None

    def head(self, n: int | None) -> "Split":
        return self if n is None else Split(self.images[:n], self.labels[:n])

    @property
    def nbytes(self) -> int:
        return self.images.numel()


class LazyImages(Dataset):
    """Images decoded on access; `labels` are known up front (read without decoding anything)."""

    def __init__(self, labels: torch.Tensor, channels: int, size: int):
        self.labels, self.channels, self.size = labels, channels, size

    def __len__(self) -> int:
        return self.labels.shape[0]

    def open(self, i: int):
        """-> a Pillow image"""
        raise NotImplementedError

    def where(self, i: int) -> str:
        """Item i as a user finds it (a path, a row)."""
        raise NotImplementedError

    def __getitem__(self, i: int):
        try:
            arr = pil_to_array(self.open(i), self.channels, self.size)
        except Exception as e:  # a decoder can raise nearly anything on a corrupt file
            return None, int(self.labels[i]), f"{self.where(i)} ({problem(e)})"
        return torch.from_numpy(arr), int(self.labels[i]), None

    @property
    def nbytes(self) -> int:
        return len(self) * self.channels * self.size * self.size


class FileImages(LazyImages):
    def __init__(self, paths: list[Path], labels: torch.Tensor, channels: int, size: int):
        super().__init__(labels, channels, size)
        self.paths = [str(p) for p in paths]

    def open(self, i: int):
        return decode(open_image(self.paths[i]), self.channels, self.size)

    def where(self, i: int) -> str:
        return self.paths[i]

    def head(self, n: int | None) -> "FileImages":
        return self if n is None else FileImages(self.paths[:n], self.labels[:n], self.channels, self.size)


class ArrowImages(LazyImages):
    """A Hugging Face Dataset (memory-mapped Arrow): rows are decoded only when read."""

    def __init__(self, ds, image_column: str, labels: torch.Tensor, channels: int, size: int):
        super().__init__(labels, channels, size)
        self.ds, self.image_column = ds.select_columns([image_column]), image_column

    def open(self, i: int):
        with reading(self.where(i)):  # refuses decompression bombs, as for files
            return self.ds[i][self.image_column]

    def where(self, i: int) -> str:
        return f"row {i}"

    def head(self, n: int | None) -> "ArrowImages":
        if n is None or n >= len(self):
            return self
        return ArrowImages(self.ds.select(range(n)), self.image_column, self.labels[:n], self.channels, self.size)


class StreamImages(IterableDataset):
    """A `datasets` IterableDataset (e.g. `load_dataset(..., streaming=True)`), decoded as it
    streams. Ranks take their share with `split_dataset_by_node`; DataLoader workers take theirs
    from the stream's shards (the `datasets` library splits them by worker)."""

    def __init__(self, ds, image_column: str, label_column: str | None, channels: int, size: int,
                 num_rows: int | None = None):
        self.ds, self.image_column, self.label_column = ds, image_column, label_column
        self.channels, self.size, self.num_rows = channels, size, num_rows
        self.epoch, self.seed, self.shuffle_buffer = 0, 0, 0

    def configure(self, *, rank: int, world: int, seed: int, shuffle_buffer: int) -> "StreamImages":
        from datasets.distributed import split_dataset_by_node

        out = StreamImages(split_dataset_by_node(self.ds, rank, world) if world > 1 else self.ds,
                           self.image_column, self.label_column, self.channels, self.size, self.num_rows)
        out.seed, out.shuffle_buffer = seed, shuffle_buffer
        return out

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def head(self, n: int | None) -> "StreamImages":
        """The stream's first n images (its length then unknown, as the stream may be shorter)."""
        if n is None:
            return self
        return StreamImages(self.ds.take(n), self.image_column, self.label_column, self.channels, self.size)

    def __iter__(self):
        ds = self.ds
        if self.shuffle_buffer:
            ds = ds.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
            ds.set_epoch(self.epoch)
        for i, row in enumerate(ds):
            label = int(row[self.label_column]) if self.label_column else 0
            try:
                arr = pil_to_array(row[self.image_column], self.channels, self.size)
            except Exception as e:
                yield None, label, f"streamed row {i} ({problem(e)})"
                continue
            yield torch.from_numpy(arr), label, None

    @property
    def nbytes(self) -> int:
        return 0 if self.num_rows is None else self.num_rows * self.channels * self.size * self.size

    def __len__(self) -> int:
        if self.num_rows is None:
            raise TypeError("a stream of unknown length")
        return self.num_rows



@dataclass
class ImageData:
    spec: str
    train: Dataset
    test: Dataset
    class_names: list[str]
    channels: int
    image_size: int
    source: str = ""  # where the images came from, for the user and the run's metadata
    columns: dict = field(default_factory=dict)

    @property
    def sizes(self) -> tuple[int | None, int | None]:
        """Images in the train and test splits (None for a stream of unknown length)."""
        return _size_or_none(self.train), _size_or_none(self.test)

    def describe(self) -> dict:
        return {
            "spec": self.spec, "source": self.source, "channels": self.channels,
            "image_size": self.image_size, "train_size": _size_or_none(self.train),
            "test_size": _size_or_none(self.test), **self.columns,
        }


def _size_or_none(split) -> int | None:
    try:
        return len(split)
    except TypeError:
        return None


def split_from_arrays(images: np.ndarray, labels: np.ndarray) -> Split:
    return Split(torch.from_numpy(np.array(images, copy=True)), torch.from_numpy(labels.astype(np.int64)))



def survey(n: int) -> list[int]:
    """Indices of up to SIZE_SURVEY items spread evenly over n: what `geometry` looks at."""
    return sorted(set(np.linspace(0, n - 1, min(n, SIZE_SURVEY)).round().astype(int).tolist()))


def geometry(images, channels: int | None, size: int | None, spec: str) -> tuple[int, int]:
    """Channels and size from a survey of the dataset's images (Pillow images, opened lazily).

    No silent cap: the default size is the images' own when every surveyed image has one square
    size; otherwise the user is asked for --image-size. Channels: RGB when any image is colour."""
    modes, sizes = set(), set()
    for img in images:
        modes.add(img.mode)
        sizes.add(tuple(img.size))
    if not sizes:
        raise VQError(f"{spec} holds no readable images")
    channels = channels or max(channels_of_mode(m) for m in modes)
    if size is None:
        if len(sizes) > 1:
            shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3])
            raise VQError(f"{spec} holds images of several sizes ({shown}, ...); pass --image-size N "
                          "to centre-crop and resize them all to N x N")
        w, h = next(iter(sizes))
        if w != h:
            raise VQError(f"{spec} holds {w}x{h} images, which are not square; pass --image-size N "
                          "to centre-crop and resize them to N x N")
        size = w
    return channels, size


def surveyed(*splits: LazyImages):
    """Pillow images at the survey indices of each split; unreadable ones are left out (they are
    counted when training reads them)."""
    for split in splits:
        for i in survey(len(split)):
            try:
                yield split.open(i)
            except Exception:
                continue
