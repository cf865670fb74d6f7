"""Nothing a user has breaks: runs and a saved pipeline made before the house plan (issue 27)
load and give the same pixels, completions and codes for a seed (`fixtures/legacy`)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vq.pipeline import Pipeline
from test_cli import vq
from test_pipeline import needs_fashion_mnist

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
INPUTS = LEGACY / "inputs"


@pytest.fixture(scope="module")
def expected():
    return load_file(LEGACY / "expected.safetensors")


@pytest.mark.parametrize("name, prior", [("runs", "prior"), ("masked", "masked"), ("sketch", "sketch")])
def test_old_runs_give_the_same_images(expected, name, prior):
    pipe = Pipeline.from_pretrained(LEGACY / "runs" / "tokenizer", LEGACY / "runs" / prior, device="cpu")
    assert torch.equal(pipe.sample(n=2, seed=3, output_type="pt"), expected[f"{name}/sample"])
    # paste=False: the completions as drawn then, before the kept pixels were pasted back by default
    done = pipe.complete(INPUTS / "test0.png", mask="top", n=2, seed=5, classes="Ankle boot", paste=False, output_type="pt")
    assert torch.equal(done, expected[f"{name}/complete"])
    done = pipe.complete(INPUTS / "test1.png", mask=INPUTS / "left-mask.png", n=2, seed=6, paste=False, output_type="pt")
    assert torch.equal(done, expected[f"{name}/complete_mask"])
    if name == "sketch":
        drawn = pipe.sample("Ankle boot", n=2, seed=4, sketch=INPUTS / "boot.jpg", output_type="pt")
        assert torch.equal(drawn, expected["sketch/drawing"])
        alone = pipe.sample(n=2, seed=4, sketch=INPUTS / "boot.jpg", output_type="pt")
        assert torch.equal(alone, expected["sketch/drawing_alone"])
    if name == "runs":
        codes = pipe.encode([INPUTS / f"test{i}.png" for i in range(3)])
        assert torch.equal(codes, expected["runs/encode"])


def test_an_old_saved_pipeline_gives_the_same_images(expected):
    pipe = Pipeline.from_pretrained(LEGACY / "saved", device="cpu")
    assert torch.equal(pipe.sample(n=2, seed=3, output_type="pt"), expected["saved/sample"])
    done = pipe.complete(INPUTS / "test0.png", mask="top", n=2, seed=5, paste=False, output_type="pt")
    assert torch.equal(done, expected["saved/complete"])


@needs_fashion_mnist
def test_an_old_prior_run_resumes(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(LEGACY / "runs", runs)
    r = vq("fit-prior", "--tokenizer", runs / "tokenizer", "--out", runs / "prior", "--resume", "--steps", "32")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr and "at step 30" in r.stderr
    assert Pipeline.from_pretrained(runs / "tokenizer", runs / "prior", device="cpu").sample("bag", n=1, seed=0)


def test_sampling_a_saved_pipeline_needs_none_of_the_studio_hub_or_tracking_libraries():
    # The GPU machine and a slim install lack them: each is imported where its feature is used.
    code = ("import sys; from vq.pipeline import Pipeline; "
            f"Pipeline.from_pretrained({str(LEGACY / 'saved')!r}, device='cpu').sample(n=1, seed=0); "
            "print(sorted(m for m in ('gradio', 'huggingface_hub', 'wandb', 'datasets', 'torch_fidelity') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
