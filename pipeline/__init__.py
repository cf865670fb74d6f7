"""vq's pipeline: everything between the two stages' models and the user. Its public face is
`Pipeline` (load once, then sample, complete, encode, decode) and `VQError` (every refusal, one
line), and `image_grid` (Pillow images into one): `from vq.pipeline import Pipeline, VQError`.

The rooms, each a package whose docstring says what lives there and what it may import:

- `data`: sources -> splits of images and labels, and batches of them;
- `train`: the one training loop, the fit jobs, held-out figures;
- `codes`: code maps exported from a tokenizer, and read back for a prior;
- `sketch`: edge maps, outlines, free-hand styles, drawings;
- `generate`: the `Pipeline`, its requests and options, what it reads from users;
- `evaluate`: `vq eval`, its judge, FID, and its report;
- `share`: saved pipeline folders, model cards, the Hub;
- `serve`: the web studio.

Beside them, the modules every room may import: `errors`, `files` (atomic writes, limited
reads, locks), `configs` (typed layered configs), `kinds` (the stages' registries),
`records` (a run's config.json, typed), `checkpoint` (a model on disk), `device`, `distributed`,
`metrics`, `threads` (how many compute threads a process runs on). Imports run one way: cli -> pipeline -> {stage1_vqvae, stage2_prior}."""

__all__ = ["Pipeline", "VQError", "image_grid"]


def __getattr__(name: str):
    # Lazily: importing vq.pipeline (as the command line does for its error type) must not import
    # torch and the models.
    if name == "Pipeline":
        from vq.pipeline.generate.pipeline import Pipeline

        return Pipeline
    if name == "VQError":
        from vq.pipeline.errors import VQError

        return VQError
    if name == "image_grid":
        from vq.pipeline.generate.images import image_grid

        return image_grid
    raise AttributeError(f"module 'vq.pipeline' has no attribute {name!r}")
