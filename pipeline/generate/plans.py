"""Every generation call is first a request: its arguments checked and resolved against the runs'
records (`records`), which needs no model, so the command line refuses a bad input before it loads
anything. `plan_samples` and `plan_completion` make them; `Pipeline.run_samples` and
`run_completion` answer them.

Shape legend: b - images, c - channels, H W - pixels, S - a sketch's side."""

import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vq.pipeline.errors import VQError
from vq.pipeline.generate.inputs import keep_mask, read_drawing, read_image
from vq.pipeline.generate.options import check_options, drawing_class_guidance, whole, with_defaults
from vq.pipeline.records import PriorRecord, TokenizerRecord
from vq.pipeline.sketch.drawings import check_detector
from vq.stage2_prior import SamplingOptions

MAX_IMAGES = 100_000  # images one call may ask for (n per class times the classes); call again for more
MAX_CANDIDATES = 256  # draws per completion ranked by the prior


@dataclass
class SampleRequest:
    groups: list[int]  # one class index per group of n images; -1: no class
    n: int
    options: SamplingOptions
    sketch: torch.Tensor | None = None  # (groups, 1, S, S) bool lines, as the sketch prior reads them for each
    # group (framed to its class's box; beside the drawing flag)
    sketch_note: str | None = None  # how the drawing was read (for the first group)
    # A drawing without a class, for a prior with a recogniser: sampled as the class it reads as
    # (`recognise`); `reread(box)` reads the drawing again framed to a class's box -> (lines, note).
    reread: Callable[[object], tuple[torch.Tensor, str]] | None = None

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([c for c in self.groups for _ in range(self.n)])


@dataclass
class CompletionRequest:
    image: torch.Tensor  # (1, c, H, W) in [-1, 1]
    pixel_mask: torch.Tensor  # (H, W) bool, True = keep
    label: int | None
    n: int
    options: SamplingOptions
    candidates: int
    note: str  # how the image was converted
    paste: bool = True  # the kept pixels as given (`draw.paste_known`), not as the tokenizer redraws them


def records(tokenizer_dir: Path | str, prior_dir: Path | str | None) -> tuple[TokenizerRecord, PriorRecord | None]:
    """The runs' records, checked to belong together, before any weights are read (a VAE takes
    no prior; a discrete tokenizer needs one)."""
    tok = TokenizerRecord.read(tokenizer_dir)
    if not tok.discrete:
        return tok, None
    if prior_dir is None:
        raise VQError(f"{tokenizer_dir} holds a {tok.kind.name}, which samples through a prior over its codes; "
                      "pass the prior's run directory too")
    prior = PriorRecord.read(prior_dir)
    prior.check_tokenizer(tok)
    return tok, prior


def resolve_class(value: str, class_names: list[str]) -> int:
    """A class by index or name, case-insensitively, ignoring punctuation ('t-shirt' finds 'T-shirt/top')."""
    if value.isdigit() and int(value) < len(class_names):
        return int(value)

    def norm(s: str) -> str:
        return re.sub(r"[^a-z0-9]", "", s.lower())

    exact = [i for i, n in enumerate(class_names) if n.lower() == value.lower()]
    loose = [i for i, n in enumerate(class_names) if norm(n) == norm(value) or norm(n.split("/")[0]) == norm(value)]
    found = exact or loose
    if len(found) == 1:
        return found[0]
    raise VQError(f"unknown class '{value}'; valid classes: {', '.join(class_names)}")


def class_index(value, class_names: list[str]) -> int:
    """A class given by name (as `vq sample --class` reads names) or by index."""
    if isinstance(value, str):
        return resolve_class(value, class_names)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) and not (isinstance(value, torch.Tensor) and value.numel() == 1):
        raise VQError(f"a class is a name or an index, not {value!r}; valid classes: {', '.join(class_names)}")
    index = int(value)
    if not 0 <= index < len(class_names):
        raise VQError(f"class index {index} is out of range; there are {len(class_names)} classes: {', '.join(class_names)}")
    return index


def sample_groups(tokenizer: TokenizerRecord, classes, sketched: bool) -> list[int]:
    """The class of each group of n images: the ones asked for, or every class (one group without a
    class for a sketch or an unconditional model)."""
    names = list(tokenizer.class_names)
    if classes is None:
        return list(range(len(names))) if tokenizer.samples_by_class and not sketched else [-1]
    if not tokenizer.samples_by_class:
        raise VQError(f"{tokenizer.run_dir} is an unconditional {tokenizer.kind.name.upper()}: it cannot sample a given "
                      "class; drop --class")
    items = list(classes) if isinstance(classes, (list, tuple)) else [classes]
    if not items:
        raise VQError(f"no class given; valid classes: {', '.join(names)}")
    return [class_index(c, names) for c in items]


def plan_samples(tokenizer: TokenizerRecord, prior: PriorRecord | None, classes=None, n: int = 1, *, sketch=None,
                 options: SamplingOptions, recognise: bool = True) -> SampleRequest:
    """Check and resolve a sampling call: `classes` is a name, an index, a list of them, or None
    (one group per class; with a sketch, or for an unconditional model, one group without a class).
    recognise: a sketch given without a class is sampled as the class it reads as, where the prior
    has a recogniser (`generate.recognise`); False: without a class."""
    options = with_defaults(check_options(options, prior.kind if prior else None), prior)
    n = whole(n, "n", 1, MAX_IMAGES)
    if sketch is not None and (prior is None or "sketch" not in prior.conditions):
        where = (f"{prior.run_dir} was trained without sketches (conditions: {', '.join(sorted(prior.conditions))}); "
                 "train one with `vq fit-prior --condition sketch`" if prior is not None else
                 f"{tokenizer.run_dir} holds a {tokenizer.kind.name}, which has no codes; sketches need a VQ-VAE and a "
                 "prior trained with `vq fit-prior --condition sketch`")
        raise VQError(f"{where} to sample from a sketch")
    if not isinstance(recognise, bool):
        raise VQError(f"recognise is True or False, not {str(recognise)[:40]!r}")
    recognised = recognise and sketch is not None and classes is None and prior.recognises
    if options.class_guidance is not None and (sketch is None or (classes is None and not recognised)):
        raise VQError("class_guidance weighs a class against a sketch: give both a sketch and a class "
                      "(guidance alone guides a class or a sketch)")
    groups = sample_groups(tokenizer, classes, sketch is not None)
    if n * len(groups) > MAX_IMAGES:
        raise VQError(f"{n} images of each of {len(groups)} classes is more than the {MAX_IMAGES:,} one call makes; "
                      "ask for fewer, or call again")
    if sketch is None:
        return SampleRequest(groups, n, options)
    check_detector(prior)
    boxes = [prior.sketch.frame_for(c if c >= 0 else None) for c in groups]  # each class's, the dataset's without
    read = {box: read_drawing(sketch, tokenizer.image_size, box) for box in dict.fromkeys(boxes)}  # once per box
    lines = torch.cat([read[box][0] for box in boxes])

    def reread(box) -> tuple[torch.Tensor, str]:
        if box not in read:
            read[box] = read_drawing(sketch, tokenizer.image_size, box)
        return read[box]

    return SampleRequest(groups, n, drawing_class_guidance(options) if classes is not None else options, lines,
                         read[boxes[0]][1], reread if recognised else None)


def plan_completion(tokenizer: TokenizerRecord, prior: PriorRecord | None, image, mask="top", *, fraction: float = 0.5,
                    n: int = 1, classes=None, options: SamplingOptions, candidates: int = 8,
                    paste: bool = True) -> CompletionRequest:
    """Check and read a completion call: the image (file, Pillow image or array), the mask (a side
    with `fraction`, or a mask image of the image's shape at any size: white / True = keep) and at
    most one class. paste: the kept pixels shown as given (`draw.paste_known`)."""
    options = with_defaults(check_options(options, prior.kind if prior else None), prior)
    n = whole(n, "n", 1, MAX_IMAGES)
    candidates = whole(candidates, "candidates", 1, MAX_CANDIDATES)
    if prior is None:
        raise VQError(f"{tokenizer.run_dir} holds a {tokenizer.kind.name}, which has no codes; completion needs a "
                      "VQ-VAE tokenizer and its prior")
    items = list(classes) if isinstance(classes, (list, tuple)) else ([] if classes is None else [classes])
    if len(items) > 1:
        raise VQError("a completion takes one class (or none)")
    label = class_index(items[0], list(tokenizer.class_names)) if items else None
    x, note = read_image(image, tokenizer.channels, tokenizer.image_size)
    pixels = keep_mask(mask, tokenizer.image_size, fraction, image)
    return CompletionRequest(x, pixels, label, n, options, candidates, note, bool(paste))
