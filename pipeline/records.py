"""What a run is and what it can do, as small typed records read from its `config.json`: a
tokenizer (discrete or not, class-conditional or not, its code grid and codebook size) and a
prior (its conditions, whether it has an exact likelihood, whether it completes any region
natively), and the check that a prior belongs to a tokenizer.

Callers ask these records (or the loaded models, which carry the same attributes) what a model
can do; only the registries (`TOKENIZERS`, `PRIORS`) map a stored name to a class. Runs written
before these records existed load unchanged: everything here is derived from the stored model
config through the registry class."""

import math
from dataclasses import dataclass, field
from pathlib import Path

from vq.pipeline.checkpoint import model_class, model_config, read_info
from vq.pipeline.runs import VQError, resolve_stored
from vq.stage1_vqvae import TOKENIZERS
from vq.stage2_prior import PRIORS


def read_run(run_dir: Path, kind: str, registry: dict) -> tuple[dict, type, object]:
    """(config.json as written, the model's registry class, its model config) of a run, each
    checked (`checkpoint.check_stored`, `model_config`)."""
    info = read_info(run_dir, kind)
    cls = model_class(info, run_dir, kind, registry)
    return info, cls, model_config(info, run_dir, cls)


@dataclass(frozen=True)
class TokenizerInfo:
    run_dir: Path
    model: str  # the registry name, for display and for matching a resumed run's --model
    fingerprint: str
    class_names: list[str]
    image_size: int
    channels: int
    discrete: bool  # codes for a prior (a VQ-VAE); else a latent that samples itself (a VAE)
    conditional: bool  # takes a class (a conditional VAE)
    grid: tuple[int, int] | None  # the code grid (h, w) of a discrete tokenizer
    codebook_size: int | None
    config: dict = field(repr=False)  # the model config as stored
    stored: dict = field(repr=False)  # config.json as written: dataset, data options, metrics, ...

    @classmethod
    def read(cls, run_dir: Path | str) -> "TokenizerInfo":
        run_dir = Path(run_dir)
        info, model_cls, config = read_run(run_dir, "tokenizer", TOKENIZERS)
        names = info.get("class_names", [])
        if not names or (model_cls.conditional and len(names) != config.num_classes):
            raise VQError(f"{run_dir}/config.json names {len(names)} classes"
                          + (f" for a model of {config.num_classes}" if names else "; a tokenizer knows at least one"))
        return cls(
            run_dir=run_dir, model=model_cls.name, fingerprint=info.get("fingerprint") or "", class_names=list(info.get("class_names", [])),
            image_size=config.image_size, channels=config.channels, discrete=model_cls.discrete,
            conditional=model_cls.conditional, grid=(config.grid, config.grid) if model_cls.discrete else None,
            codebook_size=config.codebook_size if model_cls.discrete else None, config=info["config"], stored=info,
        )

    @property
    def metrics(self) -> dict[str, float]:
        """The test figures its training ended with."""
        return dict(self.stored.get("metrics", {}))

    @property
    def samples_by_class(self) -> bool:
        """Whether it can draw a given class: through a (class-conditional) prior over its codes,
        or through its own class input."""
        return self.discrete or self.conditional


@dataclass(frozen=True)
class PriorInfo:
    run_dir: Path
    model: str
    fingerprint: str
    class_names: list[str]
    tokenizer_fingerprint: str | None
    conditions: frozenset[str]  # what a sample can be conditioned on: {"class"}, {"class", "sketch"}
    exact_likelihood: bool  # can score codes (NLL in bits, ranking of completions)
    any_mask: bool  # completes any region natively (else forced known codes + reranked draws)
    grid: tuple[int, int]
    codebook_size: int
    codes_dir: Path | None  # the exported codes it was trained on, as recorded (resolved)
    config: dict = field(repr=False)
    stored: dict = field(repr=False)

    @classmethod
    def read(cls, run_dir: Path | str) -> "PriorInfo":
        run_dir = Path(run_dir)
        info, model_cls, config = read_run(run_dir, "prior", PRIORS)
        check_sketch_record(info.get("sketch"), run_dir)
        return cls(
            run_dir=run_dir, model=model_cls.name, fingerprint=info.get("fingerprint", ""),
            class_names=list(info.get("class_names", [])), tokenizer_fingerprint=info.get("tokenizer_fingerprint"),
            conditions=config.conditions, exact_likelihood=model_cls.exact_likelihood, any_mask=model_cls.any_mask,
            grid=(config.height, config.width), codebook_size=config.codebook_size,
            codes_dir=resolve_stored(info["codes_dir"], run_dir) if info.get("codes_dir") else None,
            config=info["config"], stored=info,
        )

    def check_tokenizer(self, tokenizer: TokenizerInfo) -> None:
        """Refuse a prior trained on another tokenizer's codes, or on codes of another shape."""
        if not tokenizer.discrete:
            raise VQError(f"{tokenizer.run_dir} holds a {tokenizer.model}, which has no codes for a prior; "
                          "it samples from its own latent prior: load it without a prior")
        if self.tokenizer_fingerprint != tokenizer.fingerprint:
            raise VQError(f"{self.run_dir} was trained on the codes of another tokenizer "
                          f"({self.tokenizer_fingerprint}, not {tokenizer.fingerprint}); "
                          "pass the matching --tokenizer or retrain the prior")
        if self.config.get("num_classes") != len(tokenizer.class_names):
            raise VQError(f"{self.run_dir} models {self.config.get('num_classes')} classes, but the tokenizer has "
                          f"{len(tokenizer.class_names)}; pass the matching --tokenizer or retrain the prior")
        if self.codebook_size != tokenizer.codebook_size or self.grid != tokenizer.grid:
            (h, w), (th, tw) = self.grid, tokenizer.grid
            raise VQError(f"{self.run_dir} models {h}x{w} codes from {self.codebook_size}, but the tokenizer makes "
                          f"{th}x{tw} codes from {tokenizer.codebook_size}; pass the matching --tokenizer or retrain the prior")


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_sketch_record(sketch: dict | None, run_dir: Path) -> None:
    """A sketch prior's record of its detector and the boxes drawings are framed to, as the export
    writes it: a detector version, the dataset's box (a share of the side, or none) and each
    class's (`sketch.ClassBox`: a side and an aspect range, or none)."""
    if sketch is None:
        return
    boxes = sketch.get("class_boxes", [])
    ok = (isinstance(sketch.get("detector", ""), (str, int)) and (sketch.get("box") is None or is_number(sketch["box"]))
          and isinstance(boxes, list) and all(
              b is None or (isinstance(b, dict) and is_number(b.get("side")) and isinstance(b.get("aspect"), list)
                            and len(b["aspect"]) == 2 and all(is_number(a) for a in b["aspect"])) for b in boxes))
    if not ok:
        raise VQError(f"{run_dir}/config.json: its sketch record is not in the form vq writes")
