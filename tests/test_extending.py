"""A new kind is one file: a tokenizer kind and a prior kind written here alone, each registered with
one call, go through every command (fit-tokenizer, export-codes, fit-prior, sample, complete,
eval, save), load back from a saved folder with the same pixels, and serve the studio's /sample;
and `VQ_PLUGINS` makes them known to a `vq` process of their own. No library file names them.

- `PatchMean`: the mean of each patch of the image, quantised to a few levels; decoding repeats
  each level over its patch, times a brightness it learns.
- `PositionPrior`: each code drawn on its own from a table per class and position (the last row
  for no class), guided against that row."""

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from vq.stage1_vqvae import TOKENIZERS, Tokenizer, TokenizerOutput, register_tokenizer
from vq.stage2_prior import PRIORS, HeldOut, Prior, PriorOutput, SamplingOptions, register_prior
from vq.stage2_prior.sampling import draw

ROOT = Path(__file__).resolve().parents[1]


# --- the tokenizer kind ----------------------------------------------------------------------------

@dataclass
class PatchMeanConfig:
    channels: int = 1
    image_size: int = 16
    patch: int = 4
    levels: int = 8

    RANGES: ClassVar[dict] = {"channels": (1, 4), "image_size": (1, 1024), "patch": (1, 64), "levels": (2, 256)}

    def validate(self) -> None:
        if self.image_size % self.patch:
            raise ValueError(f"image size {self.image_size} is not divisible by the patch {self.patch}")


class PatchMean(Tokenizer):
    name = "patch-mean"
    summary = "the mean of each patch, quantised to a few levels"
    config_class = PatchMeanConfig
    presets = {"demo": ({}, {"steps": 4, "batch_size": 8, "eval_every": 4, "warmup_steps": 1})}
    discrete = True

    def __init__(self, config: PatchMeanConfig):
        super().__init__(config)
        self.gain = nn.Parameter(torch.ones(()))  # a brightness the decoder learns: something to train

    @classmethod
    def codes_of(cls, c: PatchMeanConfig):
        side = c.image_size // c.patch
        return (side, side), c.levels

    @staticmethod
    def image_memory(c: PatchMeanConfig):
        return 16 * c.channels * c.image_size**2, "the image itself"

    def encode_indices(self, images: torch.Tensor) -> torch.Tensor:
        means = F.avg_pool2d(images.float().mean(1, keepdim=True), self.config.patch)[:, 0]
        return ((means + 1) / 2 * (self.config.levels - 1)).round().clamp(0, self.config.levels - 1).long()

    def decode_indices(self, codes: torch.Tensor) -> torch.Tensor:
        levels = codes.float() / (self.config.levels - 1) * 2 - 1
        x = F.interpolate(levels[:, None], scale_factor=self.config.patch, mode="nearest") * self.gain
        return x.clamp(-1, 1).expand(-1, self.config.channels, -1, -1)

    def reconstruct(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode_indices(self.encode_indices(images))

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None, step: int = 0) -> TokenizerOutput:
        recon = self.reconstruct(images)
        loss = F.mse_loss(recon, images.float())
        return TokenizerOutput(recon, loss, {"rec": loss.detach()})


# --- the prior kind --------------------------------------------------------------------------------

@dataclass
class PositionConfig:
    codebook_size: int = 8
    height: int = 4
    width: int = 4
    num_classes: int = 3

    RANGES: ClassVar[dict] = {"codebook_size": (1, 65536), "height": (1, 64), "width": (1, 64), "num_classes": (1, 1000)}

    def validate(self) -> None:
        """Nothing between fields to check."""

    @property
    def conditions(self) -> frozenset[str]:
        return frozenset({"class"})


class PositionPrior(Prior):
    name = "per-position"
    summary = "each code drawn on its own, from a table per class and position"
    config_class = PositionConfig
    presets = {"demo": ({}, {"steps": 20, "batch_size": 8, "lr": 0.05, "warmup_steps": 1, "eval_every": 20})}
    exact_likelihood = True
    any_mask = True
    parallel_decoding = True
    held_out = HeldOut("bits_per_code", "test bits / code", "val_bits")

    def __init__(self, config: PositionConfig):
        super().__init__(config)
        c = config
        self.table = nn.Parameter(torch.zeros(c.num_classes + 1, c.height * c.width, c.codebook_size))

    @staticmethod
    def image_memory(c: PositionConfig):
        return 4 * 3 * c.height * c.width * c.codebook_size, "its table"

    def log_probs(self, labels: torch.Tensor | None, b: int) -> torch.Tensor:
        """(b,) classes (None, -1: none) -> (b, n, k) log-probabilities of each code at each position."""
        none = self.config.num_classes
        rows = torch.full((b,), none, device=self.table.device) if labels is None else torch.where(labels < 0, none, labels)
        return self.table.log_softmax(-1)[rows]

    def score(self, codes, labels, mask=None, sketch=None) -> torch.Tensor:
        lp = self.log_probs(labels, codes.shape[0]).gather(-1, codes.flatten(1)[..., None])[..., 0]
        return (lp * (mask.flatten(1) if mask is not None else 1)).sum(-1)

    def forward(self, codes, labels=None, sketch=None, step: int = 0) -> PriorOutput:
        b = codes.shape[0]
        loss = -(self.score(codes, labels) + self.score(codes, None)).mean() / codes[0].numel()  # the no-class row learns too
        return PriorOutput(self.log_probs(labels, b), loss, {"nll": loss.detach()})

    def held_out_nats(self, codes, labels, sketch=None, generator=None) -> torch.Tensor:
        return -self.score(codes, labels) / codes[0].numel()

    def sample(self, labels, *, options: SamplingOptions, generator=None, known=None, known_mask=None, sketch=None):
        b, c = labels.shape[0], self.config
        cond, none = self.log_probs(labels, b), self.log_probs(None, b)
        logits = cond + (options.guidance - 1) * (cond - none)
        codes = draw(logits.flatten(0, 1), options.temperature, options.top_k, options.top_p, generator).view(b, c.height, c.width)
        return codes if known is None else torch.where(known_mask, known, codes)


def register() -> None:
    """The one call that makes both kinds known to vq."""
    register_tokenizer(PatchMean)
    register_prior(PositionPrior)


# --- the kinds through every command -----------------------------------------------------------------

@pytest.fixture
def kinds():
    register()
    yield
    TOKENIZERS.pop(PatchMean.name)
    PRIORS.pop(PositionPrior.name)


def run(*args) -> str:
    from vq.cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_new_tokenizer_and_prior_kind_go_through_every_command(kinds, image_folder, tmp_path):
    from vq.pipeline import Pipeline
    from vq.pipeline.evaluate.report import EvalReport

    tok, prior = tmp_path / "tok", tmp_path / "prior"
    run("fit-tokenizer", "--model", "patch-mean", "--data", image_folder, "--out", tok)
    run("export-codes", "--tokenizer", tok)
    run("fit-prior", "--kind", "per-position", "--tokenizer", tok, "--out", prior)
    run("sample", "--tokenizer", tok, "--prior", prior, "-c", "circle", "-n", "3", "--seed", "5", "--out", tmp_path / "s")
    pipe = Pipeline.from_pretrained(tok, prior, device="cpu")
    assert pipe.code_shape == (4, 4) and pipe.codebook_size == 8 and repr(pipe).startswith("Pipeline(tokenizer=patch-mean")
    api = pipe.sample("circle", n=3, seed=5, output_type="pt")
    from PIL import Image

    assert all(np.array_equal(np.asarray(Image.open(tmp_path / "s" / f"circle_{i}.png")), api[i, 0].numpy()) for i in range(3))
    image = next((image_folder / "square").iterdir())
    run("complete", image, "--tokenizer", tok, "--prior", prior, "--keep", "left", "-n", "2", "--out", tmp_path / "c")
    done = pipe.complete(image, mask="left", n=2, seed=1, output_type="pt")
    assert torch.equal(done[:, :, :, :8], done[:1, :, :, :8].expand(2, -1, -1, -1))  # the kept half: the same codes
    run("eval", "--tokenizer", tok, "--prior", prior, "--per-class", "4", "--complete-images", "2", "--classifier", tmp_path / "cls")
    report = EvalReport.read(prior / "eval.json")
    assert report.prior["label"] == "test bits / code" and report.prior["bits"] > 0 and report.samples["n"] == 12
    run("save", tmp_path / "saved", "--tokenizer", tok, "--prior", prior, "--name", "someone/patches")
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "- patch-mean" in card and "- per-position-prior" in card and "test bits / code" in card
    saved = Pipeline.from_pretrained(tmp_path / "saved", device="cpu")
    assert torch.equal(saved.sample("circle", n=3, seed=5, output_type="pt"), api)
    assert studio_sample(saved) == [a[0].tolist() for a in api.numpy()]


def studio_sample(pipe) -> list:
    """/sample of the studio over `pipe`, served in this process: the images' pixels."""
    from gradio_client import Client

    from vq.pipeline.serve.app import build_app, launch, private_files
    from vq.pipeline.serve.guard import served_hosts

    with private_files() as folder:
        app = build_app(pipe, folder, max_n=4)
        try:
            url = launch(app, "127.0.0.1", free_port(), served_hosts("127.0.0.1"))
            result = Client(url, verbose=False).predict(class_name="circle", n=3, seed=5, api_name="/sample")
            from PIL import Image

            return [np.asarray(Image.open(item["image"])).tolist() for item in result]
        finally:
            app.close()


def test_vq_plugins_makes_the_kinds_known_to_a_command_of_its_own():
    env = {**os.environ, "VQ_PLUGINS": "test_extending:register", "PYTHONPATH": str(ROOT / "tests")}
    r = subprocess.run([sys.executable, "-m", "vq.cli.main", "kinds"], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "patch-mean" in r.stdout and "per-position" in r.stdout and "exact likelihood" in r.stdout
