"""Size presets: `demo` fits a few minutes on 2 CPU cores, `full` is for one GPU.
Each entry gives model-config and train-config overrides; a config file and flags override these.

Resolution: both are sized for 28 px images (Fashion-MNIST). The image size itself always comes
from the data (or --image-size); a preset fixes the downsampling, so demo turns 28 px into 7x7
codes and full into 14x14, and 64 px images into 16x16 and 32x32 codes."""

TOKENIZER_PRESETS = {
    "vqvae": {
        "demo": ({"hidden": 64, "res_blocks": 2, "downsample": 4, "code_dim": 16, "codebook_size": 256},
                 {"steps": 1000, "batch_size": 128, "lr": 2e-3, "warmup_steps": 100, "eval_every": 500}),
        "full": ({"hidden": 128, "res_blocks": 2, "upper_res_blocks": 1, "downsample": 2, "code_dim": 32, "codebook_size": 1024},
                 {"steps": 8000, "batch_size": 256, "lr": 1e-3, "warmup_steps": 500, "eval_every": 1000}),
    },
    "vae": {
        "demo": ({"hidden": 64, "res_blocks": 2, "downsample": 4, "latent_dim": 32, "kl_warmup_steps": 500},
                 {"steps": 1500, "batch_size": 128, "lr": 2e-3, "warmup_steps": 100, "eval_every": 500}),
        "full": ({"hidden": 128, "res_blocks": 2, "upper_res_blocks": 1, "downsample": 4, "latent_dim": 64, "kl_warmup_steps": 2000},
                 {"steps": 8000, "batch_size": 256, "lr": 1e-3, "warmup_steps": 500, "eval_every": 1000}),
    },
}
TOKENIZER_PRESETS["cvae"] = TOKENIZER_PRESETS["vae"]

PRIOR_PRESETS = {
    "transformer": {
        "demo": ({"dim": 192, "depth": 4, "heads": 4, "dropout": 0.1},
                 {"steps": 800, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100, "eval_every": 400,
                  "weight_decay": 0.05}),
        "full": ({"dim": 512, "depth": 8, "heads": 8, "dropout": 0.1},
                 {"steps": 8000, "batch_size": 128, "lr": 5e-4, "warmup_steps": 500, "eval_every": 1000,
                  "weight_decay": 0.05}),
    },
}
# The masked prior starts from the autoregressive prior's sizes and budgets, so the two kinds
# compare at equal size and training time; its own presets await the measured comparison.
PRIOR_PRESETS["masked"] = PRIOR_PRESETS["transformer"]
