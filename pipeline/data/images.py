"""Images as vq reads them, from any file a user or a dataset hands in: Pillow's failures as
one-line refusals naming the file (truncated files, decompression bombs, files that are no
images), lazy opening (the header read and the pixel count checked before anything is decoded),
any mode and bit depth to uint8 (EXIF orientation, 16-bit and float pixels by their range,
transparency over black), centre-cropped and resized; and batches of them as floats in [-1, 1]
(`to_float`), so Fashion-MNIST costs 47 MB, not 190."""

import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from vq.pipeline.errors import VQError


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


def problem(e: Exception) -> str:
    """An exception as a short phrase for a one-line report."""
    return str(e).splitlines()[0] if str(e).strip() else type(e).__name__


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
