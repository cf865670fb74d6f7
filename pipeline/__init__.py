"""The pipeline: data, one training loop for both stages, checkpoints, export and generation, and
`Pipeline`, the object that generates (`from vq.pipeline import Pipeline`).
Imports run one way: cli -> pipeline -> {stage1_vqvae, stage2_prior}."""

__all__ = ["Pipeline", "VQError"]


def __getattr__(name: str):
    # Lazily: `import vq.pipeline.runs` (as the command line does for its error type) must not
    # import torch and the models.
    if name == "Pipeline":
        from vq.pipeline.pipeline import Pipeline

        return Pipeline
    if name == "VQError":
        from vq.pipeline.runs import VQError

        return VQError
    raise AttributeError(f"module 'vq.pipeline' has no attribute {name!r}")
