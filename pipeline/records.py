"""What a run is and what it can do, as typed records of its `config.json`, read and written here
and nowhere else: a tokenizer's (its data part: how it read its data) and a prior's (its sketch
part: the detector of its sketches and the boxes drawings are framed to).

A record knows its kind as a class from the stages' registries (`kinds`), so callers ask what a
model can do (discrete, conditional, its code shape and codebook size, a prior's conditions,
exact likelihood, any-mask completion) rather than compare names. Every key is checked for its
type and the model config for its ranges before anything else reads it: a saved pipeline is
someone else's folder. Runs written by earlier versions read unchanged (keys added since take
their defaults; an older kind name is found through the kind's `former_names`)."""

import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from vq.pipeline.configs import build, to_dict
from vq.pipeline.errors import VQError
from vq.pipeline.files import atomic_write_json, read_json, resolve_stored, stored_path
from vq.pipeline.kinds import kind_class

FORMAT_VERSION = 1
MAX_CLASSES = 100_000
CONFIG = "config.json"


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# --- the data part: how a run read its data --------------------------------------------------------

@dataclass
class DataOptions:
    """How a run reads its data (`--data` and its options); a tokenizer run stores it so that a
    resume, an export and an evaluation rebuild exactly its splits."""

    spec: str | None = None  # None: fashion-mnist for a new run, the run's own data on --resume
    image_size: int | None = None
    channels: int | None = None
    image_column: str | None = None
    label_column: str | None = None
    limit: int | None = None
    streaming: bool = False
    strict: bool = False  # not stored: each command's own --strict
    spec_from_run: str | None = None  # a local spec relative to the run, so that moved runs find their data

    RANGES: ClassVar[dict] = {"image_size": (1, 4096), "channels": (1, 4), "limit": (1, 2**40)}

    def stored(self, run_dir: Path) -> "DataOptions":
        """As a run keeps it: a local path absolute and relative to the run, so both a moved run
        and a project moved with its data find it from any working directory."""
        if self.spec and Path(self.spec).exists():
            return replace(self, spec=str(Path(self.spec).resolve()), spec_from_run=stored_path(self.spec, run_dir))
        return self

    def resolved(self, run_dir: Path) -> "DataOptions":
        """As read back: the run-relative path when it still exists there."""
        if self.spec_from_run and (Path(run_dir) / self.spec_from_run).exists():
            return replace(self, spec=os.path.normpath(Path(run_dir) / self.spec_from_run))
        return self

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "strict" and (k != "spec_from_run" or v is not None)}


# --- the sketch part: a sketch prior's detector and the boxes drawings are framed to -------------

def is_share(x) -> bool:
    """A share of the image's side, as a box measures it: in (0, 1]."""
    return is_number(x) and 0 < x <= 1


def is_class_box(b) -> bool:
    """{"side": a share, "aspect": [low, high]}, 0 < low <= high <= 100, as the export writes it."""
    aspect = b.get("aspect") if isinstance(b, dict) else None
    return (is_share(b.get("side")) and isinstance(aspect, list) and len(aspect) == 2 and all(is_number(a) for a in aspect)
            and 0 < aspect[0] <= aspect[1] <= 100) if isinstance(b, dict) else False


class ClassBox(NamedTuple):
    """How a drawing given with a class is framed: the class's typical longer side (a share of the
    image's side) and the range of its objects' aspects (width over height) it is brought into."""

    side: float
    aspect_low: float
    aspect_high: float


@dataclass(frozen=True)
class SketchRecord:
    detector: int  # the edge detector's version (`sketch.edges.SKETCH_DETECTOR`)
    outline: int | None = None
    size: int | None = None
    box: float | None = None  # the dataset's typical object side; None for exports made before it was measured
    class_boxes: tuple[ClassBox | None, ...] = ()
    extra: dict = field(default_factory=dict, compare=False)  # what the export wrote beside (maps, packing)

    @classmethod
    def from_json(cls, d, where: str) -> "SketchRecord":
        boxes = d.get("class_boxes", []) if isinstance(d, dict) else None
        ok = (isinstance(d, dict) and isinstance(d.get("detector"), int) and (d.get("box") is None or is_share(d["box"]))
              and isinstance(boxes, list) and len(boxes) <= MAX_CLASSES and all(b is None or is_class_box(b) for b in boxes))
        if not ok:
            raise VQError(f"{where}: its sketch record is not in the form vq writes")
        known = {"detector", "outline", "size", "box", "class_boxes"}
        return cls(d["detector"], d.get("outline"), d.get("size"), d.get("box"),
                   tuple(None if b is None else ClassBox(b["side"], *b["aspect"]) for b in boxes),
                   {k: v for k, v in d.items() if k not in known})

    def to_json(self) -> dict:
        boxes = [None if b is None else {"side": b.side, "aspect": [b.aspect_low, b.aspect_high]} for b in self.class_boxes]
        return {"detector": self.detector, **({"outline": self.outline} if self.outline is not None else {}),
                **self.extra, **({"size": self.size} if self.size is not None else {}), "box": self.box,
                **({"class_boxes": boxes} if self.class_boxes else {})}

    def frame_for(self, label: int | None = None) -> float | ClassBox | None:
        """The box a drawing is framed to: given a class, that class's `ClassBox` when the export
        measured it; else the dataset's typical object size (None for priors trained before exports
        measured it: their drawings are only padded to a square)."""
        if label is not None and 0 <= label < len(self.class_boxes) and self.class_boxes[label]:
            return self.class_boxes[label]
        return self.box


# --- the sampling part: a prior's own defaults ------------------------------------------------------

@dataclass(frozen=True)
class SamplingDefaults:
    """What a prior's samples are drawn with when a call leaves a cut unset (config.json's
    "sampling", as Hugging Face keeps a model's generation_config.json): from its preset
    (`Prior.sampling_presets`) or a config file's [sampling] table."""

    top_k: int | None = None
    top_p: float | None = None

    RANGES: ClassVar[dict] = {"top_k": (0, 2**31 - 1), "top_p": (1e-9, 1.0)}

    @classmethod
    def of(cls, *layers: dict, where: str) -> "SamplingDefaults":
        """From layers of keys (a preset's, a config file's [sampling] table), checked; a top_k of
        0 or a top_p of 1 (no cut, as in a call) is kept as no default."""
        d = build(cls, *layers, where=where)
        return cls(top_k=d.top_k or None, top_p=None if d.top_p == 1.0 else d.top_p)

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def words(self) -> str:
        return cut_words(self.top_k, self.top_p)


def cut_words(top_k, top_p) -> str:
    """Sampling cuts as a note or a title reads them (", top-k 64"); "" for none (a value that is
    no number, as a report read from someone's folder may hold, is left out)."""
    return "".join(f", {name} {value:g}" for name, value in (("top-k", top_k), ("top-p", top_p))
                   if isinstance(value, (int, float)) and not isinstance(value, bool))


# --- runs ------------------------------------------------------------------------------------------

STORED_TYPES = {"kind": str, "model": str, "fingerprint": (str, type(None)), "config": dict, "class_names": list,
                "metrics": dict, "tokenizer_fingerprint": (str, type(None)), "tokenizer_dir": str, "codes_dir": str,
                "sketch": dict, "image": dict, "dataset": dict, "data_options": dict, "train": dict, "preset": str,
                "eval_images": int, "complete": bool, "sampling": dict}


def check_stored(info, path: Path, stage: str) -> None:
    """config.json as vq writes it: a table, a whole format version this vq reads, the stage asked
    for, and each key of the type vq writes (a crafted folder is refused here in one line)."""
    if not isinstance(info, dict) or "format_version" not in info:
        raise VQError(f"{path} was not written by vq (no format_version); pass a {stage} run directory")
    version = info["format_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise VQError(f"{path}: format_version must be a whole number, not {str(version)[:40]!r}")
    if info.get("kind") != stage:
        raise VQError(f"{path.parent} holds a {str(info.get('kind', 'unknown thing'))[:40]}, not a {stage}")
    if version > FORMAT_VERSION:
        raise VQError(f"{path.parent} was written by a newer vq (format {version}); upgrade vq")
    missing = next((k for k in ("model", "config") if k not in info), None)
    if missing:
        raise VQError(f"{path} records no '{missing}'; it is no {stage} vq wrote")
    for key, tp in STORED_TYPES.items():
        if key in info and not isinstance(info[key], tp) or (isinstance(info.get(key), bool) and tp is int):
            raise VQError(f"{path}: '{key}' must be a {getattr(tp, '__name__', 'string')}, not {type(info[key]).__name__}")
    names = info.get("class_names", [])
    if len(names) > MAX_CLASSES or not all(isinstance(n, str) and 0 < len(n) <= 200 for n in names):
        raise VQError(f"{path}: class_names must be at most {MAX_CLASSES:,} names of 1 to 200 characters")
    if not all(isinstance(k, str) and is_number(v) for k, v in info.get("metrics", {}).items()):
        raise VQError(f"{path}: metrics must map names to finite numbers")


def name_only(value):
    """An absolute path as its last part (what it was, not where it lay); anything else as it is."""
    return Path(value).name if isinstance(value, str) and Path(value).is_absolute() else value


def read_stored(run_dir: Path, stage: str) -> dict:
    """A run's config.json, checked (`check_stored`), or a one-line refusal naming what to run."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        hint = {"tokenizer": "vq fit-tokenizer", "prior": "vq fit-prior"}.get(stage, "vq")
        raise VQError(f"no {stage} at {run_dir} (no config.json); train one with `{hint}`")
    info = read_json(path)
    check_stored(info, path, stage)
    return info


def model_config(config_class, stored: dict, where: str):
    """A stored model config as its dataclass: every key known and of its type, every number in
    its range (`configs.build`), the rules between fields (`validate`)."""
    config = build(config_class, stored, where=f"{where} model config")
    try:
        config.validate()
    except (ValueError, TypeError) as e:
        raise VQError(f"{where} model config: {e}") from None
    return config


@dataclass(frozen=True)
class RunRecord:
    """What a run's config.json holds beside its weights, for every stage."""

    stage: ClassVar[str]
    run_dir: Path
    kind: type  # the kind's class in its stage's registry
    config: Any  # the model config, checked
    fingerprint: str = ""  # the first 16 hex digits of the weights file's sha256
    class_names: tuple[str, ...] = ()
    metrics: dict = field(default_factory=dict)  # the held-out figures its training ended with
    preset: str | None = None
    train: dict = field(default_factory=dict)  # its train config, as `TrainConfig` fields
    dataset: dict = field(default_factory=dict)  # a description of its dataset (spec, sizes, columns)

    @classmethod
    def read(cls, run_dir: Path | str):
        run_dir = Path(run_dir)
        info = read_stored(run_dir, cls.stage)
        kind = cls.find_kind(info["model"])
        config = model_config(kind.config_class, info["config"], str(run_dir / CONFIG))
        common = dict(run_dir=run_dir, kind=kind, config=config, fingerprint=info.get("fingerprint") or "",
                      class_names=tuple(info.get("class_names", [])), metrics=dict(info.get("metrics", {})),
                      preset=info.get("preset"), train=info.get("train", {}), dataset=info.get("dataset", {}))
        record = cls(**common, **cls.own_fields(info, run_dir))
        record.check()
        return record

    @classmethod
    def find_kind(cls, name: str) -> type:
        return kind_class(cls.stage, name)

    @classmethod
    def own_fields(cls, info: dict, run_dir: Path) -> dict:
        """The fields of this stage's record beyond the common ones, read from config.json."""
        return {}

    def check(self) -> None:
        """The rules between fields, beyond each one's type."""

    def to_json(self) -> dict:
        """config.json as vq writes it."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RunRecord.__dataclass_fields__}
        optional = {"dataset": self.dataset, "train": self.train, "preset": self.preset}
        return {"kind": self.stage, "model": self.kind.name, "format_version": FORMAT_VERSION, "fingerprint": self.fingerprint,
                "config": to_dict(self.config), "class_names": list(self.class_names),
                **{k: v for k, v in optional.items() if v}, **self.own_json(own), "metrics": self.metrics}

    def own_json(self, own: dict) -> dict:
        return {k: v for k, v in own.items() if v is not None}

    def write(self, run_dir: Path | None = None) -> None:
        atomic_write_json(Path(run_dir or self.run_dir) / CONFIG, self.to_json())

    def portable(self) -> "RunRecord":
        """As a saved pipeline keeps it: without paths of the machine it ran on (a local dataset or a
        file a config names keeps its name only: it tells what it was)."""
        dataset = {k: name_only(v) for k, v in self.dataset.items() if k != "source"}
        config = replace(self.config, **{f.name: name_only(getattr(self.config, f.name)) for f in fields(self.config)
                                         if isinstance(getattr(self.config, f.name), str)})
        return replace(self, dataset=dataset, config=config)


@dataclass(frozen=True)
class TokenizerRecord(RunRecord):
    stage: ClassVar[str] = "tokenizer"
    data: DataOptions | None = None
    eval_images: int | None = None  # the held-out images its test figures are over

    @classmethod
    def own_fields(cls, info: dict, run_dir: Path) -> dict:
        data = info.get("data_options")
        if data is not None:
            data = build(DataOptions, {k: v for k, v in data.items() if k in DataOptions.__dataclass_fields__},
                         where=f"{run_dir / CONFIG} data option")
        return {"data": data, "eval_images": info.get("eval_images")}

    def check(self) -> None:
        if not self.class_names or (self.conditional and len(self.class_names) != self.config.num_classes):
            raise VQError(f"{self.run_dir / CONFIG} names {len(self.class_names)} classes"
                          + (f" for a model of {self.config.num_classes}" if self.class_names else "; a tokenizer knows at least one"))
        data = self.data
        if data is not None and (data.image_size, data.channels) not in ((None, None), (self.image_size, self.channels)):
            raise VQError(f"{self.run_dir / CONFIG}: its data options read {data.channels}x{data.image_size} px images, "
                          f"its model takes {self.channels}x{self.image_size}")

    def own_json(self, own: dict) -> dict:
        return {**({"data_options": self.data.to_json()} if self.data else {}),
                **({"eval_images": self.eval_images} if self.eval_images is not None else {})}

    def portable(self) -> "TokenizerRecord":
        record = super().portable()
        if self.data is None:
            return record
        return replace(record, data=replace(self.data, spec=name_only(self.data.spec), spec_from_run=None))

    def data_options(self) -> DataOptions:
        """How it read its data, a stored local path resolved."""
        if self.data is None:
            raise VQError(f"{self.run_dir / CONFIG} records no data options; it is no run vq trained")
        return self.data.resolved(self.run_dir)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def discrete(self) -> bool:
        return self.kind.discrete

    @property
    def conditional(self) -> bool:
        return self.kind.conditional

    @property
    def code_shape(self) -> tuple[int, ...] | None:
        codes = self.kind.codes_of(self.config)
        return tuple(codes[0]) if codes else None

    @property
    def codebook_size(self) -> int | None:
        codes = self.kind.codes_of(self.config)
        return codes[1] if codes else None

    @property
    def samples_by_class(self) -> bool:
        """Whether it can draw a given class: through a (class-conditional) prior over its codes,
        or through its own class input."""
        return self.discrete or self.conditional


@dataclass(frozen=True)
class PriorRecord(RunRecord):
    stage: ClassVar[str] = "prior"
    tokenizer_fingerprint: str | None = None
    tokenizer_dir: str | None = None  # relative to the run (`files.stored_path`)
    codes_dir: str | None = None  # the exported codes it was trained on, relative to the run
    image: dict | None = None  # the tokenizer's images: channels, image_size
    sketch: SketchRecord | None = None
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)  # none for runs saved before it existed

    @classmethod
    def own_fields(cls, info: dict, run_dir: Path) -> dict:
        sketch = info.get("sketch")
        return {"tokenizer_fingerprint": info.get("tokenizer_fingerprint"), "tokenizer_dir": info.get("tokenizer_dir"),
                "codes_dir": info.get("codes_dir"), "image": info.get("image"),
                "sketch": None if sketch is None else SketchRecord.from_json(sketch, str(run_dir / CONFIG)),
                "sampling": SamplingDefaults.of(info.get("sampling", {}), where=f"{run_dir / CONFIG} sampling")}

    def own_json(self, own: dict) -> dict:
        return {k: (v.to_json() if isinstance(v, (SketchRecord, SamplingDefaults)) else v) for k, v in own.items()
                if v is not None and v != SamplingDefaults()}

    def portable(self) -> "PriorRecord":
        return replace(super().portable(), tokenizer_dir=None, codes_dir=None)

    @property
    def codes_path(self) -> Path | None:
        """The exported codes it was trained on, as recorded (resolved)."""
        return resolve_stored(self.codes_dir, self.run_dir) if self.codes_dir else None

    @property
    def conditions(self) -> frozenset[str]:
        return self.config.conditions

    @property
    def recognises(self) -> bool:
        """Whether the prior tells a drawing's class (`generate.recognise`)."""
        return bool(getattr(self.config, "recognises", False))

    @property
    def exact_likelihood(self) -> bool:
        return self.kind.exact_likelihood

    @property
    def any_mask(self) -> bool:
        return self.kind.any_mask

    @property
    def code_shape(self) -> tuple[int, int]:
        return (self.config.height, self.config.width)

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def check_tokenizer(self, tokenizer: TokenizerRecord) -> None:
        """Refuse a prior trained on another tokenizer's codes, or on codes of another shape."""
        if not tokenizer.discrete:
            raise VQError(f"{tokenizer.run_dir} holds a {tokenizer.kind.name}, which has no codes for a prior; "
                          "it samples from its own latent prior: load it without a prior")
        if self.tokenizer_fingerprint != tokenizer.fingerprint:
            raise VQError(f"{self.run_dir} was trained on the codes of another tokenizer "
                          f"({self.tokenizer_fingerprint}, not {tokenizer.fingerprint}); "
                          "pass the matching --tokenizer or retrain the prior")
        if self.config.num_classes != len(tokenizer.class_names):
            raise VQError(f"{self.run_dir} models {self.config.num_classes} classes, but the tokenizer has "
                          f"{len(tokenizer.class_names)}; pass the matching --tokenizer or retrain the prior")
        shape = self.kind.shape_fields(tokenizer.code_shape)
        if self.codebook_size != tokenizer.codebook_size or shape != {k: getattr(self.config, k, None) for k in shape}:
            raise VQError(f"{self.run_dir} models {'x'.join(map(str, self.code_shape))} codes from {self.codebook_size}, but "
                          f"the tokenizer makes {'x'.join(map(str, tokenizer.code_shape))} codes from {tokenizer.codebook_size}; "
                          "pass the matching --tokenizer or retrain the prior")
