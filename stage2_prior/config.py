"""Config of the code prior. The code-map geometry and class count come from the exported codes."""

from dataclasses import dataclass


@dataclass
class PriorConfig:
    codebook_size: int = 512
    height: int = 7
    width: int = 7
    num_classes: int = 10
    dim: int = 256
    depth: int = 4
    heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.1  # attention, feed-forward and embedding dropout
    class_dropout: float = 0.1  # share of training rows whose class is replaced by the null class

    def validate(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if not 0 <= self.class_dropout < 1:
            raise ValueError("class_dropout must lie in [0, 1)")
        for name in ("codebook_size", "height", "width", "num_classes", "dim", "depth", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")

    @property
    def seq_len(self) -> int:
        return self.height * self.width
