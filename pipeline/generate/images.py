"""Writing images and grids as PNG, and grids of Pillow images for notebooks."""

from pathlib import Path

import numpy as np
import torch

from vq.pipeline.data.images import to_uint8
from vq.pipeline.files import atomic_write_bytes


def png_bytes(image: torch.Tensor) -> bytes:
    """(C, H, W) uint8 -> PNG bytes."""
    import io

    from PIL import Image

    arr = image.cpu().numpy()
    pil = Image.fromarray(arr[0], "L") if arr.shape[0] == 1 else Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)), "RGB")
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def save_png(image: torch.Tensor, path: Path) -> None:
    """(C, H, W) float in [-1, 1] or uint8 -> PNG, written atomically."""
    img = image if image.dtype == torch.uint8 else to_uint8(image)
    atomic_write_bytes(Path(path), png_bytes(img))


def grid(images: torch.Tensor, nrow: int, padding: int = 2) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> one (C, H', W') uint8 image, white gaps between tiles."""
    from torchvision.utils import make_grid  # here: importing torchvision costs a training run 170 MB

    tiles = to_uint8(images)
    g = make_grid(tiles, nrow=nrow, padding=padding, pad_value=255)
    return g[:1] if images.shape[1] == 1 else g


VIEWED_TILE = 96  # px: a grid's tiles are enlarged (nearest neighbour, by a whole factor) to at least this


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    """A grid PNG for people to look at: 28 px tiles are tiny in an image viewer, so small images are
    enlarged by the whole factor that makes them at least VIEWED_TILE px (x4 at 28), pixels kept
    sharp. The single images beside it keep the model's size."""
    factor = max(1, -(-VIEWED_TILE // images.shape[-1]))
    if factor > 1:
        images = torch.nn.functional.interpolate(images.float(), scale_factor=factor, mode="nearest")
    save_png(grid(images, nrow), path)


def image_grid(images: list, rows: int | None = None, padding: int = 2):
    """Pillow images of one size and mode (what `Pipeline.sample` returns) -> one Pillow image,
    `rows` rows (default: as square as it gets), white gaps between tiles."""
    import math

    from PIL import Image

    if not images:
        raise ValueError("no images to put in a grid")
    rows = rows or max(1, math.floor(math.sqrt(len(images))))
    cols = math.ceil(len(images) / rows)
    w, h = images[0].size
    canvas = Image.new(images[0].mode, (cols * (w + padding) + padding, rows * (h + padding) + padding), "white")
    for i, img in enumerate(images):
        canvas.paste(img, (padding + (i % cols) * (w + padding), padding + (i // cols) * (h + padding)))
    return canvas
