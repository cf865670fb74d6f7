"""The pipeline: data, one training loop for both stages, checkpoints, export and generation.
Imports run one way: cli -> pipeline -> {stage1_vqvae, stage2_prior}."""
