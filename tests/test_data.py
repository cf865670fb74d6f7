import gzip
import struct

import numpy as np
import pytest
import torch

from conftest import CIFAR10_CLASSES
from vq.pipeline.data.idx import FASHION_MNIST_CLASSES, read_idx
from vq.pipeline.data.splits import ArrowImages
from vq.pipeline.data.sources import load_image_data
from vq.pipeline.data.images import to_float, to_uint8
from vq.pipeline.data.loader import Skipped, materialize
from vq.pipeline.errors import VQError


def test_folder_spec_gives_class_names_from_folders(image_folder):
    data = load_image_data(str(image_folder))
    assert data.class_names == ["circle", "square", "triangle"]
    assert (data.channels, data.image_size) == (1, 16)
    assert len(data.train) + len(data.test) == 30 and len(data.test) == 3  # one held out per class
    train = materialize(data.train)
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 16, 16)
    assert sorted(data.test.labels.tolist()) == [0, 1, 2]


def test_folder_with_train_and_test_subfolders(image_folder, tmp_path):
    import shutil

    root = tmp_path / "split"
    shutil.copytree(image_folder, root / "train")
    shutil.copytree(image_folder, root / "test")
    data = load_image_data(str(root), image_size=8, channels=3)
    assert data.class_names == ["circle", "square", "triangle"]
    assert len(data.train) == len(data.test) == 30
    assert materialize(data.train).images.shape[1:] == (3, 8, 8)


def test_saved_hf_dataset_with_cifar10_schema(cifar_like):
    data = load_image_data(str(cifar_like))
    assert isinstance(data.train, ArrowImages)  # memory-mapped, decoded when read
    assert materialize(data.train).images.shape == (20, 3, 32, 32)
    assert data.class_names == CIFAR10_CLASSES
    assert (data.channels, data.image_size) == (3, 32)
    assert (len(data.train), len(data.test)) == (20, 10)
    assert data.train.labels.tolist() == [i % 10 for i in range(20)]
    assert data.describe()["image_column"] == "img" and data.describe()["label_column"] == "label"


def test_column_overrides_are_checked(cifar_like):
    with pytest.raises(VQError, match="no column 'picture'"):
        load_image_data(str(cifar_like), image_column="picture")


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 6)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    monkeypatch.setenv("VQ_FASHION_MNIST_DIR", str(tmp_path))
    monkeypatch.setattr("vq.pipeline.data.idx.FASHION_MNIST_DIRS", [])
    data = load_image_data("fashion-mnist")
    assert data.class_names == FASHION_MNIST_CLASSES
    assert data.train.images.shape == (12, 1, 28, 28) and data.test.labels.tolist() == [0, 1, 2, 3, 4, 5]
    raw = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert torch.equal(data.train.images[:, 0], torch.from_numpy(raw.copy()))
    small = load_image_data("fashion-mnist", image_size=14, limit=4)
    assert small.train.images.shape == (4, 1, 14, 14)


def test_truncated_idx_file_is_an_error(tmp_path):
    _write_idx(tmp_path / "x.gz", np.zeros((4, 2, 2)))
    data = gzip.open(tmp_path / "x.gz").read()
    with gzip.open(tmp_path / "y.gz", "wb") as f:
        f.write(data[:-3])
    with pytest.raises(VQError, match="truncated"):
        read_idx(tmp_path / "y.gz")


def test_missing_path_empty_folder_and_corrupt_image(tmp_path, image_folder):
    with pytest.raises(VQError, match="does not exist"):
        load_image_data(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VQError, match="no class sub-folders"):
        load_image_data(str(tmp_path / "empty"))
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(VQError, match="holds no images"):
        load_image_data(str(tmp_path / "empty"))
    (image_folder / "circle" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(VQError, match="bad.png"):  # --strict: the first unreadable image stops the run
        data = load_image_data(str(image_folder))
        for split in (data.train, data.test):
            materialize(split, skipped=Skipped(strict=True))


def test_pixel_conversions_round_trip():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    assert to_float(x).min() == -1 and to_float(x).max() == 1
    assert torch.equal(to_uint8(to_float(x)), x)
