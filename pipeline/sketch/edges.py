"""The fixed edge detector that turns every training image into its sketch, the outline of its
silhouette, and the edge-agreement score.

**The detector** (`edge_map`, version `SKETCH_DETECTOR`), on each image's luminance in [0, 1]:
1. a 3x3 binomial blur ([1, 2, 1] / 4 in each direction), against pixel noise;
2. Sobel gradients, their magnitude and direction;
3. non-maximum suppression across the edge (4 directions), so lines are one pixel wide;
4. hysteresis: pixels above `HIGH` x the image's largest magnitude start lines, which grow
   through 8-neighbours above `LOW` x that magnitude (thresholds relative to each image, so
   dark garments on black draw as clearly as bright ones); a magnitude below `FLOOR` (in
   luminance units) is never an edge, so a flat image has none;
5. thinning (Zhang & Suen 1984) to one-pixel lines.
Everything is element-wise or a fixed convolution in float32 on the CPU: on one machine and
torch build, the same image always gives the same sketch, in a batch or alone (another CPU or
build may round a pixel near a threshold the other way).

**Outlines** (`outline_map`, version `OUTLINE_VERSION`): what people draw is mostly the boundary of
the object's silhouette, without the inner lines. The silhouette is every pixel that differs from
the image's background (the median of its border) by more than `OUTLINE_LEVEL` of the image's
largest difference (and `FLOOR`), with its holes filled; its boundary, the image's border
counting as background, is thinned to one-pixel lines: a closed curve around each object. The
export stores it beside the edge map, and training draws free-hand styles from both
(`styles`).

**Edge agreement** (`edge_f1`): F1 between two edge maps with a tolerance of one pixel: a pixel
of one map counts as matched when the other has an edge within its 3x3 neighbourhood.

Shape legend: b - batch, H W - image pixels.
"""

import torch
import torch.nn.functional as F

SKETCH_DETECTOR = 1  # bump when the detector changes: exported sketches record it
OUTLINE_VERSION = 1  # bump when `outline_map` changes: exports record it beside the detector
LOW, HIGH, FLOOR = 0.15, 0.3, 0.05
OUTLINE_LEVEL = 0.1  # a silhouette pixel differs from the background by this share of the image's largest difference


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(b, c, H, W) in [-1, 1] -> (b, 1, H, W) luminance in [0, 1] (ITU-R 601 weights)."""
    x = (images.float() + 1) / 2
    if x.shape[1] == 3:
        x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return x.clamp(0, 1)


def _conv(x: torch.Tensor, kernel: list[list[float]]) -> torch.Tensor:
    k = torch.tensor(kernel, dtype=x.dtype, device=x.device)[None, None]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)


# Zhang & Suen's neighbours P2..P9, clockwise from north: N, NE, E, SE, S, SW, W, NW.
_AROUND = [(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)]


def _neighbours(x: torch.Tensor) -> list[torch.Tensor]:
    """(b, 1, H, W) -> the 8 maps (b, 1, H, W) of each pixel's neighbours P2..P9 (`_AROUND`),
    zero beyond the border."""
    p = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    return [p[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in _AROUND]


def _thinning_tables() -> torch.Tensor:
    """(2, 256) bool: whether Zhang & Suen's sub-iteration 0 / 1 removes a line pixel whose
    neighbours P2..P9 (clockwise from north) are the bits 0..7 of the index."""
    table = torch.zeros(2, 256, dtype=torch.bool)
    for code in range(256):
        p = [(code >> i) & 1 for i in range(8)]
        p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
        transitions = sum(p[i] == 0 and p[(i + 1) % 8] == 1 for i in range(8))
        core = 2 <= sum(p) <= 6 and transitions == 1
        table[0, code] = core and p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
        table[1, code] = core and p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
    return table


_THINNING = _thinning_tables()


def _code_kernel() -> torch.Tensor:
    """(1, 1, 3, 3) float: 2**i at the place of neighbour P(i+2) (`_AROUND`), 0 at the centre."""
    k = torch.zeros(1, 1, 3, 3)
    for bit, (dy, dx) in enumerate(_AROUND):
        k[0, 0, 1 + dy, 1 + dx] = 2.0**bit
    return k


_CODE_KERNEL = _code_kernel()


def _code(x: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) uint8 0/1 -> int64 byte of each pixel's neighbours, bit i = P(i+2), zero beyond
    the border: one convolution with the powers of two (exact in float32: sums of distinct powers up to 255)."""
    return F.conv2d(x.float(), _CODE_KERNEL.to(x.device), padding=1).long()


def max3(x: torch.Tensor, fill: float = 0) -> torch.Tensor:
    """(b, 1, H, W) -> the maximum over each pixel's 3x3 neighbourhood, `fill` beyond the border:
    two passes of three shifted slices (on a CPU, 10x faster than a stride-1 max_pool2d)."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 0, 0), value=fill)
    rows = p[..., :, 0:w].maximum(p[..., :, 1 : 1 + w]).maximum(p[..., :, 2 : 2 + w])
    q = F.pad(rows, (0, 0, 1, 1), value=fill)
    return q[..., 0:h, :].maximum(q[..., 1 : 1 + h, :]).maximum(q[..., 2 : 2 + h, :])


def dilate(x: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) bool -> bool, grown by one pixel in the 8 directions."""
    return max3(x.to(torch.uint8)) > 0


def thin(mask: torch.Tensor) -> torch.Tensor:
    """Zhang & Suen thinning (1984): (b, 1, H, W) bool -> bool lines one pixel wide with the
    same connectivity. Each sub-iteration is a table look-up of the 8 neighbours as a byte, on
    the images still changing."""
    x = mask.to(torch.uint8).clone()
    active = torch.arange(x.shape[0], device=x.device)
    tables = _THINNING.to(x.device)
    while active.numel():
        part = x[active]
        changed = torch.zeros(active.numel(), dtype=torch.bool, device=x.device)
        for sub in (0, 1):
            remove = tables[sub][_code(part)] & (part > 0)
            part = part.masked_fill(remove, 0)
            changed |= remove.flatten(1).any(1)
        x[active] = part
        active = active[changed]
    return x.bool()


@torch.no_grad()
def edge_map(images: torch.Tensor) -> torch.Tensor:
    """(b, c, H, W) images in [-1, 1] -> (b, 1, H, W) bool edge maps (the detector above)."""
    x = luminance(images.cpu())
    x = _conv(x, [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]])
    gx = _conv(x, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 4
    gy = _conv(x, [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]) / 4
    mag = torch.sqrt(gx**2 + gy**2)
    # Non-maximum suppression: compare with both neighbours across the edge (the gradient's
    # direction, rounded to 0, 45, 90 or 135 degrees).
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180
    sector = (((angle + 22.5) // 45) % 4).long()
    n = _neighbours(mag)  # N, NE, E, SE, S, SW, W, NW
    pairs = torch.stack([
        torch.maximum(n[2], n[6]),  # 0 deg gradient (along x): E and W
        torch.maximum(n[3], n[7]),  # 45 deg (y grows downwards): SE and NW
        torch.maximum(n[0], n[4]),  # 90 deg: N and S
        torch.maximum(n[1], n[5]),  # 135 deg: NE and SW
    ]).gather(0, sector[None]).squeeze(0)
    peak = mag * (mag >= pairs)
    top = peak.amax(dim=(-2, -1), keepdim=True)
    weak = (peak >= LOW * top) & (peak >= FLOOR)
    strong = (peak >= HIGH * top) & (peak >= FLOOR)
    active = torch.arange(strong.shape[0])
    while active.numel():  # hysteresis: grow the strong lines through weak 8-neighbours
        grown = weak[active] & dilate(strong[active])
        changed = (grown != strong[active]).flatten(1).any(1)
        strong[active] = grown
        active = active[changed]
    return thin(strong)


def _dilate4(x: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) bool -> bool, grown by one pixel up, down, left and right."""
    p = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    return x | p[..., :h, 1 : 1 + w] | p[..., 2:, 1 : 1 + w] | p[..., 1 : 1 + h, :w] | p[..., 1 : 1 + h, 2:]


def _erode(x: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) bool -> bool, shrunk by one pixel in the 8 directions; beyond the border is
    background, so a shape touching the border keeps a boundary there."""
    return ~(max3((~x).to(torch.uint8), fill=1) > 0)


def fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) bool -> bool: the mask plus every region of its complement that does not reach
    the border (grown from the border through 4-neighbours of the complement: an 8-connected line,
    diagonal steps included, encloses what is inside it)."""
    free = ~mask
    edge = torch.zeros_like(mask)
    edge[..., 0, :] = edge[..., -1, :] = True
    edge[..., :, 0] = edge[..., :, -1] = True
    outside = free & edge
    active = torch.arange(mask.shape[0], device=mask.device)
    while active.numel():  # only the images still growing
        grown = free[active] & _dilate4(outside[active])
        changed = (grown != outside[active]).flatten(1).any(1)
        outside[active] = grown
        active = active[changed]
    return ~outside


def border_median(x: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (...): the median of each image's border pixels, its background."""
    return torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1).median(dim=-1).values


def silhouette(images: torch.Tensor) -> torch.Tensor:
    """(b, c, H, W) images in [-1, 1] -> (b, 1, H, W) bool: the pixels that stand out from the
    image's background (its border's median), holes filled (`outline_map` says how)."""
    x = luminance(images.cpu())
    diff = (x - border_median(x)[..., None, None]).abs()
    level = (OUTLINE_LEVEL * diff.amax(dim=(-2, -1), keepdim=True)).clamp(min=FLOOR)
    return fill_holes(diff > level)


@torch.no_grad()
def outline_map(images: torch.Tensor) -> torch.Tensor:
    """(b, c, H, W) images in [-1, 1] -> (b, 1, H, W) bool: the one-pixel boundary of each image's
    silhouette (no inner lines)."""
    shape = silhouette(images)
    return thin(shape & ~_erode(shape))


def components(lines: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) bool -> (b, 1, H, W) int64: each 8-connected component of the lines labelled by
    its largest pixel index + 1 (labels spread through the lines until they settle); 0 off the lines."""
    b, _, h, w = lines.shape
    index = torch.arange(1, h * w + 1, dtype=torch.float32, device=lines.device).view(1, 1, h, w)
    label = torch.where(lines, index.expand(b, 1, h, w), torch.zeros(()))
    while True:
        grown = torch.where(lines, max3(label), label)
        if torch.equal(grown, label):
            return label.long()
        label = grown


def component_sizes(labels: torch.Tensor) -> torch.Tensor:
    """`components`' labels -> (b, 1, H, W) int64: the pixel count of each pixel's component (0 off the lines)."""
    b = labels.shape[0]
    flat = labels.flatten(1)
    counts = torch.zeros(b, flat.shape[1] + 1, dtype=torch.int64, device=labels.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    counts[:, 0] = 0
    return counts.gather(1, flat).view_as(labels)


def edge_f1(pred: torch.Tensor, target: torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """(b, 1, H, W) bool edge maps -> (b,) F1 with a tolerance of `tolerance` pixels. Two empty
    maps agree (1); one empty map against edges scores 0."""
    k = 2 * tolerance + 1
    near_target = F.max_pool2d(target.float(), k, 1, tolerance) > 0
    near_pred = F.max_pool2d(pred.float(), k, 1, tolerance) > 0
    p_hits, p_all = (pred & near_target).flatten(1).sum(1).float(), pred.flatten(1).sum(1).float()
    t_hits, t_all = (target & near_pred).flatten(1).sum(1).float(), target.flatten(1).sum(1).float()
    precision = torch.where(p_all > 0, p_hits / p_all.clamp(min=1), (t_all == 0).float())
    recall = torch.where(t_all > 0, t_hits / t_all.clamp(min=1), (p_all == 0).float())
    return torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                       torch.zeros_like(precision))
