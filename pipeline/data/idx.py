"""Fashion-MNIST from its idx files: Debian's `dataset-fashion-mnist` package in
/usr/share/datasets/fashion-mnist (or $VQ_FASHION_MNIST_DIR), decoded straight into memory."""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from vq.pipeline.data.splits import ImageData, split_from_arrays
from vq.pipeline.errors import VQError

FASHION_MNIST_DIRS = ["/usr/share/datasets/fashion-mnist"]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


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


def resize(data: ImageData, image_size: int | None, channels: int | None) -> ImageData:
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
