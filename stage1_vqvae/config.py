"""Typed configs of the three tokenizers. Data-dependent fields (channels, image size, classes)
are filled from the dataset when a model is built; the rest come from presets, files or flags."""

import math
from dataclasses import dataclass


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


QUANTIZERS = ("ema", "l2", "fsq")
# FSQ levels for a codebook of about 2^bits codes, as Mentzer et al. 2023 recommend (table 1).
FSQ_LEVELS = {8: [8, 6, 5], 10: [8, 5, 5, 5], 12: [7, 5, 5, 5, 5], 14: [8, 8, 8, 6, 5], 16: [8, 8, 8, 5, 5, 5]}
PERCEPTUAL = ("none", "ssim", "random", "lpips")


@dataclass
class VQVAEConfig(ConvConfig):
    quantizer: str = "ema"  # ema: learned codebook (EMA); l2: the same on unit vectors; fsq: finite scalar levels
    code_dim: int = 32  # ema / l2 (fsq: len(fsq_levels))
    codebook_size: int = 512  # ema / l2 (fsq: prod(fsq_levels))
    fsq_levels: list[int] | None = None  # fsq: levels per channel, e.g. [8, 6, 5] (K = 240); default: from codebook_size
    commitment: float = 0.25
    ema_decay: float = 0.99
    dead_code_threshold: float = 1.0  # EMA count under which a code is restarted from the batch
    kmeans_iters: int = 10
    # VQGAN-style terms (Esser et al. 2021), each with a weight and a first step:
    perceptual: str = "none"  # none | ssim | random (features of a fixed random network) | lpips (VGG weights on disk)
    perceptual_weight: float = 0.0
    lpips_weights: str | None = None  # lpips: torchvision's vgg16 weights file (default: torch hub's cache)
    adversarial_weight: float = 0.0  # 0: no discriminator
    adversarial_start: int = 0  # the discriminator trains and is used from this step on
    disc_hidden: int = 64
    disc_layers: int = 2  # PatchGAN stride-2 layers: receptive fields of 16 px (2) or 34 px (3)

    RANGES = {**ConvConfig.RANGES, "code_dim": (1, 4096), "codebook_size": (2, 65536), "commitment": (0, 1e3),
              "ema_decay": (0, 1), "dead_code_threshold": (0, 1e9), "kmeans_iters": (0, 1000), "perceptual_weight": (0, 1e3),
              "adversarial_weight": (0, 1e3), "adversarial_start": (0, 2**40), "disc_hidden": (1, 4096), "disc_layers": (1, 8)}

    def validate(self) -> None:
        super().validate()
        if self.fsq_levels is not None and (not 1 <= len(self.fsq_levels) <= 16 or not all(
                isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 65536 for v in self.fsq_levels)):
            raise ValueError("fsq_levels must be 1 to 16 whole numbers, each from 2 to 65,536 (e.g. [8, 6, 5])")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"unknown quantizer '{self.quantizer}' (choose one of {', '.join(QUANTIZERS)})")
        if self.perceptual not in PERCEPTUAL:
            raise ValueError(f"unknown perceptual loss '{self.perceptual}' (choose one of {', '.join(PERCEPTUAL)})")
        if self.quantizer == "fsq":
            if self.fsq_levels is None:
                bits = min(FSQ_LEVELS, key=lambda b: abs(b - math.log2(max(2, self.codebook_size))))
                self.fsq_levels = list(FSQ_LEVELS[bits])
            if not self.fsq_levels or min(self.fsq_levels) < 2:
                raise ValueError("the fsq quantizer needs fsq_levels, each at least 2 (e.g. [8, 6, 5])")
            self.codebook_size = math.prod(self.fsq_levels)
            self.code_dim = len(self.fsq_levels)
        if self.codebook_size > 65536:
            raise ValueError(f"a codebook of {self.codebook_size} codes is more than the 65,536 the export and the prior take")


@dataclass
class VAEConfig(ConvConfig):
    latent_dim: int = 32
    bottleneck_channels: int = 16  # feature map channels flattened into the latent's linear layer
    kl_weight: float = 0.25  # 2 sigma^2 of the Gaussian decoder: loss = MSE + kl_weight * KL / pixels
    kl_warmup_steps: int = 1000  # the KL weight ramps linearly from 0 over these steps

    RANGES = {**ConvConfig.RANGES, "latent_dim": (1, 65536), "bottleneck_channels": (1, 4096), "kl_weight": (0, 1e6),
              "kl_warmup_steps": (0, 2**40)}


@dataclass
class CVAEConfig(VAEConfig):
    num_classes: int = 10
    class_dim: int = 32

    RANGES = {**VAEConfig.RANGES, "num_classes": (1, 100_000), "class_dim": (1, 4096)}
