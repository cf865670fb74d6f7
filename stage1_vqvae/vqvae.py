"""The VQ-VAE tokenizer: van den Oord et al. 2017, "Neural Discrete Representation Learning",
with VQGAN's optional terms (Esser et al. 2021): a perceptual loss and a PatchGAN discriminator.
Images become (b, h, w) maps of codes for a prior; three quantizers make them (`quantizer.py`).

Images are (b, c, H, W) in [-1, 1]; labels (b,) int64.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vq.stage1_vqvae.base import Tokenizer, TokenizerOutput
from vq.stage1_vqvae.losses import PatchDiscriminator, adaptive_weight, hinge_d_loss, perceptual_module, ssim_loss
from vq.stage1_vqvae.modules import CONV_PRESETS, TRAIN_PRESETS, ConvConfig, Decoder, Encoder, conv_memory
from vq.stage1_vqvae.quantizer import FSQ, QuantizerOutput, VectorQuantizer

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

# The image size always comes from the data; a preset fixes the downsampling: demo turns 28 px
# into 7x7 codes, full into 14x14. Each gives model-config and train-config keys; a config file
# and flags override them.
PRESETS = {
    # demo: batch 64 x 3000 steps, about 1.5x the old batch 128 x 1000's time, paid for by the
    # prior's savings (README, "Demo quality"): this small tokenizer learns more from more, smaller
    # steps, and more at lr 4e-3 than 2e-3 (validation reconstruction distance 20.6 against 25.6).
    "demo": ({**CONV_PRESETS["demo"], "code_dim": 16, "codebook_size": 256},
             {**TRAIN_PRESETS["demo"], "steps": 3000, "batch_size": 64, "lr": 4e-3, "eval_every": 1500}),
    "full": ({**CONV_PRESETS["full"], "downsample": 2, "code_dim": 32, "codebook_size": 1024}, TRAIN_PRESETS["full"]),
}


class VQVAE(Tokenizer):
    name = "vqvae"
    summary = "a VQ-VAE: discrete codes (EMA, l2 or FSQ quantizer) for a prior"
    config_class = VQVAEConfig
    presets = PRESETS
    discrete = True
    conditional = False

    def __init__(self, config: VQVAEConfig):
        super().__init__(config)
        c = config
        self.encoder = Encoder(c.channels, c.code_dim, c.hidden, c.downsample, c.res_blocks, c.upper_res_blocks)
        self.quantizer = FSQ(c.fsq_levels) if c.quantizer == "fsq" else VectorQuantizer(
            c.codebook_size, c.code_dim, decay=c.ema_decay, commitment=c.commitment,
            dead_code_threshold=c.dead_code_threshold, kmeans_iters=c.kmeans_iters, normalize=c.quantizer == "l2",
        )
        self.decoder = Decoder(c.code_dim, c.channels, c.hidden, c.downsample, c.res_blocks, c.upper_res_blocks)
        self.discriminator = PatchDiscriminator(c.channels, c.disc_hidden, c.disc_layers) if c.adversarial_weight > 0 else None
        self._perceptual = None  # a fixed network, kept out of the state dict: built on first use

    @classmethod
    def codes_of(cls, config: VQVAEConfig) -> tuple[tuple[int, int], int]:
        return (config.grid, config.grid), config.codebook_size

    image_memory = staticmethod(conv_memory)

    def optimizer_parts(self) -> dict:
        """The autoencoder and, when there is one, its discriminator, each with its own optimizer
        (the discriminator with VQGAN's betas)."""
        disc = set(map(id, self.discriminator.parameters())) if self.discriminator is not None else set()
        parts = {"autoencoder": ([p for p in self.parameters() if id(p) not in disc], (0.9, 0.99))}
        if self.discriminator is not None:
            parts["discriminator"] = (list(self.discriminator.parameters()), (0.5, 0.9))
        return parts

    def perceptual_loss(self, recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.perceptual == "ssim":
            return ssim_loss(recon, images)
        if self._perceptual is None:
            try:
                self._perceptual = [perceptual_module(c.perceptual, c.channels, c.lpips_weights)]
            except FileNotFoundError as e:
                raise ValueError(str(e)) from None
        net = self._perceptual[0].to(images.device)
        return net(recon, images)

    def quantize(self, images: torch.Tensor) -> QuantizerOutput:
        return self.quantizer(self.encoder(images))

    @torch.no_grad()
    def encode_indices(self, images: torch.Tensor) -> torch.Tensor:
        """(b, c, H, W) -> (b, h, w) int64 code maps."""
        return self.quantize(images).indices

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(codes)

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(b, h, w) int64 -> (b, c, H, W) images."""
        return self.decode(self.quantizer.indices_to_codes(indices))

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.quantize(images).quantized)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, step: int = 0) -> TokenizerOutput:
        c = self.config
        q = self.quantize(images)
        recon = self.decode(q.quantized)
        rec = F.mse_loss(recon.float(), images.float())
        metrics = {"rec": rec, "commit": q.loss, "perplexity": q.perplexity, "usage": q.usage}
        if c.perceptual != "none" and c.perceptual_weight > 0:
            metrics["perceptual"] = self.perceptual_loss(recon, images)
            rec = rec + c.perceptual_weight * metrics["perceptual"]
        loss = rec + q.loss
        if self.discriminator is not None:
            loss = loss + self.adversarial_terms(images, recon, rec, step, metrics)
        return TokenizerOutput(recon, loss, {k: v.detach() for k, v in metrics.items()})

    def adversarial_terms(self, images, recon, rec, step: int, metrics: dict) -> torch.Tensor:
        """Both players' losses, summed so one backward pass serves both optimizers without
        crossing over: the generator's term sees the discriminator through detached weights (its
        gradient reaches only the autoencoder), and the discriminator's sees a detached
        reconstruction (its gradient reaches only the discriminator). Off (x 0) before
        `adversarial_start`, so the graph and DDP's buckets are the same at every step."""
        on = float(step >= self.config.adversarial_start)
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        g_adv = -torch.func.functional_call(self.discriminator, frozen, (recon,)).float().mean()
        weight = torch.zeros((), device=images.device)
        if on and torch.is_grad_enabled():
            weight = adaptive_weight(rec, g_adv, self.decoder.net[-1].weight)
        d_loss = hinge_d_loss(self.discriminator(images).float(), self.discriminator(recon.detach()).float())
        metrics.update(g_adv=g_adv, d_loss=d_loss, adv_weight=weight)
        return on * (self.config.adversarial_weight * weight * g_adv + d_loss)
