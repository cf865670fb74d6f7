"""The options commands share, defined once: each with its help, and for options whose values the
library defines (the kinds in the stages' registries, presets, quantizers, sides, precisions)
a parser that reads them from the library when the option is given, so --help needs no torch and
a kind a package registers is accepted like vq's own (`vq kinds` lists them)."""

from collections.abc import Callable, Iterable
from pathlib import Path

import typer


def library_choice(what: str, values: Callable[[], Iterable[str]]) -> Callable[[str], str]:
    """A parser accepting one of `values()` (read from the library at parse time), in any case."""

    def parse(text: str) -> str:
        allowed = list(values())
        match = next((v for v in allowed if v.lower() == str(text).lower()), None)
        if match is None:
            raise typer.BadParameter(f"'{text}' is not {what}; choose one of {', '.join(allowed)}")
        return match

    return parse


def check(ok, rule: str):
    """A typer callback refusing a given value (None is unset) for which ok(value) is false."""

    def callback(value):
        if value is not None and not ok(value):
            raise typer.BadParameter(f"{value} is not {rule}")
        return value

    return callback


# The library's values, read when an option is given (each import loads torch).
def tokenizer_kinds():
    from vq.pipeline.kinds import load_plugins
    from vq.stage1_vqvae import TOKENIZERS

    load_plugins()
    return TOKENIZERS


def prior_kinds():
    from vq.pipeline.kinds import load_plugins
    from vq.stage2_prior import PRIORS

    load_plugins()
    return PRIORS


def quantizers():
    from vq.stage1_vqvae.vqvae import QUANTIZERS

    return QUANTIZERS


def conditions():
    from vq.stage2_prior.config import CONDITIONS

    return CONDITIONS


def sketch_styles():
    from vq.stage2_prior.config import SKETCH_STYLES

    return SKETCH_STYLES


def sides():
    from vq.pipeline.generate.inputs import SIDES

    return SIDES


def precisions():
    from vq.pipeline.device import PRECISIONS

    return PRECISIONS


# --- data -----------------------------------------------------------------------------------------
DataOpt = typer.Option(None, "--data", "-d", help="fashion-mnist (default), cifar10, a folder of class sub-folders, a saved Hugging Face dataset, or a hub id. Folders and datasets too big for memory are decoded on the fly. On --resume: the run's own data.")
StreamingOpt = typer.Option(False, "--streaming", help="Read a Hugging Face dataset as a stream (hub datasets larger than the disk); shards are split over processes and workers.")
StrictOpt = typer.Option(False, "--strict", help="Stop at the first unreadable image instead of skipping and counting it.")
ImageSizeOpt = typer.Option(None, "--image-size", min=1, help="Centre-crop and resize images to this many pixels a side (default: the images' own size, when they all share one square size).")
ChannelsOpt = typer.Option(None, "--channels", callback=check(lambda c: c in (1, 3), "1 or 3"), help="1 (grey) or 3 (RGB); default: from the first image.")
ImageColOpt = typer.Option(None, "--image-column", help="Image column of a Hugging Face dataset (default: detected).")
LabelColOpt = typer.Option(None, "--label-column", help="Label column of a Hugging Face dataset (default: detected).")
LimitOpt = typer.Option(None, "--limit", min=1, help="Use only the first N images of each split (quick trials).")

# --- training -------------------------------------------------------------------------------------
PresetOpt = typer.Option("demo", "--preset", "-p", help="The kind's size preset: demo (minutes on a laptop CPU) or full (one GPU). Both are sized for 28 px images (demo: 7x7 codes, full: 14x14); other sizes keep the preset's --downsample.")
ConfigOpt = typer.Option(None, "--config", help="TOML or JSON file with \\[model] and \\[train] tables (and for a prior \\[sampling]: its saved top_k / top_p defaults); flags override it.")
DeviceOpt = typer.Option(None, "--device", help="auto (default), cpu, cuda, cuda:N or mps.")
ThreadsOpt = typer.Option(None, "--threads", min=1, max=4096, help="CPU threads for torch (also VQ_THREADS). Default: chosen by vq: the cores this process may use, less its DataLoader workers and the cores other work keeps busy, followed while training; one thread for a few images. Pin it when running several things at once, or for bit-identical reruns.")
BatchOpt = typer.Option(None, "--batch-size", "-b", min=1, help="Global batch size: under torchrun each of N processes takes batch-size / N.")
WorkersOpt = typer.Option(None, "--workers", min=0, help="DataLoader processes that decode images, per training process (default: from the CPU count).")
SaveEveryOpt = typer.Option(None, "--save-every", help="Save the whole training state every N steps (500) or every so often (10m, the default), so a killed run (kill -9, a lost node) resumes with --resume losing at most that much.")
SkipNonfiniteOpt = typer.Option(None, "--skip-nonfinite/--no-skip-nonfinite", help="Skip (and count) a batch whose loss or gradients are not finite, instead of stopping the run; costs one device sync per step.")
TimeBudgetOpt = typer.Option(None, "--time-budget", help="Train until this much time is spent (e.g. 90s, 5m, 1h), with the learning-rate schedule fitted to the steps it allows; wins over --steps.")
LogEveryOpt = typer.Option(None, "--log-every", min=1, help="Read the loss (and check it is finite) every N steps; each read waits for the GPU.")
DeterministicOpt = typer.Option(None, "--deterministic/--no-deterministic", help="Deterministic kernels: a rerun or a resumed run gives bit-identical weights (slower on GPUs). Default: the config file's, else off.")
CompileOpt = typer.Option(None, "--compile/--no-compile", help="torch.compile the model for training (the plain weights are saved). Default: the config file's, else off.")
EpochsOpt = typer.Option(None, "--epochs", min=0, help="Train for this many passes over the data.")
StepsOpt = typer.Option(None, "--steps", min=0, help="Train for this many optimizer steps (wins over --epochs).")
LrOpt = typer.Option(None, "--lr", min=0, help="Peak learning rate (AdamW, warm-up then cosine).")
SeedOpt = typer.Option(None, "--seed", help="Random seed of the initial weights, data order and dropout (default: the config file's, else 0).")
EvalEveryOpt = typer.Option(None, "--eval-every", min=1, help="Evaluate on the test split and checkpoint every N steps.")
PrecisionOpt = typer.Option(None, "--precision", parser=library_choice("a precision", precisions), help="auto (bf16 on CUDA, else fp32), bf16 or fp32.")
WandbOpt = typer.Option(None, "--wandb/--no-wandb", help="Log to Weights & Biases (offline unless WANDB_MODE says otherwise). Default: the config file's, else off.")
ResumeOpt = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint.")
ForceOpt = typer.Option(False, "--force", help="Replace an existing run in --out.")
PrintConfigOpt = typer.Option(False, "--print-config", help="Print the resolved configuration (preset, then --config, then flags; with --resume the run's own, then flags) as JSON and exit, without reading data or writing anything.")
# The train config's flags, by their TrainConfig names: a command passes those of its locals() set.
TRAIN_FLAGS = ("device", "batch_size", "workers", "epochs", "steps", "lr", "seed", "eval_every", "time_budget", "save_every",
               "skip_nonfinite", "log_every", "precision", "compile", "deterministic", "wandb")

# --- runs and generation --------------------------------------------------------------------------
TokenizerDirOpt = typer.Option(Path("runs/tokenizer"), "--tokenizer", "-t", help="Tokenizer run directory.")
PriorDirOpt = typer.Option(Path("runs/prior"), "--prior", help="Prior run directory (VQ-VAE tokenizers only).")
PipelineOpt = typer.Option(None, "--pipeline", help="A saved pipeline (a folder written by `vq save`) or a Hugging Face Hub id (user/name); stands for --tokenizer and --prior.")
RevisionOpt = typer.Option(None, "--revision", help="With a Hub id: the branch, tag or commit to load (default: main).")
CODES_HELP = "Directory of exported code maps (default: TOKENIZER/codes, so each tokenizer keeps its own)."
GuidanceOpt = typer.Option(2.0, "--guidance", "-g", help="Classifier-free guidance scale, 0 to 100: 1 = none; higher = more typical of the class, less varied.")
ClassGuidanceOpt = typer.Option(None, "--class-guidance", help="With a sketch and a class: the class's own guidance scale on top of the sketch's (--guidance); higher = more of the class, less tied to the lines (default: twice --guidance for a drawing, none of its own at --guidance 1 or less; test sketches in eval: --guidance).")
TempOpt = typer.Option(1.0, "--temperature", help="Sampling temperature: 0 = greedy, else 0.001 to 100.")
# Sampling numbers are checked by the library, with the rule and message the API and the studio give.
TopKOpt = typer.Option(None, "--top-k", help="Sample only among the k likeliest codes; 0 = all of them (default: the prior's own, saved with it: 64 for an autoregressive demo prior, else none).")
TopPOpt = typer.Option(None, "--top-p", help="Sample only within the smallest set of codes holding this probability, in (0, 1]; 1 = no cut (default: the prior's own, else none).")
StepsDecodeOpt = typer.Option(None, "--steps", help="A masked prior's decoding iterations (default: its own, 8); an autoregressive prior draws one code per step and refuses it.")
SampleSeedOpt = typer.Option(None, "--seed", help="Seed: the same seed gives the same images (default: a fresh one, printed so it can be repeated).")
KeepOpt = typer.Option("top", "--keep", parser=library_choice("a side", sides), help="Region to keep: top, bottom, left or right (or give --mask).")
