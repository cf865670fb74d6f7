"""Convolutional building blocks shared by the tokenizers: residual blocks, an encoder that
halves the resolution `log2(downsample)` times, and its mirror-image decoder.

Shape legend: b - batch, c - channels, h w - spatial grid.
"""

import math

import torch
from torch import nn


def norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, ch), ch)


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.block = nn.Sequential(
            norm(ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
            norm(ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def level_channels(hidden: int, downsample: int) -> list[int]:
    """Channels at each resolution, full resolution first: `hidden` at the code grid, halved at
    each finer resolution (at least 16), so the costly full-resolution layers stay thin."""
    levels = int(math.log2(downsample))
    return [max(16, hidden // 2 ** (levels - i)) for i in range(levels + 1)]


class Encoder(nn.Module):
    """(b, in_ch, H, W) -> (b, out_ch, H / downsample, W / downsample)

    `res_blocks` residual blocks at the code grid, `upper_res_blocks` at each finer resolution."""

    def __init__(self, in_ch: int, out_ch: int, hidden: int, downsample: int, res_blocks: int, upper_res_blocks: int = 0):
        super().__init__()
        chs = level_channels(hidden, downsample)
        layers: list[nn.Module] = [nn.Conv2d(in_ch, chs[0], 3, padding=1)]
        for ch, ch_next in zip(chs[:-1], chs[1:]):
            layers += [ResBlock(ch) for _ in range(upper_res_blocks)]
            layers.append(nn.Conv2d(ch, ch_next, 4, stride=2, padding=1))
        layers += [ResBlock(chs[-1]) for _ in range(res_blocks)]
        layers += [norm(chs[-1]), nn.SiLU(), nn.Conv2d(chs[-1], out_ch, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(b, in_ch, h, w) -> (b, out_ch, h * downsample, w * downsample)"""

    def __init__(self, in_ch: int, out_ch: int, hidden: int, downsample: int, res_blocks: int, upper_res_blocks: int = 0):
        super().__init__()
        chs = level_channels(hidden, downsample)[::-1]
        layers: list[nn.Module] = [nn.Conv2d(in_ch, chs[0], 3, padding=1)]
        layers += [ResBlock(chs[0]) for _ in range(res_blocks)]
        for ch, ch_next in zip(chs[:-1], chs[1:]):
            # Nearest upsampling + conv instead of a transposed conv: no checkerboard artefacts.
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch_next, 3, padding=1)]
            layers += [ResBlock(ch_next) for _ in range(upper_res_blocks)]
        layers += [norm(chs[-1]), nn.SiLU(), nn.Conv2d(chs[-1], out_ch, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def activation_bytes(config) -> int:
    """About the working memory of one image through the encoder or the decoder (fp32): a few live
    tensors of each resolution's channels, full resolution included."""
    chs = level_channels(config.hidden, config.downsample)
    return 4 * 8 * config.channels * sum(ch * (config.image_size // 2**i) ** 2 for i, ch in enumerate(chs))
