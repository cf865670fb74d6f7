"""An export's record (`meta.json`), read and written here and nowhere else: the tokenizer it was
made by (its fingerprint: a prior trained on these codes records the same one, so it is never
paired with a tokenizer whose codes mean something else), the code shape and codebook size, the
class names, the shards of each split, and for a sketch prior the sketch maps' record. Also the
record of an export in progress (`progress.json`), which an interrupted export resumes from."""

from dataclasses import dataclass, field
from pathlib import Path

from vq.pipeline.errors import VQError
from vq.pipeline.files import atomic_write_json, read_json
from vq.pipeline.records import SketchRecord, TokenizerRecord
from vq.pipeline.sketch.edges import OUTLINE_VERSION, SKETCH_DETECTOR

CODES_FORMAT = 2
SPLITS = ("train", "test")
META = "meta.json"
PROGRESS = "progress.json"
SKETCH_MAPS = ("edges", "outline")  # the maps each image's sketch record holds, in order


@dataclass(frozen=True)
class CodeRecord:
    format_version: int
    tokenizer_fingerprint: str
    codebook_size: int
    code_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    shards: dict  # split -> shard names
    splits: dict = field(default_factory=dict)  # split -> code maps
    dtype: str = "uint16"
    image: dict = field(default_factory=dict)  # the tokenizer's images: channels, image_size
    tokenizer_dir: str | None = None  # relative to the export
    skipped: int = 0
    dataset: dict = field(default_factory=dict)
    sketch: SketchRecord | None = None

    @classmethod
    def read(cls, codes_dir: Path) -> "CodeRecord | None":
        """The export's record, or None when it has none (no export, or one still in progress)."""
        path = Path(codes_dir) / META
        if not path.exists():
            return None
        d = read_json(path)
        try:
            version = d["format_version"]
            if version != CODES_FORMAT:  # an older export is read for its version alone: it is exported again
                return cls(version, str(d.get("tokenizer_fingerprint")), 0, (), (), {})
            return cls(version, d["tokenizer_fingerprint"], int(d["codebook_size"]), tuple(d["grid"]),
                       tuple(d["class_names"]), {s: list(d["shards"][s]) for s in SPLITS}, dict(d["splits"]), d["dtype"],
                       {key: int(d["image"][key]) for key in ("channels", "image_size")}, d.get("tokenizer_dir"), int(d.get("skipped", 0)), dict(d.get("dataset", {})),
                       SketchRecord.from_json(d["sketch"], str(path)) if d.get("sketch") else None)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise VQError(f"{path} is not the record of an export vq wrote; export again with --force") from None

    def write(self, codes_dir: Path) -> None:
        atomic_write_json(Path(codes_dir) / META, {
            "kind": "codes", "format_version": self.format_version, "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "tokenizer_dir": self.tokenizer_dir, "codebook_size": self.codebook_size, "grid": list(self.code_shape),
            "dtype": self.dtype, "class_names": list(self.class_names), "image": self.image, "splits": self.splits,
            "shards": self.shards, "skipped": self.skipped, "dataset": self.dataset,
            **({"sketch": self.sketch.to_json()} if self.sketch else {})})

    @property
    def current(self) -> bool:
        return self.format_version == CODES_FORMAT

    @property
    def has_sketches(self) -> bool:
        """Whether it holds this vq's sketch maps: the detector's edges and the outlines."""
        return self.sketch is not None and self.sketch.detector == SKETCH_DETECTOR and self.sketch.outline == OUTLINE_VERSION

    @property
    def image_size(self) -> int:
        """The side of the tokenizer's images, in pixels."""
        return self.image["image_size"]

    @property
    def channels(self) -> int:
        return self.image["channels"]

    @property
    def pixel_dims(self) -> int:
        return self.channels * self.image_size ** 2

    def check_tokenizer(self, tokenizer: TokenizerRecord, codes_dir: Path) -> None:
        if self.tokenizer_fingerprint != tokenizer.fingerprint:
            raise VQError(
                f"{codes_dir} holds codes of another tokenizer (fingerprint {self.tokenizer_fingerprint}, "
                f"this one is {tokenizer.fingerprint}); export this tokenizer's codes with "
                f"`vq export-codes --tokenizer TOKENIZER --out DIR` (or `vq fit-prior --codes DIR`), or replace them with --force"
            )


@dataclass(frozen=True)
class ExportProgress:
    """An export in progress: whose codes it is writing, and whether with sketches."""

    tokenizer_fingerprint: str
    sketches: bool

    @classmethod
    def read(cls, codes_dir: Path) -> "ExportProgress | None":
        path = Path(codes_dir) / PROGRESS
        if not path.exists():
            return None
        d = read_json(path)
        if not isinstance(d, dict) or not isinstance(d.get("tokenizer_fingerprint"), str):
            raise VQError(f"{path} is not the record of an export vq wrote; export again with --force")
        return cls(d["tokenizer_fingerprint"], bool(d.get("sketches")))

    def write(self, codes_dir: Path) -> None:
        atomic_write_json(Path(codes_dir) / PROGRESS, {"tokenizer_fingerprint": self.tokenizer_fingerprint,
                                                       "sketches": self.sketches})
