"""The tokenizer contract: what every tokenizer kind is and can do, and the one registry where a
kind's name meets its class.

A kind is a subclass of `Tokenizer` that sets the class attributes below and implements the
methods its capabilities call for; `register_tokenizer(Kind)` makes it known to every command,
the Python API, saved pipelines and the studio. The pipeline asks a kind what it can do (its
capabilities), never what it is called:

- `discrete`: it turns images into codes for a prior (`encode_indices` / `decode_indices`, a
  code shape of any rank and a codebook size); else it is a continuous latent that samples itself
  (`sample`).
- `conditional`: it takes a class itself (a conditional VAE), so it samples a given class
  without a prior.

Its config is a dataclass (`config_class`) with `RANGES` (each number's bounds, checked before a
saved config builds anything) and `validate()` (the rules between fields); it is saved with the
weights. `presets` size it for the demo (a laptop CPU) and for one GPU; `held_out` names the
figure its evaluation leads with; `image_memory` estimates the working memory of one image, which
loading checks and sampling batches are sized by.

Images are (b, c, H, W) in [-1, 1]; labels (b,) int64; codes (b, *code_shape) int64.
"""

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class HeldOut(NamedTuple):
    """The held-out figure a kind is judged by: its key among the test metrics, and how to say it."""

    name: str
    label: str


@dataclass
class TokenizerOutput:
    """What `forward` returns: the reconstruction, the weighted total loss, and detached scalars
    with stable names (`rec`, `kl`, `commit`, `perplexity`, `usage`, ...)."""

    recon: torch.Tensor
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


class Tokenizer(nn.Module):
    """The base of every tokenizer kind. Subclasses set the class attributes and implement
    `forward`, `reconstruct`, and `encode_indices` / `decode_indices` (discrete) or `sample`
    (continuous)."""

    name: ClassVar[str]  # the kind's one name: `vq fit-tokenizer --model NAME`, config.json, model-card tags
    former_names: ClassVar[tuple[str, ...]] = ()  # names runs of older vq versions stored for this kind
    summary: ClassVar[str] = ""  # one line for --help
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, tuple[dict, dict]]] = {}  # name -> (model config keys, train config keys)
    discrete: ClassVar[bool] = True
    conditional: ClassVar[bool] = False
    held_out: ClassVar[HeldOut] = HeldOut("psnr", "test PSNR, dB")

    def __init__(self, config):
        super().__init__()
        config.validate()
        self.config = config

    # --- what it can do, from a config alone (a saved run is described before it is built) ---

    @classmethod
    def codes_of(cls, config) -> tuple[tuple[int, ...], int] | None:
        """(code shape, codebook size) of a discrete tokenizer with this config; None for a
        continuous latent."""
        return None

    @staticmethod
    def image_memory(config) -> tuple[int, str]:
        """(bytes, what sets them): about the working memory to encode or decode one image."""
        raise NotImplementedError

    @property
    def code_shape(self) -> tuple[int, ...] | None:
        codes = self.codes_of(self.config)
        return codes[0] if codes else None

    @property
    def codebook_size(self) -> int | None:
        codes = self.codes_of(self.config)
        return codes[1] if codes else None

    def known_codes(self, pixel_mask: torch.Tensor) -> torch.Tensor:
        """(H, W) bool kept pixels -> (*code_shape) bool, the codes they determine: a code is known
        when at least half of its cell of pixels is kept. This maps a 2-D code grid evenly over the
        image; a kind whose codes are laid out otherwise says its own."""
        if len(self.code_shape) != 2:
            raise NotImplementedError(f"a {self.name}'s codes are no grid over the image: it says which pixels each covers")
        return F.adaptive_avg_pool2d(pixel_mask[None, None].float(), self.code_shape)[0, 0] >= 0.5

    def known_pixels(self, known: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(*code_shape) bool known codes -> (H, W) bool: the pixels of their cells (what a
        completion shows as given)."""
        return F.interpolate(known[None, None].float(), size=size, mode="nearest")[0, 0] > 0

    # --- the interface ------------------------------------------------------------------------

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, step: int = 0) -> TokenizerOutput:
        raise NotImplementedError

    def reconstruct(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def encode_indices(self, images: torch.Tensor) -> torch.Tensor:
        """(b, c, H, W) -> (b, *code_shape) int64 codes (discrete kinds)."""
        raise NotImplementedError(f"a {self.name} has no discrete codes")

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(b, *code_shape) int64 -> (b, c, H, W) images (discrete kinds)."""
        raise NotImplementedError(f"a {self.name} has no discrete codes")

    def sample(self, n: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images from its own latent prior (continuous kinds)."""
        raise NotImplementedError(f"a {self.name} samples through a prior over its codes")


TOKENIZERS: dict[str, type[Tokenizer]] = {}


def register_tokenizer(kind: type[Tokenizer]) -> type[Tokenizer]:
    """Make a tokenizer kind known to every command, the API, saved pipelines and the studio
    (usable as a class decorator). Its name must be new."""
    if not (isinstance(kind, type) and issubclass(kind, Tokenizer)) or tokenizer_kind(getattr(kind, "name", "")) not in (None, kind):
        raise ValueError(f"cannot register {kind!r}: it is no Tokenizer subclass, or its name is taken")
    TOKENIZERS[kind.name] = kind
    return kind


def tokenizer_kind(name: str) -> type[Tokenizer] | None:
    """The kind a name (or a name an older vq stored) stands for, or None."""
    return TOKENIZERS.get(name) or next((k for k in TOKENIZERS.values() if name in k.former_names), None)
