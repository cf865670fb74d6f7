"""What every fit job shares: the job as the command line gives it, the layers of a model and train
config (the kind's preset, a config file, flags; or on --resume the run's own, then flags), and
the rules a resumed run keeps: its kind (compared as classes), its model config, its data."""

from dataclasses import dataclass, field
from pathlib import Path

from vq.pipeline.configs import build, read_config_file, to_dict
from vq.pipeline.errors import VQError
from vq.pipeline.files import STATE_FILE, check_run_dir
from vq.pipeline.records import DataOptions, RunRecord, SamplingDefaults
from vq.pipeline.train.config import TrainConfig
from vq.pipeline.train.state import check_state


@dataclass
class FitJob:
    """A fit as asked for: the kind by name, the run directory, the preset and the overrides."""

    kind: str
    out: Path
    preset: str = "demo"
    config_file: Path | None = None
    model_overrides: dict = field(default_factory=dict)
    train_overrides: dict = field(default_factory=dict)
    resume: bool = False
    force: bool = False
    data: DataOptions = field(default_factory=DataOptions)  # a tokenizer's data (a prior's comes from its codes)
    tokenizer: Path = Path("runs/tokenizer")  # a prior's tokenizer
    codes: Path | None = None  # a prior's exported codes (None: the tokenizer's own, or on --resume the run's)

    @property
    def new_length(self) -> bool:
        """Whether the user gave a resumed run a new length (else it finishes its own schedule)."""
        return bool({"steps", "epochs", "time_budget"} & set(self.train_overrides))


def kind_preset(kind: type, name: str) -> tuple[dict, dict]:
    if name not in kind.presets:
        raise VQError(f"unknown preset '{name}' for a {kind.name}; choose one of {', '.join(kind.presets) or 'none'}")
    return kind.presets[name]


def saved_run(job: FitJob, kind: type, record_class: type[RunRecord]) -> RunRecord | None:
    """The run --resume continues, refused before any data is loaded when it cannot be: another kind
    (compared as classes: a name stored by an older vq finds its kind), or an unreadable state."""
    what = record_class.stage
    check_run_dir(job.out, resume=job.resume, force=job.force, what=what)
    saved = record_class.read(job.out) if job.resume and (job.out / "config.json").exists() else None
    check_kind(saved, kind)
    if job.resume:
        check_state(job.out / STATE_FILE, kind)
    return saved


def check_kind(saved: RunRecord | None, kind: type) -> None:
    """A resumed run is of the kind asked for (compared as classes: a name stored by an older vq
    finds its kind)."""
    if saved is not None and saved.kind is not kind:
        flag = "--model" if saved.stage == "tokenizer" else "--kind"
        raise VQError(f"{saved.run_dir} holds a {saved.kind.name} {saved.stage}; resume it with {flag} {saved.kind.name}")


def job_configs(job: FitJob, kind: type, saved: RunRecord | None) -> tuple[TrainConfig, tuple[dict, ...]]:
    """(train config, model config layers) of a fit job. A new run: the kind's preset (with the
    config class's new-run keys, `NEW_RUN`, beneath it), then the config file, then the flags; the
    caller puts what the data dictates right after the first layer. A resumed run: what the run
    saved, then the flags (a new length, device, ...); its model is fixed."""
    model_preset, train_preset = kind_preset(kind, job.preset)
    file_cfg = read_config_file(job.config_file)
    if "sampling" in file_cfg and not hasattr(kind, "sampling_presets"):
        raise VQError(f"{job.config_file}: [sampling] holds a prior's sampling defaults; a {kind.name} has none")
    config_class = kind.config_class
    if saved is None:
        if "epochs" in job.train_overrides and "steps" not in job.train_overrides:
            train_preset = {**train_preset, "steps": None}  # an explicit --epochs beats the preset's steps
        train_cfg = build(TrainConfig, train_preset, file_cfg.get("train", {}), job.train_overrides, where="train config")
        layers = ({**getattr(config_class, "NEW_RUN", {}), **model_preset}, file_cfg.get("model", {}), job.model_overrides)
    else:
        stored = to_dict(saved.config)
        asked = to_dict(build(config_class, stored, file_cfg.get("model", {}), job.model_overrides, where="model config"))
        changed = sorted(k for k in asked if asked[k] != stored[k])
        if changed:
            raise VQError(f"the model of a resumed run is fixed by {job.out}/config.json; "
                          f"{changed[0]} differs ({stored[changed[0]]} there, {asked[changed[0]]} asked)")
        train_cfg = build(TrainConfig, saved.train, file_cfg.get("train", {}), job.train_overrides, where="train config")
        layers = (stored,)
    build(config_class, *layers, where="model config")  # a bad key fails here, before any data is loaded
    train_cfg.validate()
    return train_cfg, layers


def resolved_config(job: FitJob, kind: type, record_class: type[RunRecord], from_data: dict) -> dict:
    """--print-config: the configuration a fit would run with. No data is read, no model built,
    nothing written. Model fields that the data (or the codes) decide are null."""
    saved = record_class.read(job.out) if job.resume else None
    check_kind(saved, kind)
    train, layers = job_configs(job, kind, saved)
    config = to_dict(build(kind.config_class, *layers, where="model config"))
    if saved is None:  # what the data decides, unless the config file or a flag set it
        config.update({k: v for k, v in from_data.items() if k in config and not any(k in layer for layer in layers[1:])})
    sampling = {"sampling": sampling_defaults(job, kind, saved).to_json()} if hasattr(kind, "sampling_presets") else {}
    return {"kind": record_class.stage, "model": kind.name, "preset": saved.preset if saved else job.preset,
            "model_config": config, "train_config": to_dict(train), **sampling,
            "from_data": sorted(k for k in from_data if k in config and config[k] is None)}


def sampling_defaults(job: FitJob, kind: type, saved: RunRecord | None) -> SamplingDefaults:
    """A prior's sampling defaults (`records.SamplingDefaults`): a new run's preset's
    (`sampling_presets`), a resumed run's own, then the config file's [sampling] table."""
    base = saved.sampling.to_json() if saved is not None else kind.sampling_presets.get(job.preset, {})
    return SamplingDefaults.of(base, read_config_file(job.config_file).get("sampling", {}),
                               where=f"{job.config_file or 'preset'} [sampling]")
