"""Convolutional building blocks shared by the tokenizers: their common config (`ConvConfig`),
residual blocks, an encoder that halves the resolution `log2(downsample)` times, and its
mirror-image decoder.

Shape legend: b - batch, c - channels, h w - spatial grid.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ConvConfig:
    channels: int = 1
    image_size: int = 28
    hidden: int = 128  # channels at the code grid; halved at each finer resolution (at least 16)
    res_blocks: int = 2  # residual blocks at the code grid
    upper_res_blocks: int = 0  # residual blocks at each finer resolution
    downsample: int = 4  # total stride: 28 px -> 7x7 (4) or 14x14 (2)

    # Each number's range (inclusive): what a config file or a saved run may hold; loading checks
    # them before anything is built (`pipeline.configs.build`), so a crafted config cannot ask for
    # terabytes. `validate` adds the rules between fields.
    RANGES = {"channels": (1, 4), "image_size": (1, 4096), "hidden": (1, 4096), "res_blocks": (0, 64),
              "upper_res_blocks": (0, 64), "downsample": (1, 4096)}

    def validate(self) -> None:
        for name in ("channels", "hidden", "image_size", "downsample"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        d = self.downsample
        if d < 1 or d & (d - 1):
            raise ValueError(f"downsample must be a power of two, got {d}")
        if self.image_size % d:
            raise ValueError(
                f"image size {self.image_size} is not divisible by the downsampling factor {d}"
            )

    @property
    def grid(self) -> int:
        return self.image_size // self.downsample



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


# The sizes the convolutional tokenizers share in their presets (`presets` of each kind): `demo`
# fits a few minutes on 2 CPU cores, `full` one GPU, both sized for 28 px images.
CONV_PRESETS = {"demo": {"hidden": 64, "res_blocks": 2, "downsample": 4},
                "full": {"hidden": 128, "res_blocks": 2, "upper_res_blocks": 1}}
TRAIN_PRESETS = {"demo": {"batch_size": 128, "lr": 2e-3, "warmup_steps": 100, "eval_every": 500},
                 "full": {"steps": 8000, "batch_size": 256, "lr": 1e-3, "warmup_steps": 500, "eval_every": 1000}}


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


def conv_memory(config: ConvConfig) -> tuple[int, str]:
    """(bytes, what sets them): about the working memory of one image through the encoder or the
    decoder (fp32): eight live tensors of each resolution's channels, full resolution included."""
    chs = level_channels(config.hidden, config.downsample)
    floats = 8 * sum(ch * (config.image_size // 2**i) ** 2 for i, ch in enumerate(chs))
    return 4 * floats, f"{config.image_size} px images through layers of up to {config.hidden} channels"
