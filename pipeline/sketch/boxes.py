"""How large a dataset's objects are, and in what proportions per class, measured on their
outlines (`edges.outline_map`) when codes are exported with sketches: the frames drawings are
fitted to (`drawings`), recorded in the export and the sketch prior (`records.SketchRecord`).

Shape legend: b - batch, H W - image pixels.
"""

import torch

from vq.pipeline.records import ClassBox


def box_extents(outlines: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(b, 1, H, W) bool outlines -> each one's bounding box height and width as shares of the
    image's side, and which outlines are not empty (the extents of empty ones are meaningless)."""
    rows, cols = outlines.any(-1)[:, 0], outlines.any(-2)[:, 0]

    def extent(hit: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(hit.shape[1])
        return torch.where(hit, idx, -1).amax(1) - torch.where(hit, idx, hit.shape[1]).amin(1) + 1

    return extent(rows).float() / outlines.shape[-2], extent(cols).float() / outlines.shape[-1], rows.any(1)


def object_box(outlines: torch.Tensor) -> float:
    """(b, 1, H, W) bool outlines -> the median of their bounding boxes' longer side, as a share of
    the image's side: how large the dataset's objects are (`normalise_drawing` frames drawings to it)."""
    h, w, keep = box_extents(outlines)
    if not keep.any():
        return 1.0
    return round(float(torch.maximum(h, w)[keep].median()), 3)


ASPECT_QUANTILES = (0.25, 0.75)  # a drawing given with its class is brought within these quantiles of the class's aspects


def class_boxes(outlines: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[ClassBox | None]:
    """(b, 1, H, W) bool outlines and their (b,) labels -> per class its objects' typical longer
    side (median, a share of the side) and the middle of their aspects (width over height, at
    `ASPECT_QUANTILES`); None for a class with no outline. Fashion-MNIST's trousers are 0.39-0.43
    as wide as tall, its sneakers 1.9-2.5."""
    h, w, keep = box_extents(outlines)
    boxes = []
    for k in range(num_classes):
        mine = keep & (labels == k)
        if not mine.any():
            boxes.append(None)
            continue
        aspect = w[mine] / h[mine]
        boxes.append(ClassBox(round(float(torch.maximum(h, w)[mine].median()), 3),
                              *(round(float(aspect.quantile(q)), 3) for q in ASPECT_QUANTILES)))
    return boxes
