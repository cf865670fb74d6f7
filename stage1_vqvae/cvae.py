"""The conditional VAE tokenizer: Sohn et al. 2015, "Learning Structured Output Representation
using Deep Conditional Generative Models": the VAE with a class embedding in both the encoder
and the decoder, so it samples a given class without a prior.

Images are (b, c, H, W) in [-1, 1]; labels (b,) int64.
"""

from dataclasses import dataclass

import torch
from torch import nn

from vq.stage1_vqvae.vae import VAE, VAEConfig


@dataclass
class CVAEConfig(VAEConfig):
    num_classes: int = 10
    class_dim: int = 32

    RANGES = {**VAEConfig.RANGES, "num_classes": (1, 100_000), "class_dim": (1, 4096)}


class CVAE(VAE):
    name = "cvae"
    summary = "a conditional VAE: the VAE with the class in its encoder and decoder"
    config_class = CVAEConfig
    conditional = True

    def __init__(self, config: CVAEConfig):
        super().__init__(config)
        self.class_embedding = nn.Embedding(config.num_classes, config.class_dim)

    def _condition(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError("the conditional VAE needs class labels")
        return torch.cat([h, self.class_embedding(labels)], dim=1)
