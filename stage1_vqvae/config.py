"""Typed configs of the three tokenizers. Data-dependent fields (channels, image size, classes)
are filled from the dataset when a model is built; the rest come from presets, files or flags."""

from dataclasses import dataclass


@dataclass
class ConvConfig:
    channels: int = 1
    image_size: int = 28
    hidden: int = 128  # channels at the code grid; halved at each finer resolution (at least 16)
    res_blocks: int = 2  # residual blocks at the code grid
    upper_res_blocks: int = 0  # residual blocks at each finer resolution
    downsample: int = 4  # total stride: 28 px -> 7x7 (4) or 14x14 (2)

    def validate(self) -> None:
        d = self.downsample
        if d < 1 or d & (d - 1):
            raise ValueError(f"downsample must be a power of two, got {d}")
        if self.image_size % d:
            raise ValueError(
                f"image size {self.image_size} is not divisible by the downsampling factor {d}"
            )
        for name in ("channels", "hidden", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")

    @property
    def grid(self) -> int:
        return self.image_size // self.downsample


@dataclass
class VQVAEConfig(ConvConfig):
    code_dim: int = 32
    codebook_size: int = 512
    commitment: float = 0.25
    ema_decay: float = 0.99
    dead_code_threshold: float = 1.0  # EMA count under which a code is restarted from the batch
    kmeans_iters: int = 10


@dataclass
class VAEConfig(ConvConfig):
    latent_dim: int = 32
    bottleneck_channels: int = 16  # feature map channels flattened into the latent's linear layer
    kl_weight: float = 0.25  # 2 sigma^2 of the Gaussian decoder: loss = MSE + kl_weight * KL / pixels
    kl_warmup_steps: int = 1000  # the KL weight ramps linearly from 0 over these steps


@dataclass
class CVAEConfig(VAEConfig):
    num_classes: int = 10
    class_dim: int = 32
