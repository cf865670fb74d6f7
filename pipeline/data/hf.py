"""Hugging Face datasets: saved with `save_to_disk`, or by hub id; map-style (memory-mapped
Arrow, `ArrowImages`) or streamed (`StreamImages`), their image and label columns detected."""

from pathlib import Path

import numpy as np
import torch

from vq.pipeline.data.folders import HELD_OUT_FRACTION
from vq.pipeline.data.splits import SIZE_SURVEY, ArrowImages, ImageData, StreamImages, geometry, surveyed
from vq.pipeline.errors import VQError

STREAM_TEST_IMAGES = 2000  # test images taken from the head of a streamed test split


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
    channels, size = geometry(surveyed(*probes), channels, image_size, spec)
    return ImageData(
        spec,
        ArrowImages(train, image_column, torch.from_numpy(train_labels), channels, size),
        ArrowImages(test, image_column, torch.from_numpy(test_labels), channels, size),
        names, channels=channels, image_size=size, source=spec, columns=columns,
    )


def load_from_hub(hub_id: str, streaming: bool = False):
    import datasets

    try:
        return datasets.load_dataset(hub_id, streaming=streaming)
    except Exception as e:  # datasets raises many types for offline, missing and private repos
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VQError(f"'{hub_id}' is no local folder, and loading it from the Hugging Face hub failed: {first_line}") from None


def is_saved_hf(path: Path) -> bool:
    return any((path / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json"))


def load_saved(path: Path, streaming: bool):
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
