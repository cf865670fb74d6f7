"""The three tokenizers. Each `forward(images, labels, step)` returns a `TokenizerOutput` whose
`loss` is the weighted total and whose `metrics` are detached scalars with stable names.

- VQVAE: van den Oord et al. 2017, "Neural Discrete Representation Learning".
- VAE: Kingma & Welling 2014, "Auto-Encoding Variational Bayes", with KL warm-up
  (Bowman et al. 2016, "Generating Sentences from a Continuous Space").
- CVAE: Sohn et al. 2015, "Learning Structured Output Representation using Deep Conditional
  Generative Models": the class embedding enters both the encoder and the decoder.

Images are (b, c, H, W) in [-1, 1]; labels (b,) int64.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vq.stage1_vqvae.config import CVAEConfig, VAEConfig, VQVAEConfig
from vq.stage1_vqvae.modules import Decoder, Encoder, activation_bytes
from vq.stage1_vqvae.losses import PatchDiscriminator, adaptive_weight, hinge_d_loss, perceptual_module, ssim_loss
from vq.stage1_vqvae.quantizer import FSQ, QuantizerOutput, VectorQuantizer


@dataclass
class TokenizerOutput:
    recon: torch.Tensor
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


class VQVAE(nn.Module):
    name = "vqvae"
    config_class = VQVAEConfig
    # What it can do, read by the pipeline instead of its name: discrete codes for a prior; no class input.
    discrete = True
    conditional = False

    def __init__(self, config: VQVAEConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.encoder = Encoder(c.channels, c.code_dim, c.hidden, c.downsample, c.res_blocks, c.upper_res_blocks)
        self.quantizer = FSQ(c.fsq_levels) if c.quantizer == "fsq" else VectorQuantizer(
            c.codebook_size, c.code_dim, decay=c.ema_decay, commitment=c.commitment,
            dead_code_threshold=c.dead_code_threshold, kmeans_iters=c.kmeans_iters, normalize=c.quantizer == "l2",
        )
        self.decoder = Decoder(c.code_dim, c.channels, c.hidden, c.downsample, c.res_blocks, c.upper_res_blocks)
        self.discriminator = PatchDiscriminator(c.channels, c.disc_hidden, c.disc_layers) if c.adversarial_weight > 0 else None
        self._perceptual = None  # a fixed network, kept out of the state dict: built on first use

    @property
    def grid_shape(self) -> tuple[int, int]:
        return (self.config.grid, self.config.grid)

    @staticmethod
    def image_memory(config) -> tuple[int, str]:
        """(bytes, what sets them) of the working memory to encode or decode one image."""
        return activation_bytes(config), f"{config.image_size} px images through layers of up to {config.hidden} channels"

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


class VAE(nn.Module):
    """Gaussian latent vector z of `latent_dim`; samples decode z ~ N(0, I)."""

    name = "vae"
    config_class = VAEConfig
    # A continuous latent with its own prior (N(0, I)): it samples without a stage-2 prior.
    discrete = False
    conditional = False

    def __init__(self, config: VAEConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        cond = getattr(c, "class_dim", 0)
        feat = c.bottleneck_channels * c.grid * c.grid
        self.encoder = Encoder(c.channels, c.bottleneck_channels, c.hidden, c.downsample, c.res_blocks, c.upper_res_blocks)
        self.to_posterior = nn.Linear(feat + cond, 2 * c.latent_dim)
        self.from_latent = nn.Linear(c.latent_dim + cond, feat)
        self.decoder = Decoder(c.bottleneck_channels, c.channels, c.hidden, c.downsample, c.res_blocks, c.upper_res_blocks)

    image_memory = staticmethod(VQVAE.image_memory)

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


class CVAE(VAE):
    name = "cvae"
    config_class = CVAEConfig
    conditional = True

    def __init__(self, config: CVAEConfig):
        super().__init__(config)
        self.class_embedding = nn.Embedding(config.num_classes, config.class_dim)

    def _condition(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError("the conditional VAE needs class labels")
        return torch.cat([h, self.class_embedding(labels)], dim=1)
