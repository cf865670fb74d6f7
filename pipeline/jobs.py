"""What every fit job shares: presets, the layers of a model and train config (preset, config
file, flags; or on --resume the run's own, then flags), and the rules a resumed run keeps."""

from vq.pipeline.configs import build, read_config_file, to_dict
from vq.pipeline.runs import VQError
from vq.pipeline.trainer import TrainConfig


def preset(table: dict, model: str, name: str) -> tuple[dict, dict]:
    if name not in table[model]:
        raise VQError(f"unknown preset '{name}'; choose one of {', '.join(table[model])}")
    return table[model][name]


def job_configs(job, presets: dict, model_name: str, config_class, saved: dict | None) -> tuple[TrainConfig, tuple[dict, ...]]:
    """(train config, model config layers) of a fit job. A new run: the preset (with the config
    class's new-run keys, `NEW_RUN`, beneath it), then the config file, then the flags. A resumed
    run: what the run saved, then the flags (a new length, device, ...); its model is fixed."""
    model_preset, train_preset = preset(presets, model_name, job.preset)
    file_cfg = read_config_file(job.config_file)
    if saved is None:
        if "epochs" in job.train_overrides and "steps" not in job.train_overrides:
            train_preset = {**train_preset, "steps": None}  # an explicit --epochs beats the preset's steps
        train_cfg = build(TrainConfig, train_preset, file_cfg.get("train", {}), job.train_overrides, where="train config")
        # The preset layer, with the keys a new run gets beside it: callers put what the data
        # dictates right after layers[0].
        layers = ({**getattr(config_class, "NEW_RUN", {}), **model_preset}, file_cfg.get("model", {}), job.model_overrides)
    else:
        asked = to_dict(build(config_class, saved["config"], file_cfg.get("model", {}), job.model_overrides, where="model config"))
        stored = to_dict(build(config_class, saved["config"], where="model config"))  # keys added since: their defaults
        changed = sorted(k for k in asked if asked[k] != stored[k])
        if changed:
            raise VQError(f"the model of a resumed run is fixed by {job.out}/config.json; "
                          f"{changed[0]} differs ({saved['config'].get(changed[0])} there, {asked[changed[0]]} asked)")
        train_cfg = build(TrainConfig, saved["train"], file_cfg.get("train", {}), job.train_overrides, where="train config")
        layers = (saved["config"],)
    build(config_class, *layers, where="model config")  # a bad key fails here, before any data is loaded
    train_cfg.validate()
    return train_cfg, layers


def new_length(job) -> bool:
    """Whether the user gave the resumed run a new length (else it finishes its own schedule)."""
    return bool({"steps", "epochs", "time_budget"} & set(job.train_overrides))
