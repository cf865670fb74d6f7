"""The options a generation call takes, checked: every number a user gives for its type and range
before it is used, with the same rule and message from the command line, the Python API and the
studio; and a prior kind's own sampling settings (`SamplingOptions.settings`) against its
`settings_class`, with its own ranges.

`SamplingOptions` itself is stage 2's (`vq.stage2_prior.SamplingOptions`): one set of names from
the command line's flags (--guidance, --class-guidance, --temperature, --top-k, --top-p, --seed,
and --steps for a masked prior's setting) through the API to the samplers."""

import math
import numbers
import secrets
from dataclasses import fields, replace

from vq.pipeline.configs import build
from vq.pipeline.errors import VQError
from vq.pipeline.records import SamplingDefaults
from vq.stage2_prior import PRIORS, SamplingOptions

# The ranges every number a user gives is checked against, before it is used, with the same rule
# and message from the command line, the Python API and the studio. Beyond them nothing useful
# happens and floating point breaks: guidance of 1e308 mixes logits into inf - inf = NaN, and a
# temperature of 1e-40 divides them into infinities.
MAX_GUIDANCE = 100.0
TEMPERATURE_RANGE = (1e-3, 100.0)  # or 0: greedy
MAX_TOP_K = 2**31 - 1
SEED_RANGE = (0, 2**64 - 1)  # what torch.Generator.manual_seed takes


def shown(value) -> str:
    """A value a user gave, as a refusal quotes it: short (an int of 5,000 digits has no repr)."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def whole(value, name: str, low: int, high: int | None = None) -> int:
    """A whole number a user gave (an int, or a float holding one) within [low, high], else one line."""
    ok = not isinstance(value, bool) and (isinstance(value, numbers.Integral)
                                          or (isinstance(value, float) and math.isfinite(value) and value.is_integer()))
    if ok and low <= int(value) and (high is None or int(value) <= high):
        return int(value)
    bound = f"from {low:,} to {high:,}" if high is not None else f"of at least {low:,}"
    raise VQError(f"{name} must be a whole number {bound}, got {shown(value)}")


def real(value, name: str, low: float, high: float, hint: str = "") -> float:
    """A finite number a user gave within [low, high], else one line."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok and low <= float(value) <= high:
        return float(value)
    raise VQError(f"{name} must be a number from {low:g} to {high:g}{hint}, got {shown(value)}")




def check_numbers(options: SamplingOptions) -> SamplingOptions:
    """The options with every number of a type and in a range (the module's limits), as plain ints
    and floats, else one line naming the value as the API does; the settings as given."""
    low, high = TEMPERATURE_RANGE
    temperature = options.temperature
    if not (temperature == 0 and not isinstance(temperature, bool)):
        temperature = real(temperature, "temperature", low, high, " (or 0: always the likeliest code)")
    top_p = options.top_p
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1:
            raise VQError(f"top_p must lie in (0, 1] (1 = no cut), got {shown(top_p)}")
        top_p = float(top_p)
    if not isinstance(options.settings, dict):
        raise VQError(f"settings must map a prior kind's sampling settings to values, got {shown(options.settings)}")
    return SamplingOptions(
        guidance=real(options.guidance, "guidance", 0, MAX_GUIDANCE, " (1 = no guidance)"), temperature=float(temperature),
        top_k=None if options.top_k is None else whole(options.top_k, "top_k", 0, MAX_TOP_K), top_p=top_p,
        seed=whole(options.seed, "seed", *SEED_RANGE),
        class_guidance=None if options.class_guidance is None else real(options.class_guidance, "class_guidance", 0, MAX_GUIDANCE),
        settings=dict(options.settings))


def with_defaults(options: SamplingOptions, prior) -> SamplingOptions:
    """The cuts a call left unset (None) from the prior's saved defaults (`records.SamplingDefaults`;
    `prior` a PriorRecord or None), and a top_k of 0 as no cut: what the samplers draw with."""
    saved = prior.sampling if prior is not None else SamplingDefaults()
    top_k = saved.top_k if options.top_k is None else (options.top_k or None)
    top_p = saved.top_p if options.top_p is None else options.top_p
    return replace(options, top_k=top_k, top_p=top_p)


def check_options(options: SamplingOptions, prior=None) -> SamplingOptions:
    """`check_numbers`, and the settings checked against the kind of `prior` (a class or a model;
    None: no prior, so no settings)."""
    options = check_numbers(options)
    return replace(options, settings=check_settings(options.settings, prior))


def check_settings(settings: dict, prior) -> dict:
    """A prior kind's own settings, each known to it and in its range; {} for none."""
    if not settings:
        return {}
    kind = prior if isinstance(prior, type) or prior is None else type(prior)
    own = {f.name for f in fields(kind.settings_class)} if kind is not None else set()
    for key in settings:
        if key not in own:
            having = [k.name for k in PRIORS.values() if key in {f.name for f in fields(k.settings_class)}]
            where = f"{' and '.join(having)} priors" if having else "no prior"
            this = f"this {kind.name} prior has {', '.join(sorted(own)) or 'none'}" if kind else "this model has no prior"
            raise VQError(f"{key} is a sampling setting of {where}; {this}")
    config = build(kind.settings_class, {k: v for k, v in settings.items() if v is not None}, where="sampling setting")
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name in settings and settings[f.name] is not None}


def fresh_seed(seed: int | None) -> int:
    """The seed of a call: the one given (checked: a whole number within 64 bits), or a new one
    (which the caller may print to repeat it)."""
    return secrets.randbelow(2**31) if seed is None else whole(seed, "seed", *SEED_RANGE)


DRAWING_CLASS_GUIDANCE = 2.0  # a drawing given with its class: the class guided at this many times the drawing's guidance


def drawing_class_guidance(options: SamplingOptions) -> SamplingOptions:
    """The options for a drawing given with its class: the class's own guidance, unless one is
    set, is `DRAWING_CLASS_GUIDANCE` times the drawing's (none at guidance 1 or below: no guidance
    stays none). People's drawings say less than the detector's edge maps, and the class guided
    at twice the drawing's makes many more samples of the class for as much of them inside the
    drawing (README, "Free-hand drawings"); an exact edge map keeps `guidance` (its edge F1 falls from
    0.89 to 0.87 at 4). It costs a third row per image in the sampler."""
    if options.class_guidance is not None or options.guidance <= 1:
        return options
    return replace(options, class_guidance=DRAWING_CLASS_GUIDANCE * options.guidance)
