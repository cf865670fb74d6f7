"""The prior contract: what every prior kind over code maps is and can do, the options it samples
with, and the one registry where a kind's name meets its class.

A kind is a subclass of `Prior` that sets the class attributes below and implements its methods;
`register_prior(Kind)` makes it known to every command, the Python API, saved pipelines and the
studio. The pipeline asks a kind what it can do, never what it is called:

- `conditions` (from its config): what a sample can be conditioned on, {"class"} or
  {"class", "sketch"};
- `exact_likelihood`: it scores codes (`score`, in nats), so completions around known codes can
  be ranked, and its held-out figure is a likelihood;
- `any_mask`: it completes any region natively (else known codes are forced in its order and
  whole draws reranked by `score`);
- `parallel_decoding`: it decides many codes per step;
- `recognises` (from its config): it tells a drawing's class (`recognise`), so a drawing given
  without one is sampled as the class it reads as (`conditions.SketchRecogniser`).

Sampling options travel under one set of names from the command line's flags through the Python
API to the samplers (`SamplingOptions`: guidance, class_guidance, temperature, top_k, top_p, seed);
a kind's own settings (a masked prior's decoding `steps`) ride in `settings` and are read through
its `settings_class`. Its config is a dataclass (`config_class`) with `RANGES` and `validate()`,
saved with the weights; `presets` size it; `sampling_presets` give a new run of a preset its sampling
defaults, saved with it (what a call that leaves top_k or top_p unset draws with); `held_out` names
its held-out figure.

Shape legend: b - batch, n - codes per map, h w - code grid, k - codebook size.
"""

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import torch
from torch import nn


class HeldOut(NamedTuple):
    """A kind's held-out figure, in bits: its key in test metrics, how to say it, and the name of
    its validation figure (the checkpoint kept is the best by it)."""

    name: str
    label: str
    val: str


@dataclass
class PriorOutput:
    logits: torch.Tensor  # (b, n, k)
    loss: torch.Tensor  # the training objective, in nats per code
    metrics: dict[str, torch.Tensor]


@dataclass
class SamplingOptions:
    """How codes are drawn, by the same names everywhere (`vq sample --guidance`, `Pipeline.sample(
    guidance=...)`, `prior.sample(options=...)`)."""

    guidance: float = 2.0  # classifier-free guidance scale: 1 = none
    temperature: float = 1.0  # 0: always the likeliest code
    # The cuts. Unset (None) in a call: the prior's saved default (none unless it has one); a
    # sampler given None or a top_k of 0 draws from every code.
    top_k: int | None = None  # draw among the k likeliest codes only
    top_p: float | None = None  # draw within the smallest set of codes holding this probability
    seed: int = 0
    class_guidance: float | None = None  # a sketch prior's own scale for the class beside a sketch (None: guidance)
    settings: dict = field(default_factory=dict)  # the kind's own (`Prior.settings_class`), e.g. {"steps": 8}


@dataclass
class NoSettings:
    """The sampling settings of a kind that has none of its own."""

    RANGES: ClassVar[dict] = {}


class Prior(nn.Module):
    """The base of every prior kind. Subclasses set the class attributes and implement `forward`,
    `sample` and `held_out_nats` (and `score` with an exact likelihood)."""

    name: ClassVar[str]  # the kind's one name: `vq fit-prior --kind NAME`, config.json, model-card tags
    former_names: ClassVar[tuple[str, ...]] = ()  # names runs of older vq versions stored for this kind
    summary: ClassVar[str] = ""  # one line for --help
    config_class: ClassVar[type]
    settings_class: ClassVar[type] = NoSettings
    presets: ClassVar[dict[str, tuple[dict, dict]]] = {}  # name -> (model config keys, train config keys)
    sampling_presets: ClassVar[dict[str, dict]] = {}  # preset name -> sampling defaults ({"top_k": 32}) its runs keep
    exact_likelihood: ClassVar[bool] = False
    any_mask: ClassVar[bool] = False
    parallel_decoding: ClassVar[bool] = False
    held_out: ClassVar[HeldOut]

    def __init__(self, config):
        super().__init__()
        config.validate()
        self.config = config

    @property
    def conditions(self) -> frozenset[str]:
        return self.config.conditions

    @property
    def recognises(self) -> bool:
        """Whether it tells a drawing's class (`recognise`); a kind with a recogniser says so."""
        return False

    @property
    def code_shape(self) -> tuple[int, int]:
        return (self.config.height, self.config.width)

    @staticmethod
    def shape_fields(code_shape: tuple[int, ...]) -> dict:
        """The config keys a tokenizer's code shape decides: a (h, w) grid; a sequence of n codes
        is modelled as a 1 x n grid."""
        if len(code_shape) == 1:
            return {"height": 1, "width": code_shape[0]}
        if len(code_shape) == 2:
            return {"height": code_shape[0], "width": code_shape[1]}
        raise ValueError(f"a prior models codes of one or two dimensions, not {len(code_shape)}")

    @staticmethod
    def image_memory(config) -> tuple[int, str]:
        """(bytes, what sets them): about the working memory to draw one image's codes."""
        raise NotImplementedError

    @classmethod
    def flops_per_token(cls, config) -> float | None:
        """Training FLOPs per code (forward and backward), for the reported utilisation; None: unknown."""
        return None

    def settings(self, options: SamplingOptions):
        """The kind's own sampling settings from the options (checked by the caller)."""
        return self.settings_class(**options.settings)

    # --- the interface ------------------------------------------------------------------------

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None, sketch: torch.Tensor | None = None,
                step: int = 0) -> PriorOutput:
        raise NotImplementedError

    def sample(self, labels: torch.Tensor | None, *, options: SamplingOptions, generator: torch.Generator | None = None,
               known: torch.Tensor | None = None, known_mask: torch.Tensor | None = None,
               sketch: torch.Tensor | None = None) -> torch.Tensor:
        """(b,) class indices (-1: none) -> (b, h, w) codes in [0, k); `known` codes are kept where
        `known_mask` is True; `sketch` (b, c, S, S) for a sketch prior."""
        raise NotImplementedError

    def score(self, codes: torch.Tensor, labels: torch.Tensor | None, mask: torch.Tensor | None = None,
              sketch: torch.Tensor | None = None) -> torch.Tensor:
        """(b,) log-likelihood in nats of the codes over `mask`'s positions (exact_likelihood only)."""
        raise NotImplementedError(f"a {self.name} prior has no exact likelihood")

    def held_out_nats(self, codes: torch.Tensor, labels: torch.Tensor | None, sketch: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """(b,) the held-out figure of each code map, in nats per code (`held_out` says what it is)."""
        raise NotImplementedError


PRIORS: dict[str, type[Prior]] = {}


def register_prior(kind: type[Prior]) -> type[Prior]:
    """Make a prior kind known to every command, the API, saved pipelines and the studio. Its
    name must be new."""
    if not (isinstance(kind, type) and issubclass(kind, Prior)) or prior_kind(getattr(kind, "name", "")) not in (None, kind):
        raise ValueError(f"cannot register {kind!r}: it is no Prior subclass, or its name is taken")
    PRIORS[kind.name] = kind
    return kind


def prior_kind(name: str) -> type[Prior] | None:
    """The kind a name (or a name an older vq stored) stands for, or None."""
    return PRIORS.get(name) or next((k for k in PRIORS.values() if name in k.former_names), None)
