"""Stage 1: image tokenizers (VQ-VAE, VAE, class-conditional VAE) behind one contract
(`base.Tokenizer`), each kind in a file of its own. The registry `TOKENIZERS` is the only place a
kind's name meets its class; a new kind is its file plus `register_tokenizer(Kind)`.

Imports: torch, einops and this package only (never stage 2, the pipeline or the command line)."""

from vq.stage1_vqvae.base import TOKENIZERS, HeldOut, Tokenizer, TokenizerOutput, register_tokenizer, tokenizer_kind
from vq.stage1_vqvae.cvae import CVAE, CVAEConfig
from vq.stage1_vqvae.modules import ConvConfig
from vq.stage1_vqvae.quantizer import FSQ, QuantizerOutput, VectorQuantizer
from vq.stage1_vqvae.vae import VAE, VAEConfig
from vq.stage1_vqvae.vqvae import VQVAE, VQVAEConfig

# The kinds vq ships, in the order commands list them (the first is the default).
for _kind in (VQVAE, VAE, CVAE):
    register_tokenizer(_kind)

__all__ = [
    "CVAE", "CVAEConfig", "ConvConfig", "FSQ", "HeldOut", "QuantizerOutput", "TOKENIZERS", "Tokenizer", "TokenizerOutput",
    "VAE", "VAEConfig", "VQVAE", "VQVAEConfig", "VectorQuantizer", "register_tokenizer", "tokenizer_kind",
]
