"""Dataset specs -> train/test splits of (uint8 image, class index) plus class names.

A spec is one of:
- `fashion-mnist` (default): Debian's idx files in /usr/share/datasets/fashion-mnist (or
  $VQ_FASHION_MNIST_DIR), else the Hugging Face hub copy;
- `cifar10`: the Hugging Face hub copy;
- a local folder with one sub-folder per class (optionally under train/ and test/);
- a Hugging Face dataset saved with `save_to_disk`, or any hub id of an image dataset (read as a
  stream with `streaming=True`).

The splits are `splits`' types; a run's `DataOptions` (`records`) load them again exactly.
"""


import re
from dataclasses import replace
from pathlib import Path

from vq.pipeline.data.folders import load_folder
from vq.pipeline.data.hf import is_saved_hf, load_from_hub, load_hf, load_saved
from vq.pipeline.data.idx import fashion_mnist_dir, load_fashion_mnist_idx, resize
from vq.pipeline.data.splits import ImageData, StreamImages
from vq.pipeline.errors import VQError
from vq.pipeline.records import DataOptions

HUB_COPIES = {"fashion-mnist": "zalando-datasets/fashion_mnist", "cifar10": "uoft-cs/cifar10"}
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
            data = resize(load_fashion_mnist_idx(folder), image_size, channels)
        else:
            data = load_hf(load_from_hub(HUB_COPIES["fashion-mnist"], streaming), "fashion-mnist",
                           image_size, channels, None, None)
    elif key in ("cifar10", "cifar-10") and not path.exists():
        data = load_hf(load_from_hub(HUB_COPIES["cifar10"], streaming), "cifar10", image_size, channels, image_column, label_column)
    elif path.exists():
        if not path.is_dir():
            raise VQError(f"{spec} is a file; give a folder of class sub-folders or a saved dataset")
        if is_saved_hf(path):
            ds, rows = load_saved(path, streaming)
            data = load_hf(ds, spec, image_size, channels, image_column, label_column, rows)
        elif streaming:
            raise VQError(f"--streaming reads Hugging Face datasets; {spec} is a folder, which is read lazily anyway")
        else:
            data = load_folder(path, image_size, channels)
    elif spec.startswith((".", "/", "~")) or not HUB_ID.fullmatch(spec):
        raise VQError(f"data path {spec} does not exist")
    else:
        data = load_hf(load_from_hub(spec, streaming), spec, image_size, channels, image_column, label_column)
    if limit is not None:
        data.train, data.test = data.train.head(limit), data.test.head(limit)
        if isinstance(data.train, StreamImages):
            data.train.num_rows = limit
    return data




def load_data(options: DataOptions) -> ImageData:
    """The splits a run's data options name."""
    return load_image_data(options.spec or "fashion-mnist", image_size=options.image_size, channels=options.channels,
                           image_column=options.image_column, label_column=options.label_column, limit=options.limit,
                           streaming=options.streaming)


def resumed_data(record, given: DataOptions) -> DataOptions:
    """A resumed (or exported) run reads its data exactly as it was trained; a different --data is
    refused rather than silently mixed in."""
    saved = record.data_options()

    def same(a: str, b: str) -> bool:
        return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())

    if given.spec is not None and not same(given.spec, saved.spec):
        raise VQError(f"{record.run_dir} was trained on --data {saved.spec}, not {given.spec}; "
                      "drop --data to resume it, or start a new run with --out")
    return replace(saved, strict=given.strict)
