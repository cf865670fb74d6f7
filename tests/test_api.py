"""The Python API, `vq.pipeline.Pipeline`, on the suite's small trained runs: the README's session
runs as written; the command line and the API give the same pixels for a seed; bad input is a
one-line VQError; threads sharing one Pipeline get what they would get alone."""

import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vq.pipeline import Pipeline
from test_cli import vq
from test_images import refusal
from test_pipeline import needs_fashion_mnist

README = Path(__file__).resolve().parents[1] / "README.md"


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def pipe(chain):
    return Pipeline.from_pretrained(chain / "tokenizer", chain / "prior", device="cpu")


def readme_session() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


@needs_fashion_mnist
def test_the_readme_session_runs(chain, tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    for part in ("tokenizer", "prior"):
        (tmp_path / "runs" / part).symlink_to(chain / part)
    monkeypatch.chdir(tmp_path)
    session: dict = {}
    exec(compile(readme_session(), "README.md", "exec"), session)
    images, pipe = session["images"], session["pipe"]
    assert len(images) == 80 and all(img.size == (28, 28) and img.mode == "L" for img in images)
    assert Image.open("samples.png").size == session["grid"].size == (8 * 30 + 2, 10 * 30 + 2)
    assert session["sneakers"].shape == (4, 1, 28, 28) and session["sneakers"].dtype == torch.uint8
    assert len(session["completions"]) == 4 and Path("completions.png").exists()
    assert session["codes"].shape == (4, 7, 7) and session["codes"].dtype == torch.int64
    assert int(session["codes"].max()) < pipe.codebook_size
    for a, b in zip(session["decoded"], session["reconstructed"]):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert pipe.class_names[7] == "Sneaker" and pipe.code_shape == (7, 7) and pipe.conditions == {"class"}


@needs_fashion_mnist
def test_the_cli_and_the_api_give_the_same_pixels(chain, pipe, tmp_path):
    base = ("--tokenizer", chain / "tokenizer", "--prior", chain / "prior", "--device", "cpu")
    r = vq("sample", *base, "--class", "bag", "-n", "3", "--seed", "11", "-g", "1.5", "--top-k", "8", "--out", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    api = pipe.sample("bag", n=3, seed=11, guidance=1.5, top_k=8)
    assert [np.array_equal(pixels(tmp_path / "s" / f"bag_{i}.png"), np.asarray(api[i])) for i in range(3)] == [True] * 3
    # Completion through a mask image (white = keep) that keeps codes after unknown ones: reranked draws.
    source = pixels(tmp_path / "s" / "bag_0.png")
    mask = np.full((28, 28), 255, np.uint8)
    mask[:14, 7:21] = 0
    Image.fromarray(source).save(tmp_path / "bag.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    r = vq("complete", tmp_path / "bag.png", *base, "--mask", tmp_path / "mask.png", "-n", "2", "--seed", "5", "--out", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    api = pipe.complete(tmp_path / "bag.png", mask=mask > 0, n=2, seed=5, output_type="pt")
    assert all(np.array_equal(pixels(tmp_path / "c" / f"completion_{i}.png"), api[i, 0].numpy()) for i in range(2))


@needs_fashion_mnist
def test_completion_keeps_the_known_codes(pipe):
    from vq.pipeline.generate.options import SamplingOptions
    from vq.pipeline.generate.plans import plan_completion

    image = pipe.sample("trouser", n=1, seed=3)[0]
    keep = np.zeros((28, 28), bool)
    keep[:, 14:] = True  # the right half: on every row, known codes follow unknown ones
    request = plan_completion(pipe.tokenizer_info, pipe.prior_info, image, keep, n=3, options=SamplingOptions(seed=4))
    done = pipe.run_completion(request)
    expected = torch.zeros(7, 7, dtype=torch.bool)
    expected[:, 3:] = True  # cells at least half inside the kept half: column 3 is half in
    assert torch.equal(done.known, expected) and (done.known_codes, done.codes) == (28, 49)
    assert torch.equal(done.code_maps[:, expected], pipe.encode(image)[:, expected].expand(3, -1))
    assert not torch.equal(done.code_maps[0], done.code_maps[1])  # the left half is drawn anew each time
    assert done.images.shape == (3, 1, 28, 28) and done.images.dtype == torch.uint8


@needs_fashion_mnist
def test_completion_shows_the_kept_pixels_as_given(pipe):
    """Pasted back with a soft seam inside the kept region (default), never outside it; --no-paste
    shows what the tokenizer redraws from the known codes (what `vq eval` judges)."""
    image = np.asarray(pipe.sample("sneaker", n=1, seed=3)[0]).copy()
    image[::3, ::2] = 255 - image[::3, ::2]  # fine detail a 7x7 code grid cannot keep
    keep = np.zeros((28, 28), bool)
    keep[:, 14:] = True
    pasted = pipe.complete(image, mask=keep, n=2, seed=4, output_type="pt")[:, 0].numpy()
    redrawn = pipe.complete(image, mask=keep, n=2, seed=4, paste=False, output_type="pt")[:, 0].numpy()
    assert (pasted[:, :, 16:] == image[:, 16:]).all()  # a seam's width (1 pixel at 28) inside: the user's pixels
    assert not (redrawn[:, :, 16:] == image[:, 16:]).all()
    assert (pasted[:, :, :14] == redrawn[:, :, :14]).all()  # outside the kept region: untouched
    seam = pasted[:, :, 14:16].astype(int)
    low, high = np.minimum(redrawn[:, :, 14:16], image[:, 14:16]), np.maximum(redrawn[:, :, 14:16], image[:, 14:16])
    assert ((seam >= low.astype(int) - 1) & (seam <= high.astype(int) + 1)).all()  # a blend of the two


@needs_fashion_mnist
def test_a_prior_whose_training_stopped_early_is_said_so(chain, pipe, tmp_path):
    """The CLI, `vq eval` and the studio's Model tab read `training_notes`; finished runs have none."""
    import shutil
    from dataclasses import replace

    from vq.pipeline.files import STATE_FILE
    from vq.pipeline.train.state import TrainState
    from vq.stage2_prior import AutoregressivePrior

    assert pipe.training_notes == []
    stopped = tmp_path / "stopped-prior"
    shutil.copytree(chain / "prior", stopped, symlinks=True)
    state = TrainState.load(stopped / STATE_FILE, AutoregressivePrior)
    replace(state, step=5, finished=False).save(stopped / STATE_FILE, AutoregressivePrior)  # as a Ctrl-C at step 5 leaves it
    notes = Pipeline.from_pretrained(chain / "tokenizer", stopped, device="cpu").training_notes
    assert len(notes) == 1 and "stopped-prior stopped at step 5 of 10" in notes[0] and "--resume" in notes[0]
    r = vq("sample", "--tokenizer", chain / "tokenizer", "--prior", stopped, "-c", "bag", "-n", "1", "--out", tmp_path / "s")
    assert r.returncode == 0 and "note: the prior stopped-prior stopped at step 5 of 10" in r.stderr, r.stderr


@needs_fashion_mnist
def test_the_seed_of_an_unseeded_call_is_there_to_repeat_it(pipe):
    first = pipe.sample("bag", n=2, output_type="pt")
    seed = pipe.last_seed
    assert isinstance(seed, int) and torch.equal(pipe.sample("bag", n=2, seed=seed, output_type="pt"), first)
    image = np.asarray(pipe.sample("bag", n=1, seed=1)[0])
    done = pipe.complete(image, n=2, output_type="pt")
    assert torch.equal(pipe.complete(image, n=2, seed=pipe.last_seed, output_type="pt"), done)


@needs_fashion_mnist
def test_a_prior_samples_with_its_saved_cuts_unless_a_call_sets_them(chain, pipe, tmp_path):
    from dataclasses import replace

    from vq.pipeline.generate.plans import plan_samples
    from vq.pipeline.records import PriorRecord, SamplingDefaults
    from vq.stage2_prior import SamplingOptions

    assert PriorRecord.read(chain / "prior").sampling == SamplingDefaults(top_k=64)  # a demo prior's, saved with it
    saved = replace(pipe.prior_info, sampling=SamplingDefaults(top_k=3, top_p=0.5))
    cuts = lambda **kw: (lambda o: (o.top_k, o.top_p))(  # noqa: E731
        plan_samples(pipe.tokenizer_info, saved, "bag", 1, options=SamplingOptions(**kw)).options)
    assert cuts() == (3, 0.5)
    assert cuts(top_k=0, top_p=1.0) == (None, 1.0)  # 0: no cut
    assert cuts(top_k=7) == (7, 0.5)
    no_cuts = replace(pipe.prior_info, sampling=SamplingDefaults())
    assert plan_samples(pipe.tokenizer_info, no_cuts, "bag", 1, options=SamplingOptions()).options.top_k is None
    # The pixels, of a copy of the prior saved with a top-k of 2 (of its 16 codes): unset is the
    # saved cut, as an explicit 2 and unlike no cut.
    import json
    import shutil

    shutil.copytree(chain / "prior", tmp_path / "prior")
    info = json.loads((tmp_path / "prior" / "config.json").read_text())
    (tmp_path / "prior" / "config.json").write_text(json.dumps({**info, "sampling": {"top_k": 2}}))
    cut = Pipeline.from_pretrained(chain / "tokenizer", tmp_path / "prior", device="cpu")
    first = cut.sample("bag", n=8, seed=3, output_type="pt")
    assert torch.equal(first, cut.sample("bag", n=8, seed=3, top_k=2, output_type="pt"))
    assert torch.equal(cut.sample("bag", n=8, seed=3, top_k=0, output_type="pt"), pipe.sample("bag", n=8, seed=3, output_type="pt"))
    assert not torch.equal(first, pipe.sample("bag", n=8, seed=3, output_type="pt"))


@needs_fashion_mnist
def test_bad_input_is_one_line(chain, pipe, tmp_path):
    assert "unknown class 'dog'; valid classes: T-shirt/top" in refusal(pipe.sample, "dog")
    assert "class index 10 is out of range" in refusal(pipe.sample, 10)
    assert "n must be a whole number from 1 to 100,000, got 0" == refusal(pipe.sample, "bag", n=0)
    assert "guidance must be a number from 0 to 100 (1 = no guidance), got -1" == refusal(pipe.sample, "bag", guidance=-1)
    assert "top_p must lie in (0, 1] (1 = no cut), got 1.5" == refusal(pipe.sample, "bag", top_p=1.5)
    # The API's own names, never the command line's flags.
    assert "steps is a sampling setting of masked priors; this autoregressive prior has none" == refusal(pipe.sample, "bag", steps=8)
    assert "--" not in refusal(pipe.sample, "bag", n=2.5) + refusal(pipe.complete, np.zeros((28, 28), np.uint8), n=0)
    assert "trained without sketches" in refusal(pipe.sample, sketch=np.eye(28))
    assert "unknown output_type 'np'" in refusal(pipe.sample, "bag", output_type="np")
    assert "does not exist" in refusal(pipe.complete, tmp_path / "missing.png")
    assert "keeps nothing" in refusal(pipe.complete, np.zeros((28, 28), np.uint8), mask=np.zeros((5, 5), bool))
    assert "unknown mask side 'middle'" in refusal(pipe.complete, np.zeros((28, 28), np.uint8), mask="middle")
    assert "one class" in refusal(pipe.complete, np.zeros((28, 28), np.uint8), classes=["bag", "shirt"])
    assert "got (2, 2)" in refusal(pipe.decode, torch.zeros(2, 2, dtype=torch.long))
    assert "must lie in [0, 16)" in refusal(pipe.decode, torch.full((1, 7, 7), 16))
    assert "has shape (2, 3, 4, 5)" in refusal(pipe.encode, [np.zeros((2, 3, 4, 5))])
    assert "no tokenizer at" in refusal(Pipeline.from_pretrained, tmp_path / "nope", chain / "prior")
    assert "pass the prior's run directory" in refusal(Pipeline.from_pretrained, chain / "tokenizer")
    assert "holds a tokenizer, not a prior" in refusal(Pipeline.from_pretrained, chain / "tokenizer", chain / "tokenizer")


@needs_fashion_mnist
def test_threads_sharing_one_pipeline_get_what_they_would_alone(pipe):
    alone = {seed: pipe.sample("sneaker", n=6, seed=seed, output_type="pt") for seed in (1, 2, 3, 4)}
    got: dict = {}

    def work(seed):
        for _ in range(3):
            got.setdefault(seed, []).append(pipe.sample("sneaker", n=6, seed=seed, output_type="pt"))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in alone]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(x, alone[seed]) for seed, xs in got.items() for x in xs) and len(got) == 4


def test_a_vae_pipeline_needs_no_prior(vae_runs):
    # vae_runs: `vq fit-tokenizer --model vae / cvae` on the shapes folder (conftest)
    cvae = Pipeline.from_pretrained(vae_runs / "cvae", device="cpu")
    assert cvae.code_shape is None and cvae.codebook_size is None and cvae.conditions == {"class"}
    images = cvae.sample(["square", 0], n=2, seed=0)
    assert len(images) == 4 and images[0].size == (16, 16)
    assert len(cvae.reconstruct([images[0]], classes="square")) == 1
    assert "given its class" in refusal(cvae.reconstruct, images[0])
    vae = Pipeline.from_pretrained(vae_runs / "vae", device="cpu")
    assert vae.conditions == frozenset() and len(vae.sample(n=3, seed=0)) == 3
    assert "unconditional VAE" in refusal(vae.sample, "square")
    assert "no discrete codes to encode" in refusal(vae.encode, images[0])
    assert "completion needs a VQ-VAE" in refusal(vae.complete, images[0])
