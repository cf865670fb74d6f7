"""Dataset specs -> train/test splits of (uint8 image tensor, class index) plus class names.

A spec is one of:
- `fashion-mnist` (default): Debian's idx files in /usr/share/datasets/fashion-mnist (or
  $VQ_FASHION_MNIST_DIR), else the Hugging Face hub copy;
- `cifar10`: the Hugging Face hub copy;
- a local folder with one sub-folder per class (optionally under train/ and test/);
- a Hugging Face dataset saved with `save_to_disk`, or any hub id of an image dataset.

Images are held as uint8 (N, C, H, W) and turned into floats in [-1, 1] per batch (`to_float`),
so Fashion-MNIST costs 47 MB of memory rather than 190.
"""

import gzip
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.runs import VQError

FASHION_MNIST_DIRS = ["/usr/share/datasets/fashion-mnist"]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
HUB_COPIES = {"fashion-mnist": "zalando-datasets/fashion_mnist", "cifar10": "uoft-cs/cifar10"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
HELD_OUT_FRACTION = 0.1  # test share carved from sources that come with one split only


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return self.labels.shape[0]

    def head(self, n: int | None) -> "Split":
        return self if n is None else Split(self.images[:n], self.labels[:n])


@dataclass
class ImageData:
    spec: str
    train: Split
    test: Split
    class_names: list[str]
    source: str = ""  # where the images came from, for the user and the run's metadata
    columns: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]

    def describe(self) -> dict:
        return {
            "spec": self.spec, "source": self.source, "channels": self.channels,
            "image_size": self.image_size, "train_size": len(self.train),
            "test_size": len(self.test), **self.columns,
        }


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]"""
    return images.float().div_(127.5).sub_(1.0)


def image_batch(batch: tuple, device: torch.device) -> tuple:
    """(uint8 images, labels) on the CPU -> (float images in [-1, 1], labels) on the device."""
    images, labels = batch
    return to_float(images.to(device, non_blocking=True)), labels.to(device, non_blocking=True)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]"""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


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
        splits[split] = Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    return ImageData("fashion-mnist", splits["train"], splits["test"], list(FASHION_MNIST_CLASSES), source=str(folder))


# --- Pillow images -> uint8 tensors -------------------------------------------------------------

def channels_of_mode(mode: str) -> int:
    return 1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3


def pil_to_array(img, channels: int, size: int) -> np.ndarray:
    """Any Pillow image -> (C, size, size) uint8: convert the mode, centre-crop to a square,
    resize with antialiasing."""
    from PIL import Image

    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def default_geometry(img, channels: int | None, size: int | None) -> tuple[int, int]:
    """Channels from the first image's mode; size from its shorter side, capped at 64."""
    return (channels or channels_of_mode(img.mode), size or min(min(img.size), 64))


# --- A folder of class sub-folders ------------------------------------------------------------

def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
        return img
    except (OSError, UnidentifiedImageError) as e:
        raise VQError(f"cannot read image {path}: {e}") from None


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
    first = _open_image(files["train"][0][0])
    channels, size = default_geometry(first, channels, image_size)
    splits = {}
    for split, items in files.items():
        arrays = [pil_to_array(_open_image(p), channels, size) for p, _ in items]
        splits[split] = Split(torch.from_numpy(np.stack(arrays)), torch.tensor([i for _, i in items], dtype=torch.int64))
    return ImageData(str(root), splits["train"], splits["test"], class_names, source=str(root))


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

    if isinstance(ds, datasets.Dataset):
        ds = datasets.DatasetDict(train=ds)
    train_name = "train" if "train" in ds else next(iter(ds))
    test_name = next((s for s in ("test", "validation", "valid", "val") if s in ds and s != train_name), None)
    if test_name is None:
        parts = ds[train_name].train_test_split(test_size=HELD_OUT_FRACTION, seed=0)
        return parts["train"], parts["test"]
    return ds[train_name], ds[test_name]


def _hf_to_split(ds, image_column: str, label_column: str | None, channels: int, size: int, workers: int) -> Split:
    def convert(batch):
        arrays = [pil_to_array(img, channels, size) for img in batch[image_column]]
        return {"pixels": np.stack(arrays)}

    keep = [image_column] + ([label_column] if label_column else [])
    ds = ds.select_columns(keep)
    mapped = ds.map(
        convert, batched=True, batch_size=256, remove_columns=[image_column],
        num_proc=workers if workers > 1 else None, keep_in_memory=True,
        desc="decoding images",
    ).with_format("numpy")
    table = mapped[:]  # one slice of the table: fast, unlike per-column access
    images = torch.from_numpy(np.asarray(table["pixels"], dtype=np.uint8))
    labels = torch.from_numpy(np.asarray(table[label_column], dtype=np.int64)) if label_column else torch.zeros(len(ds), dtype=torch.int64)
    return Split(images, labels)


def load_hf(ds, spec: str, image_size: int | None, channels: int | None,
            image_column: str | None, label_column: str | None, workers: int) -> ImageData:
    import datasets

    train, test = _hf_splits(ds)
    image_column, label_column = _detect_columns(train.features, image_column, label_column)
    label_feature = train.features[label_column] if label_column else None
    if isinstance(label_feature, datasets.ClassLabel):
        class_names = list(label_feature.names)
    elif label_column:
        ids = sorted(set(int(v) for v in train[label_column]))
        if ids and (ids[0] < 0):
            raise VQError(f"column '{label_column}' holds negative labels")
        class_names = [str(i) for i in range(ids[-1] + 1)] if ids else []
    else:
        class_names = ["image"]
    if len(train) == 0:
        raise VQError(f"{spec} has an empty train split")
    channels, size = default_geometry(train[0][image_column], channels, image_size)
    return ImageData(
        spec,
        _hf_to_split(train, image_column, label_column, channels, size, workers),
        _hf_to_split(test, image_column, label_column, channels, size, workers),
        class_names,
        source=spec,
        columns={"image_column": image_column, "label_column": label_column},
    )


def _load_from_hub(hub_id: str):
    import datasets

    try:
        return datasets.load_dataset(hub_id)
    except Exception as e:  # datasets raises many types for offline, missing and private repos
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VQError(f"'{hub_id}' is no local folder, and loading it from the Hugging Face hub failed: {first_line}") from None


def _is_saved_hf(path: Path) -> bool:
    return any((path / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json"))


HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def load_image_data(
    spec: str = "fashion-mnist",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    workers: int = 0,
    limit: int | None = None,
) -> ImageData:
    """Resolve a dataset spec; `limit` keeps the first N images of each split (quick runs, tests)."""
    key = spec.lower()
    path = Path(spec).expanduser()
    if key in ("fashion-mnist", "fashion_mnist", "fashionmnist") and not path.exists():
        folder = fashion_mnist_dir()
        data = load_fashion_mnist_idx(folder) if folder else load_hf(
            _load_from_hub(HUB_COPIES["fashion-mnist"]), "fashion-mnist", None, None, None, None, workers)
        data = _resize(data, image_size, channels)
    elif key in ("cifar10", "cifar-10") and not path.exists():
        data = load_hf(_load_from_hub(HUB_COPIES["cifar10"]), "cifar10", image_size, channels, image_column, label_column, workers)
    elif path.exists():
        if not path.is_dir():
            raise VQError(f"{spec} is a file; give a folder of class sub-folders or a saved dataset")
        if _is_saved_hf(path):
            import datasets

            try:
                ds = datasets.load_from_disk(str(path))
            except Exception as e:
                raise VQError(f"cannot load the saved dataset at {spec}: {e}") from None
            data = load_hf(ds, spec, image_size, channels, image_column, label_column, workers)
        else:
            data = load_folder(path, image_size, channels)
    elif spec.startswith((".", "/", "~")) or not HUB_ID.fullmatch(spec):
        raise VQError(f"data path {spec} does not exist")
    else:
        data = load_hf(_load_from_hub(spec), spec, image_size, channels, image_column, label_column, workers)
    if limit is not None:
        data.train, data.test = data.train.head(limit), data.test.head(limit)
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
    return data
