"""What a run is and what it can do, as small typed records read from its `config.json`: a
tokenizer (discrete or not, class-conditional or not, its code grid and codebook size) and a
prior (its conditions, whether it has an exact likelihood, whether it completes any region
natively), and the check that a prior belongs to a tokenizer.

Callers ask these records (or the loaded models, which carry the same attributes) what a model
can do; only the registries (`TOKENIZERS`, `PRIORS`) map a stored name to a class. Runs written
before these records existed load unchanged: everything here is derived from the stored model
config through the registry class."""

from dataclasses import dataclass, field
from pathlib import Path

from vq.pipeline.checkpoint import read_info
from vq.pipeline.runs import VQError, resolve_stored
from vq.stage1_vqvae import TOKENIZERS
from vq.stage2_prior import PRIORS


def read_run(run_dir: Path, kind: str, registry: dict) -> tuple[dict, type, object]:
    """(config.json as written, the model's registry class, its model config) of a run."""
    info = read_info(run_dir, kind)
    cls = registry.get(info.get("model"))
    if cls is None:
        raise VQError(f"{run_dir}: unknown {kind} model '{info.get('model')}' (known: {', '.join(registry)})")
    try:
        config = cls.config_class(**info["config"])
        config.validate()
    except (TypeError, ValueError, KeyError) as e:
        raise VQError(f"{run_dir}/config.json has an invalid model config: {e}") from None
    return info, cls, config


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
        return cls(
            run_dir=run_dir, model=model_cls.name, fingerprint=info["fingerprint"], class_names=list(info["class_names"]),
            image_size=config.image_size, channels=config.channels, discrete=model_cls.discrete,
            conditional=model_cls.conditional, grid=(config.grid, config.grid) if model_cls.discrete else None,
            codebook_size=config.codebook_size if model_cls.discrete else None, config=info["config"], stored=info,
        )

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
        if self.codebook_size != tokenizer.codebook_size or self.grid != tokenizer.grid:
            (h, w), (th, tw) = self.grid, tokenizer.grid
            raise VQError(f"{self.run_dir} models {h}x{w} codes from {self.codebook_size}, but the tokenizer makes "
                          f"{th}x{tw} codes from {tokenizer.codebook_size}; pass the matching --tokenizer or retrain the prior")
