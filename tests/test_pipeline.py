"""Every command chained on a small slice of real Fashion-MNIST, and the refusals around them."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vq.pipeline.data.idx import fashion_mnist_dir
from vq.pipeline.codes.maps import load_codes
from test_cli import assert_one_line_error, digest, vq

TOKENIZER_TOML = """
[model]
hidden = 16
res_blocks = 1
code_dim = 8
codebook_size = 16
[train]
steps = 20
batch_size = 32
eval_every = 10
"""
PRIOR_TOML = """
[model]
dim = 64
depth = 1
heads = 2
[train]
steps = 10
batch_size = 32
eval_every = 5
"""

needs_fashion_mnist = pytest.mark.skipif(fashion_mnist_dir() is None, reason="Fashion-MNIST idx files not installed (make test installs them)")


@needs_fashion_mnist
def test_export_and_prior_artifacts(chain):
    tok = json.loads((chain / "tokenizer" / "config.json").read_text())
    meta = json.loads((chain / "codes" / "meta.json").read_text())
    assert meta["tokenizer_fingerprint"] == tok["fingerprint"] and meta["codebook_size"] == 16
    assert meta["grid"] == [7, 7] and meta["class_names"][7] == "Sneaker" and meta["splits"] == {"train": 300, "test": 300}
    codes = load_codes(chain / "codes")
    train = codes.splits["train"].to_memory(16)
    assert train.images.shape == (300, 7, 7) and codes.record.dtype == "uint16"
    assert int(codes.splits["test"].to_memory(16).images.max()) < 16 and train.labels.shape == (300,)
    assert codes.splits["train"][0][0].dtype == torch.int64  # what the prior reads, memory-mapped
    prior = json.loads((chain / "prior" / "config.json").read_text())
    assert prior["kind"] == "prior" and prior["tokenizer_fingerprint"] == tok["fingerprint"]
    assert prior["metrics"]["test_bits_per_token"] > 0 and prior["metrics"]["test_bits_per_dim"] > 0
    # Re-exporting for the same tokenizer reuses the export.
    before = digest(chain / "codes")
    r = vq("export-codes", "--tokenizer", chain / "tokenizer", "--out", chain / "codes")
    assert r.returncode == 0 and "reusing" in r.stderr and digest(chain / "codes") == before


@needs_fashion_mnist
def test_sample_by_class_is_seeded(chain):
    args = ("sample", "--tokenizer", chain / "tokenizer", "--prior", chain / "prior", "-n", "4", "--seed", "3")
    r1 = vq(*args, "--class", "sneaker", "--out", chain / "s1")
    r2 = vq(*args, "--class", "Sneaker", "--out", chain / "s2")
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    files = sorted(p.name for p in (chain / "s1").iterdir())
    assert files == ["grid.png", "sneaker_0.png", "sneaker_1.png", "sneaker_2.png", "sneaker_3.png"]
    assert digest(chain / "s1") == digest(chain / "s2")
    assert Image.open(chain / "s1" / "sneaker_0.png").size == (28, 28)
    r = vq(*args[:-2], "--seed", "4", "--class", "sneaker", "--out", chain / "s3")
    assert digest(chain / "s3") != digest(chain / "s1")
    r = vq("sample", "--tokenizer", chain / "tokenizer", "--prior", chain / "prior", "--per-class", "2", "--out", chain / "all")
    assert r.returncode == 0, r.stderr
    assert len(list((chain / "all").glob("*_[01].png"))) == 20  # one row per class


@needs_fashion_mnist
def test_sample_without_a_seed_draws_a_new_one_and_prints_it(chain):
    args = ("sample", "--tokenizer", chain / "tokenizer", "--prior", chain / "prior", "-c", "bag", "-n", "2")
    runs = [vq(*args, "--out", chain / f"fresh{i}") for i in range(2)]
    seeds = []
    for r in runs:
        assert r.returncode == 0, r.stderr
        found = re.search(r"seed (\d+) \(repeat with --seed (\d+)\)", r.stderr)
        assert found and found[1] == found[2] and re.search(rf"seed\W+{found[1]}\b", r.stdout)  # and in the summary
        seeds.append(found[1])
    assert seeds[0] != seeds[1] and digest(chain / "fresh0") != digest(chain / "fresh1")
    r = vq(*args, "--seed", seeds[0], "--out", chain / "again")
    assert r.returncode == 0 and f"seed {seeds[0]} " in r.stderr, r.stderr
    assert digest(chain / "again") == digest(chain / "fresh0")


@needs_fashion_mnist
def test_complete_an_rgba_image_of_another_size(chain, tmp_path):
    img = Image.new("RGBA", (90, 60), (0, 0, 0, 255))
    img.paste((255, 255, 255, 255), (30, 10, 60, 50))
    img.save(tmp_path / "shirt.png")
    r = vq("complete", tmp_path / "shirt.png", "--tokenizer", chain / "tokenizer", "--prior", chain / "prior",
           "-n", "3", "--class", "shirt", "--keep", "left", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "90x60 colour with transparency -> 28x28 grey" in r.stderr
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert names == {"completion_0.png", "completion_1.png", "completion_2.png", "masked.png", "grid.png"}
    assert Image.open(tmp_path / "out" / "grid.png").size[0] > 5 * 28


@needs_fashion_mnist
def test_refusals_write_nothing(chain, tmp_path):
    base = ("--tokenizer", chain / "tokenizer", "--prior", chain / "prior")
    out = tmp_path / "out"
    assert_one_line_error(vq("sample", *base, "--class", "dog", "--out", out), "unknown class 'dog'; valid classes: T-shirt/top, Trouser")
    assert_one_line_error(vq("sample", "--tokenizer", chain / "tokenizer", "--prior", tmp_path / "nope", "--out", out), "no prior at")
    assert_one_line_error(vq("complete", tmp_path / "missing.png", *base, "--out", out), "does not exist")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    assert_one_line_error(vq("complete", tmp_path / "bad.png", *base, "--out", out), "cannot read image")
    # Extreme numbers: checked for range before use, one line each.
    for flags, words in ((("--seed", str(10**30)), "seed must be a whole number from 0 to 18,446,744,073,709,551,615"),
                         (("--guidance", "1e308"), "guidance must be a number from 0 to 100"),
                         (("--temperature", "1e-40"), "temperature must be a number from 0.001 to 100"),
                         (("--top-k", str(2**40)), "top_k must be a whole number from 0 to")):
        assert_one_line_error(vq("sample", *base, "--class", "bag", *flags, "--out", out), words)
    # A second tokenizer: the first one's prior and codes must be refused with it.
    r = vq("fit-tokenizer", "--data", "fashion-mnist", "--limit", "64", "--config", chain / "tok.toml", "--steps", "2", "--seed", "1", "--out", tmp_path / "tok2")
    assert r.returncode == 0, r.stderr
    assert_one_line_error(vq("sample", "--tokenizer", tmp_path / "tok2", "--prior", chain / "prior", "--out", out), "another tokenizer")
    before = digest(chain / "codes")
    assert_one_line_error(vq("export-codes", "--tokenizer", tmp_path / "tok2", "--out", chain / "codes"), "codes of another tokenizer")
    assert digest(chain / "codes") == before
    assert not out.exists()
    # Sampling again into the same folder refuses to overwrite.
    assert vq("sample", *base, "--class", "bag", "-n", "1", "--out", out).returncode == 0
    assert_one_line_error(vq("sample", *base, "--class", "bag", "-n", "1", "--out", out), "already holds")


def test_vae_tokenizers_sample_by_their_latent_prior(tmp_path, vae_runs):
    runs = vae_runs  # fit-tokenizer --model vae / cvae on the shapes folder (conftest)
    r = vq("sample", "--tokenizer", runs / "cvae", "--class", "square", "-n", "3", "--out", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["grid.png", "square_0.png", "square_1.png", "square_2.png"]
    assert_one_line_error(vq("sample", "--tokenizer", runs / "vae", "--class", "square", "--out", tmp_path / "v"), "unconditional VAE")
    r = vq("sample", "--tokenizer", runs / "vae", "-n", "2", "--out", tmp_path / "v")
    assert r.returncode == 0 and (tmp_path / "v" / "sample_1.png").exists()
    assert_one_line_error(vq("fit-prior", "--tokenizer", runs / "vae", "--out", tmp_path / "p"), "no codes for a prior")
    assert not Path(tmp_path / "p").exists() and not (runs / "vae" / "codes").exists()


@needs_fashion_mnist
def test_eval_writes_a_complete_report(chain, tmp_path):
    r = vq("eval", "--tokenizer", chain / "tokenizer", "--prior", chain / "prior", "--per-class", "4",
           "--complete-images", "6", "--classifier", chain / "classifier", "--out", tmp_path / "eval.json")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "eval.json").read_text())
    assert 0 <= rep["classifier"]["test_acc"] <= 1
    assert set(rep["tokenizer"]) == {"mse", "psnr", "ssim", "sharpness", "usage", "perplexity"}
    assert rep["prior"]["name"] == "bits_per_token" and rep["prior"]["bits"] > 0 and rep["prior"]["bits_per_dim"] > 0
    for key in ("real_train", "reconstructions", "samples"):
        assert rep[key]["n"] == 40 and 0 <= rep[key]["acc"] <= 1 and rep[key]["fd"] >= 0
        assert set(rep[key]["per_class"]) == set(json.loads((chain / "codes" / "meta.json").read_text())["class_names"])
    assert rep["completion"]["n"] == 6 and 0 <= rep["completion"]["acc_with_class"] <= 1
    assert "class acc" in r.stdout and "floor" in r.stdout


@needs_fashion_mnist
def test_wandb_offline_logs_guided_samples_beside_real_images(chain, tmp_path):
    r = vq("fit-prior", "--tokenizer", chain / "tokenizer", "--codes", chain / "codes", "--config", chain / "prior.toml",
           "--steps", "4", "--eval-every", "2", "--out", tmp_path / "prior", "--wandb")
    assert r.returncode == 0, r.stderr
    runs = list((tmp_path / "prior" / "wandb").glob("offline-run-*"))
    previews = sorted(runs[0].glob("files/media/images/val/preview_*.png"))
    assert len(runs) == 1 and len(previews) == 2  # evaluations at steps 2 and 4
    grid = np.asarray(Image.open(previews[-1]))
    # One row per class: 6 real test images of the class, then 6 guided samples of it (28 px, 2 px gaps).
    assert grid.shape[:2] == (10 * 30 + 2, 12 * 30 + 2)
    first_real, first_sample = grid[2:30, 2:30], grid[2:30, 6 * 30 + 2 : 6 * 30 + 30]
    assert first_real.std() > 0 and first_sample.std() > 0


@needs_fashion_mnist
def test_a_masked_prior_through_every_command(chain, tmp_path):
    base = ("--tokenizer", chain / "tokenizer", "--prior", tmp_path / "masked")
    r = vq("fit-prior", "--kind", "masked", "--tokenizer", chain / "tokenizer", "--codes", chain / "codes",
           "--config", chain / "prior.toml", "--out", tmp_path / "masked")
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "masked" / "config.json").read_text())
    assert info["model"] == "masked" and info["metrics"]["test_masked_bits_per_code"] > 0
    assert "test_bits_per_token" not in info["metrics"]  # no likelihood is claimed
    r = vq("sample", *base, "-c", "bag", "-n", "3", "--steps", "4", "--seed", "1", "--out", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["bag_0.png", "bag_1.png", "bag_2.png", "grid.png"]
    mask = np.full((28, 28), 255, np.uint8)
    mask[8:20, 8:20] = 0  # a hole in the middle: known codes on every side of it
    Image.fromarray(mask).save(tmp_path / "mask.png")
    r = vq("complete", tmp_path / "s" / "bag_0.png", *base, "--mask", tmp_path / "mask.png", "-n", "2", "--seed", "2",
           "--out", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert re.search(r"known codes\W+40/49", r.stdout)  # 3x3 cells redrawn, natively
    r = vq("eval", *base, "--per-class", "2", "--complete-images", "4", "--sketch-images", "0", "--steps", "3",
           "--classifier", chain / "classifier", "--out", tmp_path / "eval.json")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["sampling"]["settings"] == {"steps": 3}  # a masked prior's own setting, checked against its kind
    assert report["prior"]["name"] == "masked_bits_per_code" and report["prior"]["bits"] > 0 and "bits_per_dim" not in report["prior"]
    assert "not a likelihood" in r.stdout and report["samples"]["n"] == 20
    assert_one_line_error(vq("sample", "--tokenizer", chain / "tokenizer", "--prior", chain / "prior", "--steps", "4",
                             "-c", "bag", "--out", tmp_path / "ar"), "steps is a sampling setting of masked priors; this autoregressive prior has none")
    assert_one_line_error(vq("fit-prior", "--tokenizer", chain / "tokenizer", "--codes", chain / "codes",
                             "--out", tmp_path / "masked", "--resume"), "resume it with --kind masked")
