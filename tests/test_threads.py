"""Compute threads chosen, not defaulted (`vq.pipeline.threads`): pinned by --threads, VQ_THREADS
or OMP_NUM_THREADS; otherwise the cores free of other work, followed while training; one thread
for a few images. Speed is measured in bench/threads.py, not here."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vq.pipeline import threads as th
from vq.pipeline.errors import VQError
from test_cli import ROOT, assert_one_line_error, vq



class ScriptedLoad:
    """A Load whose looks return the given busy-elsewhere figures in turn."""

    def __init__(self, figures):
        self.figures = list(figures)

    def others(self):
        return self.figures.pop(0)


@pytest.fixture
def automatic(monkeypatch):
    """No pin, two usable CPUs, looks due at once; restores torch's thread count."""
    monkeypatch.delenv(th.ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(th, "usable_cpus", lambda: [0, 1])
    monkeypatch.setattr(th, "LOOK_EVERY", 0.0)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def made(load_figures, workers=0, follow=True):
    t = th.Threads(workers, follow=follow)
    t.load = ScriptedLoad(load_figures)
    return t


def test_a_pin_wins_and_never_changes(monkeypatch):
    monkeypatch.setenv(th.ENV, "3")
    t = th.Threads()
    assert t.start(look=0) == "threads: 3 (pinned by --threads or VQ_THREADS)" and torch.get_num_threads() == 3
    assert t.follow() is None
    with t.for_images(1) as n:
        assert n == 3
    monkeypatch.delenv(th.ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as torchrun sets it for several processes per machine
    assert th.Threads().start(look=0) == "threads: 1 (pinned by OMP_NUM_THREADS)"
    for bad in ("0", "two", "1e9", "-1"):
        monkeypatch.setenv(th.ENV, bad)
        with pytest.raises(VQError, match="VQ_THREADS must be a whole number of threads from 1 to 4096"):
            th.Threads()


def test_the_free_cores_alone_a_fair_share_beside_another_run_and_back(automatic):
    t = made([0.0, 1.0, 0.4, 1.0, 0.1])
    assert t.start() == "threads: 2 of 2 cores (auto: 0.0 busy elsewhere, --threads N pins it)"
    assert torch.get_num_threads() == 2
    assert t.follow() == "threads: 2 -> 1 (1.0 cores busy elsewhere)" and torch.get_num_threads() == 1
    assert t.follow() is None  # 1.6 free: within STAY of 1, no flapping
    assert t.follow() is None and t.count == 1
    assert t.follow() == "threads: 1 -> 2 (0.1 cores busy elsewhere)" and torch.get_num_threads() == 2


def test_workers_are_left_their_cores_and_deterministic_runs_keep_one_count(automatic):
    assert made([0.0], workers=1).start() == "threads: 1 of 2 cores (auto: 1 DataLoader worker, 0.0 busy elsewhere, --threads N pins it)"
    t = made([0.0, 1.5], follow=False)
    t.start()
    assert t.follow() is None and t.count == 2


def test_a_few_images_run_on_one_thread_and_torch_s_count_comes_back(automatic):
    t = made([0.0, 0.0])
    torch.set_num_threads(2)
    with t.for_images(th.FEW_IMAGES - 1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with t.for_images(64) as n:
        assert n == 2


def test_the_load_counts_other_processes_not_this_one_or_its_workers():
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc here")
    spin = "import time\nt = time.time()\nwhile time.time() - t < 3: pass\n"

    def busy_elsewhere(cmd) -> float:
        proc = subprocess.Popen(cmd)
        time.sleep(0.5)  # started
        load = th.Load(th.usable_cpus())
        time.sleep(1.5)
        others = load.others()  # while it runs
        proc.wait()
        return others

    child = busy_elsewhere([sys.executable, "-c", spin])  # our child, as a DataLoader worker is
    # A grandchild: the shell is our child, python its own, so it is some other process's work.
    other = busy_elsewhere(["sh", "-c", f"{sys.executable} -c '{spin}' & wait"])
    assert other >= 0.3 and child <= other - 0.3, (child, other)


def test_the_command_line_says_what_it_chose(tmp_path):
    tiny = tmp_path / "tiny.toml"
    tiny.write_text("[model]\nhidden = 8\nres_blocks = 1\ncode_dim = 4\ncodebook_size = 8\n[train]\nbatch_size = 8\n")
    base = ("fit-tokenizer", "--data", "fashion-mnist", "--limit", "32", "--config", tiny, "--steps", "2", "--eval-every", "2")
    if not (Path("/usr/share/datasets/fashion-mnist").exists() or os.environ.get("VQ_FASHION_MNIST_DIR")):
        pytest.skip("Fashion-MNIST is not here")
    r = vq(*base, "--threads", "1", "--out", tmp_path / "pinned")
    assert r.returncode == 0, r.stderr
    assert "threads: 1 (pinned by --threads or VQ_THREADS)" in r.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", th.ENV)}
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline", COLUMNS="200")
    r = subprocess.run([sys.executable, "-m", "vq.cli.main", *map(str, base), "--out", str(tmp_path / "auto")],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert re.search(r"threads: \d+ of \d+ cores \(auto: ", r.stderr) and "--threads N pins it" in r.stderr
    r = subprocess.run([sys.executable, "-m", "vq.cli.main", *map(str, base), "--out", str(tmp_path / "bad")],
                       capture_output=True, text=True, cwd=ROOT, env={**env, th.ENV: "many"}, timeout=600)
    assert_one_line_error(r, "VQ_THREADS must be a whole number of threads")
    assert not (tmp_path / "bad").exists()


def test_draws_do_not_depend_on_the_thread_count():
    """A prior of the old demo's size (dim 192), whose products are large enough for torch to split
    over threads: the same codes from 1 and 2 threads (the studio and the CLI may run a request on
    either)."""
    from vq.stage2_prior import AutoregressivePrior, PriorConfig, sample_codes_fast

    torch.manual_seed(0)
    model = AutoregressivePrior(PriorConfig(codebook_size=256, height=7, width=7, num_classes=10, dim=192, depth=4,
                                            heads=4)).eval()
    labels = torch.arange(64) % 10
    before, codes = torch.get_num_threads(), {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            codes[n] = sample_codes_fast(model, labels, guidance=2.0, top_k=32, generator=torch.Generator().manual_seed(3))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(codes[1], codes[2])
