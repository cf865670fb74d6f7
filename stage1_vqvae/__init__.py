"""Stage 1: image tokenizers (VQ-VAE, VAE, class-conditional VAE)."""

from vq.stage1_vqvae.config import CVAEConfig, VAEConfig, VQVAEConfig
from vq.stage1_vqvae.models import CVAE, VAE, VQVAE, TokenizerOutput
from vq.stage1_vqvae.quantizer import QuantizerOutput, VectorQuantizer

# The one place a tokenizer name becomes a class; `vq fit-tokenizer --model NAME` looks here.
TOKENIZERS = {"vqvae": VQVAE, "vae": VAE, "cvae": CVAE}

__all__ = [
    "CVAE", "CVAEConfig", "QuantizerOutput", "TOKENIZERS", "TokenizerOutput", "VAE", "VAEConfig",
    "VQVAE", "VQVAEConfig", "VectorQuantizer",
]
