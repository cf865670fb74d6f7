"""The kinds of tokenizer and prior the pipeline knows, as the stages' registries hold them
(`vq.stage1_vqvae.TOKENIZERS`, `vq.stage2_prior.PRIORS`): a name (or a name an older vq stored)
to its class with a one-line refusal, and the kinds other packages add.

A package adds kinds by registering them (`register_tokenizer(Kind)`, `register_prior(Kind)`)
when it is imported, or in a function; vq loads such packages before it looks a kind up when they
declare an entry point in the group `vq.kinds` (`module` or `module:function`), or when
`VQ_PLUGINS` names them the same way (comma-separated).
A stored kind and the kind asked for are compared as classes, never as strings."""

import importlib
import os
from importlib.metadata import entry_points

from vq.pipeline.errors import VQError
from vq.stage1_vqvae import TOKENIZERS, Tokenizer, tokenizer_kind
from vq.stage2_prior import PRIORS, Prior, prior_kind

_loaded: list[str] = []


def load_plugins() -> None:
    """Import the packages that add kinds (entry points `vq.kinds`, and VQ_PLUGINS: comma-separated
    `module` or `module:function` names, the function called once imported), once each."""
    names = [ep.value for ep in entry_points(group="vq.kinds")]
    names += [m.strip() for m in os.environ.get("VQ_PLUGINS", "").split(",") if m.strip()]
    for name in names:
        if name in _loaded:
            continue
        module, _, function = name.partition(":")
        try:
            loaded = importlib.import_module(module)
            if function:
                getattr(loaded, function)()
        except (ImportError, AttributeError) as e:
            raise VQError(f"cannot load {name}, which adds vq kinds (VQ_PLUGINS or an entry point vq.kinds): {e}") from None
        _loaded.append(name)


def kind_class(stage: str, name: str) -> type:
    """The class of a kind of this stage ("tokenizer" or "prior") by its name, or a name an older vq
    stored, the packages that add kinds loaded first; else one line naming the known kinds."""
    load_plugins()
    registry, find = (TOKENIZERS, tokenizer_kind) if stage == "tokenizer" else (PRIORS, prior_kind)
    kind = find(str(name))
    if kind is None:
        raise VQError(f"unknown {stage} kind '{str(name)[:40]}' (known: {', '.join(registry)})")
    return kind


def tokenizer_class(name: str) -> type[Tokenizer]:
    return kind_class("tokenizer", name)


def prior_class(name: str) -> type[Prior]:
    return kind_class("prior", name)


def described_kinds() -> dict[str, list[tuple[str, str, str]]]:
    """Each registered kind as (name, summary, what it can do), tokenizers then priors (`vq kinds`)."""
    load_plugins()
    tokenizers = [(k.name, k.summary, ", ".join(c for c, on in (("discrete codes", k.discrete), ("class input", k.conditional),
                                                                  ("samples itself", not k.discrete)) if on))
                  for k in TOKENIZERS.values()]
    priors = [(k.name, k.summary, ", ".join(c for c, on in (("exact likelihood", k.exact_likelihood),
                                                            ("any-mask completion", k.any_mask),
                                                            ("parallel decoding", k.parallel_decoding)) if on))
              for k in PRIORS.values()]
    return {"tokenizer kinds (vq fit-tokenizer --model)": tokenizers, "prior kinds (vq fit-prior --kind)": priors}
