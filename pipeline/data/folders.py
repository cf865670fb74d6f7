"""A local folder of images with one sub-folder per class (optionally under train/ and test/),
listed fast (os.scandir: a million files in seconds) and decoded lazily (`FileImages`)."""

import os
from pathlib import Path

import torch

from vq.pipeline.data.splits import FileImages, ImageData, geometry, surveyed
from vq.pipeline.errors import VQError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
HELD_OUT_FRACTION = 0.1  # test share carved from a folder without a test/ split


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

    channels, size = geometry(surveyed(lazy(files["train"], 0, 0), lazy(files["test"], 0, 0)), channels, image_size, str(root))
    return ImageData(str(root), lazy(files["train"], channels, size), lazy(files["test"], channels, size),
                     class_names, channels=channels, image_size=size, source=str(root))
