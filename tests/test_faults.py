"""Fault injection on a small slice of real Fashion-MNIST: kills at a random step, a full disk,
non-finite losses, locks, broken or foreign checkpoints, moved runs. Each fault ends in one line
and a non-zero exit, and leaves every earlier file as it was."""

import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vq.pipeline.train.state import load_state
from vq.pipeline.data.splits import Split
from vq.pipeline.data.idx import fashion_mnist_dir
from vq.pipeline.data.images import image_batch
from vq.pipeline.errors import VQError
from vq.pipeline.train.config import TrainConfig
from vq.pipeline.train.trainer import fit
from test_cli import assert_one_line_error, digest
from test_pipeline import PRIOR_TOML
from vq_process import run_vq

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "COLUMNS": "200",
       "OMP_NUM_THREADS": "1"}
# Long enough that a kill sent within ~0.6 s of the first save (step 10) lands mid-run with room
# to spare (~30 ms a step on a loaded 2-core machine, ~15 idle), short enough to run three times.
STEPS = 200
TOKENIZER_TOML = f"""
[model]
hidden = 16
res_blocks = 1
code_dim = 8
codebook_size = 16
[train]
steps = {STEPS}
batch_size = 16
eval_every = {STEPS // 2}
save_every = "10"
seed = 3
workers = 0
deterministic = true
"""

pytestmark = pytest.mark.skipif(fashion_mnist_dir() is None, reason="Fashion-MNIST idx files not installed (make test installs them)")


def vq(*args, cwd=None, popen=False):
    cmd = [sys.executable, "-m", "vq.cli.main", *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, cwd=cwd or ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return run_vq(*args, cwd=cwd or ROOT, env=ENV, timeout=600)


def fit_args(root: Path, out: Path) -> list:
    return ["fit-tokenizer", "--data", "fashion-mnist", "--limit", "200", "--config", root / "tok.toml", "--out", out]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted tokenizer run, and a prior on its codes."""
    root = tmp_path_factory.mktemp("faults")
    (root / "tok.toml").write_text(TOKENIZER_TOML)
    (root / "prior.toml").write_text(PRIOR_TOML)
    r = vq(*fit_args(root, root / "straight"))
    assert r.returncode == 0, r.stderr
    r = vq("fit-prior", "--tokenizer", root / "straight", "--config", root / "prior.toml", "--out", root / "prior")
    assert r.returncode == 0, r.stderr
    return root


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def kill_at_a_random_step(root: Path, out: Path, sig: int) -> subprocess.Popen:
    """Start the run, wait until it has saved once, then send `sig` after a random delay."""
    proc = vq(*fit_args(root, out), popen=True)
    deadline = time.time() + 120
    while not (out / "train_state.safetensors").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    delay = random.uniform(0.0, 0.5)
    print(f"signal {sig} after {delay:.3f} s")  # shown when the test fails
    time.sleep(delay)
    proc.send_signal(sig)
    proc.stdout_text, proc.stderr_text = proc.communicate(timeout=120)
    return proc


def test_sigkill_loses_only_the_work_since_the_last_save(runs, tmp_path):
    out = tmp_path / "killed"
    proc = kill_at_a_random_step(runs, out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    saved = load_state(out / "train_state.safetensors")["step"]
    assert 10 <= saved < STEPS and saved % 10 == 0, saved  # a periodic save (every 10 steps), not a finished run
    assert (out / ".lock").exists()  # left behind by the killed process
    r = vq(*fit_args(runs, out), "--resume")
    assert r.returncode == 0, r.stderr
    assert "which is gone; taking the lock over" in r.stderr and f"resuming {out} at step {saved}" in r.stderr
    assert same_weights(runs / "straight" / "model.safetensors", out / "model.safetensors")
    rows = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == [STEPS // 2, STEPS]


def test_sigterm_saves_the_step_it_stopped_at_and_resumes_exactly(runs, tmp_path):
    out = tmp_path / "terminated"
    proc = kill_at_a_random_step(runs, out, signal.SIGTERM)
    assert proc.returncode == 130, proc.stderr_text
    assert "interrupted at step" in proc.stderr_text and "--resume" in proc.stderr_text
    stopped = load_state(out / "train_state.safetensors")["step"]
    assert 10 <= stopped < STEPS
    assert not (out / ".lock").exists()
    r = vq(*fit_args(runs, out), "--resume")
    assert r.returncode == 0, r.stderr
    assert f"resuming {out} at step {stopped}" in r.stderr
    assert same_weights(runs / "straight" / "model.safetensors", out / "model.safetensors")


def assert_error_last(result, pattern):
    """A fault met mid-run: the progress printed before it, then one error line, no traceback."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and pattern in lines[-1], result.stderr
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in result.stderr + result.stdout


def limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail


def test_a_full_disk_keeps_the_previous_checkpoint(runs, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs / "straight", out)
    before = digest(out)
    cmd = [sys.executable, "-m", "vq.cli.main", *map(str, fit_args(runs, out)), "--resume", "--steps", str(STEPS + 20)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=600,
                       preexec_fn=limit_file_size(4096))  # metrics.jsonl fits; the weights do not
    assert_error_last(r, "no space to write")
    assert "the previous version is intact" in r.stderr
    assert digest(out) == before
    assert not list(out.glob(".*.tmp")) and not (out / ".lock").exists()


def test_a_live_lock_is_refused(runs, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs / "straight", out)
    (out / ".lock").write_text(f"{os.getpid()} {socket.gethostname()}")  # this test process: alive
    before = digest(out)
    assert_one_line_error(vq(*fit_args(runs, out), "--resume", "--steps", str(STEPS + 20)), "in use by another vq process")
    assert digest(out) == before


def test_foreign_and_broken_checkpoints_are_refused_naming_both_sides(runs, tmp_path):
    tok, prior = tmp_path / "tok", tmp_path / "prior"
    shutil.copytree(runs / "straight", tok)
    shutil.copytree(runs / "prior", prior)
    hashes = lambda: (digest(tok), digest(prior))  # noqa: E731
    before = hashes()
    sample = ["sample", "-n", "1", "--seed", "1", "--out", tmp_path / "samples"]

    assert_one_line_error(vq(*sample, "--tokenizer", prior, "--prior", prior), "holds a prior, not a tokenizer")
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "config.json").write_text(json.dumps({"model": "vqvae"}))
    assert_one_line_error(vq(*sample, "--tokenizer", tmp_path / "stranger", "--prior", prior), "not written by vq")

    newer = tmp_path / "newer"
    shutil.copytree(tok, newer)
    info = json.loads((newer / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps({**info, "format_version": 99}))
    assert_one_line_error(vq(*sample, "--tokenizer", newer, "--prior", prior), "newer vq (format 99)")

    # A pickle where weights or a training state belong is refused, never unpickled.
    pickled = tmp_path / "pickled"
    shutil.copytree(tok, pickled)
    torch.save({"w": torch.zeros(2)}, pickled / "model.safetensors")
    torch.save({"step": 1}, pickled / "train_state.safetensors")
    assert_one_line_error(vq(*sample, "--tokenizer", pickled, "--prior", prior), "model.safetensors is unreadable")
    assert_one_line_error(vq(*fit_args(runs, pickled), "--resume", "--steps", "500"), "not a readable training state")

    # A prior of another tokenizer, and one whose codebook does not fit.
    other = tmp_path / "other"
    shutil.copytree(tok, other)
    info = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**info, "fingerprint": "0123456789abcdef"}))
    r = vq(*sample, "--tokenizer", other, "--prior", prior)
    assert_one_line_error(r, "trained on the codes of another tokenizer")
    assert "0123456789abcdef" in r.stderr and info["fingerprint"] in r.stderr
    wide = tmp_path / "wide"
    shutil.copytree(prior, wide)
    pinfo = json.loads((wide / "config.json").read_text())
    pinfo["config"]["codebook_size"] = 32
    (wide / "config.json").write_text(json.dumps(pinfo))
    assert_one_line_error(vq(*sample, "--tokenizer", tok, "--prior", wide), "codes from 32, but the tokenizer makes 7x7 codes from 16")

    # vq eval checks the prior's codes against the tokenizer before any work.
    stale = tmp_path / "stale"
    shutil.copytree(prior, stale)
    shutil.copytree(tok / "codes", tmp_path / "stale_codes")
    meta = json.loads((tmp_path / "stale_codes" / "meta.json").read_text())
    (tmp_path / "stale_codes" / "meta.json").write_text(json.dumps({**meta, "tokenizer_fingerprint": "fedcba9876543210"}))
    pinfo = json.loads((stale / "config.json").read_text())
    (stale / "config.json").write_text(json.dumps({**pinfo, "codes_dir": "../stale_codes"}))
    r = vq("eval", "--tokenizer", tok, "--prior", stale, "--classifier", tmp_path / "classifier", "--out", tmp_path / "eval.json")
    assert_one_line_error(r, "holds codes of another tokenizer")
    assert not (tmp_path / "classifier").exists() and not (tmp_path / "eval.json").exists()
    assert hashes() == before and not (tmp_path / "samples").exists()


def test_runs_moved_elsewhere_work_from_any_directory(runs, tmp_path):
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copytree(runs / "straight", moved / "tok")
    shutil.copytree(runs / "prior", moved / "pri")
    shutil.rmtree(runs / "straight" / "codes")  # the originals' codes are gone: only the moved copy has them
    try:
        cwd = tmp_path / "somewhere"
        cwd.mkdir()
        r = vq("sample", "--tokenizer", moved / "tok", "--prior", moved / "pri", "-n", "1", "--seed", "2", "--out", "out", cwd=cwd)
        assert r.returncode == 0, r.stderr
        assert (cwd / "out" / "grid.png").exists()
        r = vq("fit-prior", "--tokenizer", "../elsewhere/tok", "--out", "../elsewhere/pri", "--resume", "--steps", "8", cwd=cwd)
        assert r.returncode == 0, r.stderr
        assert "reusing" in r.stderr and not (runs / "straight" / "codes").exists()  # the moved run's own codes
    finally:
        shutil.copytree(moved / "tok" / "codes", runs / "straight" / "codes")


# --- non-finite losses, in the loop itself --------------------------------------------------------

class Explodes(torch.nn.Module):
    """A linear autoencoder whose loss is NaN at one step."""

    name = "explodes"

    def __init__(self, bad_step: int):
        super().__init__()
        self.net, self.bad_step = torch.nn.Linear(64, 64), bad_step

    def forward(self, x, y, step=0):
        flat = x.flatten(1)
        loss = (self.net(flat) - flat).pow(2).mean()
        if step == self.bad_step:
            loss = loss * float("nan")
        return type("Out", (), {"loss": loss, "metrics": {}})()


def toy_fit(tmp_path, **train):
    torch.manual_seed(0)
    split = Split(torch.randint(0, 255, (64, 1, 8, 8), dtype=torch.uint8), torch.zeros(64, dtype=torch.long))
    model = Explodes(bad_step=7)
    cfg = TrainConfig(steps=20, batch_size=8, eval_every=100, save_every="3", workers=0, device="cpu", **train)
    result = fit(model, split, prepare=image_batch, evaluate=lambda m: {}, save=lambda m, metrics: None,
                 run_dir=tmp_path, cfg=cfg)
    return model, result


def test_a_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_good_state(tmp_path):
    with pytest.raises(VQError) as e:
        toy_fit(tmp_path)
    message = str(e.value)
    assert "non-finite at step 8" in message and "last good training state (step 6)" in message
    assert "--skip-nonfinite" in message and "\n" not in message
    state = load_state(tmp_path / "train_state.safetensors")
    assert state["step"] == 6 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_skip_nonfinite_skips_the_batch_and_counts_it(tmp_path):
    model, result = toy_fit(tmp_path, skip_nonfinite=True)
    assert result.nonfinite_skipped == 1 and result.step == 20
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_nonfinite_batch_leaves_the_codebook_alone():
    from vq.stage1_vqvae.quantizer import VectorQuantizer

    torch.manual_seed(0)
    q = VectorQuantizer(8, 4, dead_code_threshold=100.0)  # every code is dead: restarts would draw from the batch
    q.train()
    q(torch.randn(2, 4, 3, 3))
    before = {k: v.clone() for k, v in q.state_dict().items()}
    z = torch.randn(2, 4, 3, 3)
    z[0, 0, 0, 0] = float("nan")
    q(z)
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())
