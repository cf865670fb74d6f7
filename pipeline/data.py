"""Dataset specs -> train/test splits of (uint8 image, class index) plus class names.

A spec is one of:
- `fashion-mnist` (default): Debian's idx files in /usr/share/datasets/fashion-mnist (or
  $VQ_FASHION_MNIST_DIR), else the Hugging Face hub copy;
- `cifar10`: the Hugging Face hub copy;
- a local folder with one sub-folder per class (optionally under train/ and test/);
- a Hugging Face dataset saved with `save_to_disk`, or any hub id of an image dataset (read as a
  stream with `streaming=True`).

Every split is a map-style torch Dataset, index -> (uint8 (C, H, W) image, label):
- `Split`: decoded images in memory (Fashion-MNIST, CIFAR-10, any dataset whose decoded pixels
  fit in IN_MEMORY_BYTES), batched by indexing, on the GPU itself when it fits there;
- `FileImages` / `ArrowImages`: a file list or a memory-mapped Arrow table, decoded and resized on
  the fly in DataLoader workers, so memory stays flat however large the dataset;
- `StreamImages` (an IterableDataset): a `datasets` stream, sharded over ranks and workers.
A lazy item that cannot be decoded comes back as None with the reason; `pipeline.loader` skips
and counts those (or stops, with --strict).

Images become floats in [-1, 1] per batch (`to_float`), so Fashion-MNIST costs 47 MB, not 190.
"""

import gzip
import os
import re
import struct
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from vq.pipeline.configs import build
from vq.pipeline.runs import VQError, stored_path

FASHION_MNIST_DIRS = ["/usr/share/datasets/fashion-mnist"]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
HUB_COPIES = {"fashion-mnist": "zalando-datasets/fashion_mnist", "cifar10": "uoft-cs/cifar10"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
HELD_OUT_FRACTION = 0.1  # test share carved from sources that come with one split only
IN_MEMORY_BYTES = 512 * 2**20  # decoded train pixels up to this size are held in memory
SIZE_SURVEY = 256  # images whose size is read (spread over the split) to find the dataset's size
STREAM_TEST_IMAGES = 2000  # test images taken from the head of a streamed test split


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]"""
    return images.float().div_(127.5).sub_(1.0)


def image_batch(batch: tuple, device: torch.device) -> tuple:
    """(uint8 images, labels) -> (float images in [-1, 1], labels) on the device."""
    images, labels = batch
    return to_float(images.to(device, non_blocking=True)), labels.to(device, non_blocking=True)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]"""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


# --- the split types ---------------------------------------------------------------------------

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


def problem(e: Exception) -> str:
    """An exception as a short phrase for a one-line report."""
    return str(e).splitlines()[0] if str(e).strip() else type(e).__name__


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


# --- Fashion-MNIST idx files -------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (plain or .gz): big-endian magic 0x0000 <dtype=0x08> <ndim>, then dims."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise VQError(f"cannot read {path}: {e}") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise VQError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise VQError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    return None


def fashion_mnist_dir() -> Path | None:
    candidates = [os.environ["VQ_FASHION_MNIST_DIR"]] if os.environ.get("VQ_FASHION_MNIST_DIR") else []
    for d in candidates + FASHION_MNIST_DIRS:
        if _find_idx(Path(d), "train-images-idx3-ubyte"):
            return Path(d)
    return None


def load_fashion_mnist_idx(folder: Path) -> ImageData:
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        paths = [_find_idx(folder, f"{prefix}-{kind}") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
        if None in paths:
            raise VQError(f"{folder} lacks the {split} idx files of Fashion-MNIST")
        images, labels = (read_idx(p) for p in paths)
        if images.shape[0] != labels.shape[0]:
            raise VQError(f"{folder}: {split} images and labels differ in count")
        splits[split] = split_from_arrays(images[:, None], labels)
    return ImageData("fashion-mnist", splits["train"], splits["test"], list(FASHION_MNIST_CLASSES),
                     channels=1, image_size=28, source=str(folder))


# --- Pillow images -> uint8 arrays --------------------------------------------------------------

ORIENTATION = 0x0112  # the EXIF tag; values 5 to 8 swap width and height


def channels_of_mode(mode: str) -> int:
    """1 for the grey modes (any bit depth, with or without alpha), else 3."""
    return 1 if mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;16") else 3


@contextmanager
def reading(path):
    """Pillow's failures while reading `path` -> one-line VQErrors that name it and say what to do.
    More than Image.MAX_IMAGE_PIXELS pixels is refused (Pillow only warns up to twice that)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise VQError(f"image {path} has {pixels[1] if pixels else 'too many'} pixels, more than the limit of "
                      f"{Image.MAX_IMAGE_PIXELS} against decompression bombs; scale it down first") from None
    except UnidentifiedImageError:
        raise VQError(f"cannot read image {path}: it is no image file Pillow knows; give a PNG or JPEG") from None
    except VQError:
        raise
    except Exception as e:  # a decoder can raise nearly anything on a corrupt file
        if "truncated" in str(e) or isinstance(e, EOFError):
            raise VQError(f"cannot read image {path}: the file is truncated; save or copy it again") from None
        raise VQError(f"cannot read image {path}: {problem(e)}") from None


def open_image(path):
    """An image file, opened lazily: its header read and its pixel count checked, nothing decoded."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise VQError(f"image {path} {'is a folder' if path.is_dir() else 'does not exist'}; give an image file")
    with reading(path):
        return Image.open(path)


def decode(img, channels: int = 0, size: int = 0):
    """Decode an image from `open_image` and close its file. Given `size`, a JPEG is decoded at the
    smallest DCT scale that still covers size x size (draft): an 8000x6000 photo costs 1/64th."""
    with reading(img.filename), img:
        if size and img.format == "JPEG":
            img.draft("L" if channels == 1 else "RGB", (size, size))
        img.load()
    return img


def upright_size(path) -> tuple[int, int]:
    """An image file's (width, height) as shown, after its EXIF orientation."""
    with reading(path), open_image(path) as img:
        w, h = img.size
        return (h, w) if img.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8) else (w, h)


def is_deep(mode: str) -> bool:
    """A Pillow mode with more than 8 bits per grey pixel (which `convert` would clip)."""
    return mode in ("I", "F") or mode.startswith("I;16")


def has_alpha(img) -> bool:
    """Whether a Pillow image may be transparent: an alpha band or a transparent palette entry."""
    return "transparency" in img.info or img.mode in ("LA", "La", "PA", "RGBA", "RGBa")


def deep_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit or float grey pixels -> uint8 by their range (Pillow's convert clips at 255):
    16 bits (I;16, or I within 0..65535, as older Pillows load 16-bit PNGs) keep their top 8 bits;
    floats within [0, 1] are scaled by 255; anything else is stretched from its min to its max."""
    if mode.startswith("I;16") or (mode == "I" and a.min() >= 0 and a.max() <= 65535):
        return (a.astype(np.uint32) >> 8).astype(np.uint8)
    a = np.nan_to_num(a.astype(np.float64))
    lo, hi = a.min(), a.max()
    if mode == "F" and lo >= 0 and hi <= 1:
        return (a * 255).round().astype(np.uint8)
    return ((a - lo) * (255 / (hi - lo) if hi > lo else 0)).round().astype(np.uint8)


def pil_to_array(img, channels: int, size: int, notes: list | None = None) -> np.ndarray:
    """Any Pillow image -> (C, size, size) uint8: EXIF orientation applied, deeper pixels scaled to 8
    bits (`deep_to_uint8`), transparency composited over black, mode converted, centre-cropped to a
    square, resized (bicubic). `notes` gathers the steps beyond a plain conversion, for the user."""
    from PIL import Image, ImageOps

    notes = [] if notes is None else notes
    orientation = img.getexif().get(ORIENTATION, 1)
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
        notes.append(f"EXIF orientation {orientation} applied")
    if is_deep(img.mode):
        notes.append(f"{img.mode} scaled to 8 bits")
        img = Image.fromarray(deep_to_uint8(np.asarray(img), img.mode))
    if has_alpha(img):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            # Over black, not white: the training sets (Fashion-MNIST, MNIST) show light objects on
            # black, so an object cut out on a transparent background lands on black as they do.
            img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), rgba)
            notes.append("transparency composited over black")
        else:
            img = rgba
    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)  # read-only view of Pillow's buffer: copy into a writable CHW array
    return np.array(arr[None] if channels == 1 else arr.transpose(2, 0, 1), copy=True)


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


def _surveyed(*splits: LazyImages):
    """Pillow images at the survey indices of each split; unreadable ones are left out (they are
    counted when training reads them)."""
    for split in splits:
        for i in survey(len(split)):
            try:
                yield split.open(i)
            except Exception:
                continue


# --- A folder of class sub-folders ------------------------------------------------------------

def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    """Image files under folder, sorted; os.scandir instead of Path.rglob: a folder of a million
    files is listed in seconds."""
    found, stack = [], [str(folder)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=True):
                    if not entry.name.startswith("."):
                        stack.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    found.append(entry.path)
    return [Path(p) for p in sorted(found)]


def _held_out(n: int, seed: int = 0) -> torch.Tensor:
    """Boolean mask marking a fixed, seeded HELD_OUT_FRACTION of n items (at least one if n > 1)."""
    g = torch.Generator().manual_seed(seed)
    k = max(1, round(n * HELD_OUT_FRACTION)) if n > 1 else 0
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[:k]] = True
    return mask


def load_folder(root: Path, image_size: int | None, channels: int | None) -> ImageData:
    layout = {s: root / s for s in ("train", "test")}
    split_dirs = layout if all(p.is_dir() for p in layout.values()) else None
    class_root = layout["train"] if split_dirs else root
    class_names = [p.name for p in _class_folders(class_root)]
    if not class_names:
        raise VQError(f"{root} has no class sub-folders (expected {root}/<class>/<image>.png)")
    files: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for idx, name in enumerate(class_names):
        if split_dirs:
            for split, d in split_dirs.items():
                if (d / name).is_dir():
                    files[split] += [(p, idx) for p in _images_in(d / name)]
        else:
            paths = _images_in(root / name)
            test = _held_out(len(paths), seed=idx)
            for p, t in zip(paths, test.tolist()):
                files["test" if t else "train"].append((p, idx))
    if not files["train"]:
        raise VQError(f"{root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    if not files["test"]:
        files["test"] = files["train"][:1]

    def lazy(items, c, s):
        return FileImages([p for p, _ in items], torch.tensor([i for _, i in items], dtype=torch.int64), c, s)

    channels, size = geometry(_surveyed(lazy(files["train"], 0, 0), lazy(files["test"], 0, 0)), channels, image_size, str(root))
    return ImageData(str(root), lazy(files["train"], channels, size), lazy(files["test"], channels, size),
                     class_names, channels=channels, image_size=size, source=str(root))


# --- Hugging Face datasets ----------------------------------------------------------------------

def _detect_columns(features, image_column: str | None, label_column: str | None) -> tuple[str, str | None]:
    import datasets

    names = list(features)
    if image_column is None:
        image_column = next((n for n in names if isinstance(features[n], datasets.Image)), None)
        if image_column is None:
            raise VQError(f"no image column found among {names}; pass --image-column")
    elif image_column not in features:
        raise VQError(f"no column '{image_column}' in the dataset (columns: {', '.join(names)})")
    if label_column is None:
        label_column = next((n for n in names if isinstance(features[n], datasets.ClassLabel)), None)
        if label_column is None:
            label_column = next((n for n in ("label", "labels", "class", "fine_label") if n in features), None)
    elif label_column not in features:
        raise VQError(f"no column '{label_column}' in the dataset (columns: {', '.join(names)})")
    return image_column, label_column


def _hf_splits(ds) -> tuple:
    import datasets

    if isinstance(ds, (datasets.Dataset, datasets.IterableDataset)):
        ds = {"train": ds}
    train_name = "train" if "train" in ds else next(iter(ds))
    test_name = next((s for s in ("test", "validation", "valid", "val") if s in ds and s != train_name), None)
    if test_name is None:
        if isinstance(ds[train_name], datasets.IterableDataset):
            raise VQError("a streamed dataset needs its own test (or validation) split")
        parts = ds[train_name].train_test_split(test_size=HELD_OUT_FRACTION, seed=0)
        return parts["train"], parts["test"]
    return ds[train_name], ds[test_name]


def _class_names(features, label_column: str | None, labels: np.ndarray | None) -> list[str]:
    import datasets

    feature = features[label_column] if label_column else None
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    if not label_column:
        return ["image"]
    if labels is None:
        raise VQError(f"column '{label_column}' is no ClassLabel, and a stream's classes cannot be counted up front; "
                      "cast it to a ClassLabel or drop --streaming")
    if labels.size and labels.min() < 0:
        raise VQError(f"column '{label_column}' holds negative labels")
    return [str(i) for i in range(int(labels.max()) + 1)] if labels.size else []


def _labels(ds, label_column: str | None) -> np.ndarray:
    if not label_column:
        return np.zeros(len(ds), dtype=np.int64)
    column = ds.select_columns([label_column]).with_format("numpy")[:][label_column]
    return np.asarray(column, dtype=np.int64)


def load_hf(ds, spec: str, image_size: int | None, channels: int | None,
            image_column: str | None, label_column: str | None, rows: int | None = None) -> ImageData:
    """A saved or hub dataset, map-style (memory-mapped Arrow) or streamed (IterableDataset);
    `rows`: a stream's train length when known from elsewhere than its info."""
    import datasets

    train, test = _hf_splits(ds)
    image_column, label_column = _detect_columns(train.features, image_column, label_column)
    columns = {"image_column": image_column, "label_column": label_column}
    if isinstance(train, datasets.IterableDataset):
        head = [row[image_column] for row in train.take(min(SIZE_SURVEY, 64))]
        channels, size = geometry(head, channels, image_size, spec)
        names = _class_names(train.features, label_column, None)
        if rows is None and train.info.splits and train.split in train.info.splits:
            rows = train.info.splits[train.split].num_examples
        stream = StreamImages(train, image_column, label_column, channels, size, rows or None)
        tests = StreamImages(test.take(STREAM_TEST_IMAGES), image_column, label_column, channels, size)
        return ImageData(spec, stream, tests, names, channels=channels, image_size=size, source=spec,
                         columns={**columns, "streaming": True})
    if len(train) == 0:
        raise VQError(f"{spec} has an empty train split")
    train_labels, test_labels = _labels(train, label_column), _labels(test, label_column)
    names = _class_names(train.features, label_column, train_labels)
    probes = (ArrowImages(split, image_column, torch.from_numpy(y), 0, 0) for split, y in ((train, train_labels), (test, test_labels)))
    channels, size = geometry(_surveyed(*probes), channels, image_size, spec)
    return ImageData(
        spec,
        ArrowImages(train, image_column, torch.from_numpy(train_labels), channels, size),
        ArrowImages(test, image_column, torch.from_numpy(test_labels), channels, size),
        names, channels=channels, image_size=size, source=spec, columns=columns,
    )


def _load_from_hub(hub_id: str, streaming: bool = False):
    import datasets

    try:
        return datasets.load_dataset(hub_id, streaming=streaming)
    except Exception as e:  # datasets raises many types for offline, missing and private repos
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VQError(f"'{hub_id}' is no local folder, and loading it from the Hugging Face hub failed: {first_line}") from None


def _is_saved_hf(path: Path) -> bool:
    return any((path / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json"))


def _load_saved(path: Path, streaming: bool):
    """A dataset saved with `save_to_disk` -> (dataset, train rows); with streaming, read as a
    stream of its Arrow shards (the offline twin of a hub stream: the same IterableDataset path)."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise VQError(f"cannot load the saved dataset at {path}: {e}") from None
    if not streaming:
        return ds, None
    parts = ds if isinstance(ds, datasets.DatasetDict) else {"train": ds}
    streams = {name: split.to_iterable_dataset(num_shards=max(1, min(64, len(split) // 1000)))
               for name, split in parts.items()}
    return streams, len(parts["train"]) if "train" in parts else None


HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def load_image_data(
    spec: str = "fashion-mnist",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    limit: int | None = None,
    streaming: bool = False,
) -> ImageData:
    """Resolve a dataset spec to splits (lazy where the source is); `limit` keeps the first N
    images of each split (quick runs, tests). Whether to decode into memory is the loader's call."""
    key = spec.lower()
    path = Path(spec).expanduser()
    if key in ("fashion-mnist", "fashion_mnist", "fashionmnist") and not path.exists():
        folder = fashion_mnist_dir()
        if folder:
            data = _resize(load_fashion_mnist_idx(folder), image_size, channels)
        else:
            data = load_hf(_load_from_hub(HUB_COPIES["fashion-mnist"], streaming), "fashion-mnist",
                           image_size, channels, None, None)
    elif key in ("cifar10", "cifar-10") and not path.exists():
        data = load_hf(_load_from_hub(HUB_COPIES["cifar10"], streaming), "cifar10", image_size, channels, image_column, label_column)
    elif path.exists():
        if not path.is_dir():
            raise VQError(f"{spec} is a file; give a folder of class sub-folders or a saved dataset")
        if _is_saved_hf(path):
            ds, rows = _load_saved(path, streaming)
            data = load_hf(ds, spec, image_size, channels, image_column, label_column, rows)
        elif streaming:
            raise VQError(f"--streaming reads Hugging Face datasets; {spec} is a folder, which is read lazily anyway")
        else:
            data = load_folder(path, image_size, channels)
    elif spec.startswith((".", "/", "~")) or not HUB_ID.fullmatch(spec):
        raise VQError(f"data path {spec} does not exist")
    else:
        data = load_hf(_load_from_hub(spec, streaming), spec, image_size, channels, image_column, label_column)
    if limit is not None:
        data.train, data.test = data.train.head(limit), data.test.head(limit)
        if isinstance(data.train, StreamImages):
            data.train.num_rows = limit
    return data


def _resize(data: ImageData, image_size: int | None, channels: int | None) -> ImageData:
    """Apply --image-size / --channels to an already-decoded uint8 dataset."""
    import torch.nn.functional as F

    for split in (data.train, data.test):
        x = split.images
        if channels and channels != x.shape[1]:
            x = x.float().mean(1, keepdim=True) if channels == 1 else x.expand(-1, channels, -1, -1)
        if image_size and image_size != x.shape[-1]:
            x = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        split.images = x.round().clamp(0, 255).to(torch.uint8) if x.is_floating_point() else x.contiguous()
    data.channels, data.image_size = data.train.images.shape[1], data.train.images.shape[-1]
    return data


# --- how a run reads its data: options stored in the run and read back ------------------------

@dataclass
class DataOptions:
    spec: str | None = None  # None: fashion-mnist for a new run, the run's own data on --resume
    image_size: int | None = None
    channels: int | None = None
    image_column: str | None = None
    label_column: str | None = None
    limit: int | None = None
    streaming: bool = False
    strict: bool = False

    def load(self) -> ImageData:
        return load_image_data(
            self.spec or "fashion-mnist", image_size=self.image_size, channels=self.channels,
            image_column=self.image_column, label_column=self.label_column, limit=self.limit,
            streaming=self.streaming,
        )


def data_options_to_store(opts: dict, run_dir: Path) -> dict:
    """A local --data path is kept absolute and relative to the run, so both a moved run and a
    project moved with its data find it, from any working directory."""
    spec = opts["spec"]
    if spec and Path(spec).exists():
        opts = {**opts, "spec": str(Path(spec).resolve()), "spec_from_run": stored_path(spec, run_dir)}
    return opts


def stored_data_options(info: dict, run_dir: Path) -> "DataOptions":
    """How a run read its data, with a stored local path resolved (see data_options_to_store)."""
    saved = info.get("data_options")
    if not isinstance(saved, dict):
        raise VQError(f"{run_dir}/config.json records no data options; it is no run vq trained")
    opts = build(DataOptions, {k: v for k, v in saved.items() if k in DataOptions.__dataclass_fields__},
                 where=f"{run_dir}/config.json data option")
    if saved.get("spec_from_run") and (Path(run_dir) / saved["spec_from_run"]).exists():
        opts.spec = os.path.normpath(Path(run_dir) / saved["spec_from_run"])
    return opts


def saved_data_options(info: dict, given: "DataOptions", run_dir: Path) -> "DataOptions":
    """A resumed (or exported) run reads its data exactly as it was trained; a different --data is
    refused rather than silently mixed in."""
    saved = stored_data_options(info, run_dir)
    def same(a: str, b: str) -> bool:
        return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())

    if given.spec is not None and not same(given.spec, saved.spec):
        raise VQError(f"{run_dir} was trained on --data {saved.spec}, not {given.spec}; "
                      "drop --data to resume it, or start a new run with --out")
    saved.strict = given.strict
    return saved
