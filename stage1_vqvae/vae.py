"""The VAE tokenizer: Kingma & Welling 2014, "Auto-Encoding Variational Bayes", with KL warm-up
(Bowman et al. 2016, "Generating Sentences from a Continuous Space"). A Gaussian latent vector
that samples itself (z ~ N(0, I) -> decoder), so it needs no prior.

Images are (b, c, H, W) in [-1, 1]; labels (b,) int64.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vq.stage1_vqvae.base import HeldOut, Tokenizer, TokenizerOutput
from vq.stage1_vqvae.modules import CONV_PRESETS, TRAIN_PRESETS, ConvConfig, Decoder, Encoder, conv_memory

@dataclass
class VAEConfig(ConvConfig):
    latent_dim: int = 32
    bottleneck_channels: int = 16  # feature map channels flattened into the latent's linear layer
    kl_weight: float = 0.25  # 2 sigma^2 of the Gaussian decoder: loss = MSE + kl_weight * KL / pixels
    kl_warmup_steps: int = 1000  # the KL weight ramps linearly from 0 over these steps

    RANGES = {**ConvConfig.RANGES, "latent_dim": (1, 65536), "bottleneck_channels": (1, 4096), "kl_weight": (0, 1e6),
              "kl_warmup_steps": (0, 2**40)}

# As the VQ-VAE's presets: `demo` for a laptop CPU, `full` for one GPU, sized for 28 px images.
PRESETS = {
    "demo": ({**CONV_PRESETS["demo"], "latent_dim": 32, "kl_warmup_steps": 500}, {**TRAIN_PRESETS["demo"], "steps": 1500}),
    "full": ({**CONV_PRESETS["full"], "downsample": 4, "latent_dim": 64, "kl_warmup_steps": 2000}, TRAIN_PRESETS["full"]),
}


class VAE(Tokenizer):
    """Gaussian latent vector z of `latent_dim`; samples decode z ~ N(0, I)."""

    name = "vae"
    summary = "a VAE: a continuous latent that samples itself from N(0, I)"
    config_class = VAEConfig
    presets = PRESETS
    discrete = False
    conditional = False
    held_out = HeldOut("mse", "test MSE")
    image_memory = staticmethod(conv_memory)

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        c = config
        cond = getattr(c, "class_dim", 0)
        feat = c.bottleneck_channels * c.grid * c.grid
        self.encoder = Encoder(c.channels, c.bottleneck_channels, c.hidden, c.downsample, c.res_blocks, c.upper_res_blocks)
        self.to_posterior = nn.Linear(feat + cond, 2 * c.latent_dim)
        self.from_latent = nn.Linear(c.latent_dim + cond, feat)
        self.decoder = Decoder(c.bottleneck_channels, c.channels, c.hidden, c.downsample, c.res_blocks, c.upper_res_blocks)

    def _condition(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return h

    def encode(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(images).flatten(1)
        mu, logvar = self.to_posterior(self._condition(h, labels)).chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        h = self.from_latent(self._condition(z, labels))
        return self.decoder(h.view(-1, c.bottleneck_channels, c.grid, c.grid))

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decodes the posterior mean: the deterministic reconstruction."""
        return self.decode(self.encode(images, labels)[0], labels)

    def kl_weight(self, step: int) -> float:
        warm = self.config.kl_warmup_steps
        return self.config.kl_weight * (min(1.0, step / warm) if warm > 0 else 1.0)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, step: int = 0) -> TokenizerOutput:
        mu, logvar = self.encode(images, labels)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterisation
        recon = self.decode(z, labels)
        rec = F.mse_loss(recon.float(), images.float())
        # KL(q(z|x) || N(0, I)) per image. With a Gaussian decoder of variance sigma^2,
        # MSE + 2 sigma^2 KL / (pixels) is the negative ELBO per pixel times 2 sigma^2, so
        # kl_weight plays the part of 2 sigma^2 and does not depend on the image size.
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).float().sum(1).mean()
        loss = rec + self.kl_weight(step) * kl / images[0].numel()
        return TokenizerOutput(recon, loss, {"rec": rec.detach(), "kl": kl.detach()})

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        device = self.from_latent.weight.device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        return self.decode(z, labels)
