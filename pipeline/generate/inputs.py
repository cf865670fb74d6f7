"""Reading what users hand in — images, masks and drawings, as files, Pillow images or arrays — into
the tokenizer's format, with one-line refusals for what cannot be read (missing or truncated
files, decompression bombs, images that are no images), and keep-masks.

Shape legend: b - batch, c - channels, H W - pixels, h w - code grid."""

import numbers
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vq.pipeline.data.images import ORIENTATION, decode, open_image, pil_to_array, reading, to_float, upright_size
from vq.pipeline.errors import VQError
from vq.pipeline.records import ClassBox
from vq.pipeline.sketch.drawings import load_drawing

SIDES = ("top", "bottom", "left", "right")


# Pillow's image modes in words, for the notes people read ("a 112x112 grey image").
MODE_WORDS = {"1": "black and white", "L": "grey", "LA": "grey with transparency", "La": "grey with transparency",
              "P": "palette", "PA": "palette with transparency", "RGB": "colour", "RGBA": "colour with transparency",
              "RGBa": "colour with transparency", "CMYK": "CMYK colour", "YCbCr": "colour", "LAB": "Lab colour",
              "HSV": "HSV colour", "I": "32-bit grey", "F": "floating-point grey", "I;16": "16-bit grey",
              "I;16B": "16-bit grey", "I;16L": "16-bit grey", "I;16N": "16-bit grey"}


def is_pil(x) -> bool:
    from PIL import Image

    return isinstance(x, Image.Image)


def array_to_pil(x, what: str):
    """A numpy array or tensor a user gave as an image -> a Pillow image: (H, W) grey, (H, W, C)
    with 1, 3 or 4 channels; a tensor may be (C, H, W) or (1, C, H, W), floats in [-1, 1] (what
    `Pipeline.decode(..., output_type="pt")` callers hold as float) or uint8; bool is a mask."""
    from PIL import Image

    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)
        if t.is_floating_point():
            t = ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        x = t.numpy()
    a = np.asarray(x)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or 0 in a.shape:
        raise VQError(f"{what} has shape {a.shape}; give (H, W) grey or (H, W, 3) RGB pixels, or an image file")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.number):
            raise VQError(f"{what} holds {a.dtype} values; give uint8 pixels (or floats in [0, 1])")
        a = np.nan_to_num(a.astype(np.float64))
        a = (a.clip(0, 1) * 255 if a.max() <= 1 else a.clip(0, 255)).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a))


def read_image(image, channels: int, size: int, what: str = "image") -> tuple[torch.Tensor, str]:
    """A file path, Pillow image or array -> ((1, c, size, size) in [-1, 1], a note of the conversion
    made: `pil_to_array`'s EXIF orientation, bit depth, transparency, crop and resize)."""
    notes: list[str] = []
    if isinstance(image, (str, Path)):
        path = Path(image)
        img = open_image(path)
        mode, (w, h) = img.mode, img.size  # as stored: decoding a JPEG in draft shrinks it
        with reading(path):
            arr = pil_to_array(decode(img, channels, size), channels, size, notes)
    else:
        img = image if is_pil(image) else array_to_pil(image, what)
        mode, (w, h) = img.mode, img.size
        with reading(what):
            arr = pil_to_array(img, channels, size, notes)
    note = f"{w}x{h} {MODE_WORDS.get(mode, mode)} -> {size}x{size} {'grey' if channels == 1 else 'colour'}" + "".join(f", {n}" for n in notes)
    return to_float(torch.from_numpy(arr)[None]), note


def read_images(images, channels: int, size: int) -> torch.Tensor:
    """One image or a list of them (paths, Pillow images, arrays), or a (b, c, H, W) tensor batch
    (floats in [-1, 1] or uint8) -> (b, c, size, size) floats in [-1, 1]."""
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[0] != 1:
        if images.shape[1] != channels:
            raise VQError(f"the images have {images.shape[1]} channels; this tokenizer reads {channels}")
        x = to_float(images) if images.dtype == torch.uint8 else images.float()
        return x if x.shape[-2:] == (size, size) else F.interpolate(x, size=(size, size), mode="bicubic").clamp(-1, 1)
    if not isinstance(images, (list, tuple)):
        images = [images]
    if not images:
        raise VQError("no images given")
    return torch.cat([read_image(x, channels, size, f"image {i}")[0] for i, x in enumerate(images)])


def picture_size(x) -> tuple[int, int] | None:
    """(width, height) of an image a user gave, as shown (a file after its EXIF orientation, a
    Pillow image, an (H, W[, C]) array, a (C, H, W) or (1, C, H, W) tensor); None when unknown."""
    if isinstance(x, (str, Path)):
        return upright_size(x)
    if is_pil(x):  # as shown: after its EXIF orientation, as it is read
        w, h = x.size
        return (h, w) if x.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8) else (w, h)
    shape = tuple(getattr(x, "shape", ()))
    if isinstance(x, torch.Tensor):
        shape = shape[1:] if len(shape) == 4 and shape[0] == 1 else shape
        return (shape[2], shape[1]) if len(shape) == 3 and shape[0] in (1, 3, 4) else (shape[1], shape[0]) if len(shape) == 2 else None
    return (shape[1], shape[0]) if len(shape) in (2, 3) else None


def same_shape(mask, image) -> None:
    """The mask rule, whatever form the two come in: a mask has its image's shape at any size
    (it is scaled to the model's grid: a 28x28 mask serves a 112x112 image), within a pixel of
    rounding; another shape would stretch it over parts it was not drawn on, so it is refused."""
    if image is None:
        return
    mask_size, image_size = picture_size(mask), picture_size(image)
    if mask_size is None or image_size is None:
        return
    (mw, mh), (iw, ih) = mask_size, image_size
    if abs(mw * ih / iw - mh) > 1 and abs(mh * iw / ih - mw) > 1:
        named = lambda x, size: f"{x} ({size[0]}x{size[1]})" if isinstance(x, (str, Path)) else f"{size[0]}x{size[1]}"  # noqa: E731
        raise VQError(f"the mask is {named(mask, mask_size)} but the image is {named(image, image_size)}: a mask must have "
                      "the image's shape (any size: it is scaled); draw it over the image (white = keep)")


def keep_mask(mask, size: int, fraction: float = 0.5, image=None) -> torch.Tensor:
    """Pixel mask (size, size) bool, True = keep: `mask` is a side ("top", "bottom", "left",
    "right") that keeps `fraction` of the image, or a mask image (file, Pillow image, or array,
    bool True or white = keep; transparency counts as black) of the image's shape at any size
    (`same_shape`). A mask that keeps nothing or everything is refused."""
    if isinstance(mask, str) and not Path(mask).suffix:
        if mask not in SIDES:
            raise VQError(f"unknown mask side '{mask}'; use top, bottom, left or right, or a mask image (white = keep)")
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
            raise VQError(f"fraction must lie strictly between 0 and 1, got {fraction!r}")
        k = round(size * fraction)
        m = torch.zeros(size, size, dtype=torch.bool)
        rows_or_cols = {"top": (slice(0, k), slice(None)), "bottom": (slice(size - k, size), slice(None)),
                        "left": (slice(None), slice(0, k)), "right": (slice(None), slice(size - k, size))}
        m[rows_or_cols[mask]] = True
        what = f"--keep {mask} --fraction {fraction} of a {size}x{size} image"
    else:
        same_shape(mask, image)
        pixels, _ = read_image(mask, 1, size, "mask")
        m = pixels[0, 0] > 0
        what = f"mask {mask}" if isinstance(mask, (str, Path)) else "mask"
    if not m.any():
        raise VQError(f"the {what} keeps nothing: use `vq sample` to draw whole images")
    if m.all():
        raise VQError(f"the {what} keeps everything: nothing to complete (white = keep, black = draw)")
    return m


def read_drawing(drawing, size: int, box: float | ClassBox | None = None) -> tuple[torch.Tensor, str]:
    """A drawing (file, Pillow image or array; any size and mode, dark lines on light or light on
    dark) -> ((1, 1, size, size) bool lines as the sketch prior reads them, framed to `box` when
    given (`SketchRecord.frame_for`: the dataset's object size, or a class's `ClassBox`), a note)."""
    if not isinstance(drawing, (str, Path)) and not is_pil(drawing):
        drawing = array_to_pil(drawing, "sketch")
    return load_drawing(drawing, size, box)

