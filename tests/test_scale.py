"""Real data on real hardware, tested on 2 CPU cores: torchrun with gloo, lazy and streamed data,
exact resume, compact code exports, and the batch order that makes them agree."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vq.pipeline import distributed as dist
from vq.pipeline.train.state import load_state
from vq.pipeline.data.splits import FileImages, StreamImages
from vq.pipeline.data.sources import load_image_data
from vq.pipeline.codes.maps import load_codes
from vq.pipeline.data.loader import Skipped, StepSampler, epoch_order, materialize
from vq.pipeline.errors import VQError
from vq.pipeline.train.config import TrainConfig, parse_duration, total_steps
from vq.stage1_vqvae import VectorQuantizer
from test_cli import ROOT, assert_one_line_error, tiny_config, vq  # noqa: F401 (a fixture)
from test_pipeline import PRIOR_TOML, TOKENIZER_TOML, needs_fashion_mnist
from vq_process import run_vq

ENV = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
       "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def torchrun(*args, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=600)


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- torchrun -------------------------------------------------------------------------------

@needs_fashion_mnist
def test_torchrun_two_processes_keep_ranks_identical(tmp_path):
    # The tokenizer with its discriminator and perceptual term: two optimizers and an adaptive
    # weight (autograd.grad inside the forward) under DDP.
    (tmp_path / "tok.toml").write_text(TOKENIZER_TOML.replace(
        "[train]", 'perceptual = "random"\nperceptual_weight = 0.1\nadversarial_weight = 0.2\n[train]'))
    (tmp_path / "prior.toml").write_text(PRIOR_TOML)
    harness = ROOT / "tests" / "rank_weights.py"
    for stage, args in (
        ("tok", ("fit-tokenizer", "--data", "fashion-mnist", "--limit", "256", "--config", tmp_path / "tok.toml",
                 "--out", tmp_path / "tok", "--workers", "0")),
        ("prior", ("fit-prior", "--tokenizer", tmp_path / "tok", "--codes", tmp_path / "codes", "--config",
                   tmp_path / "prior.toml", "--out", tmp_path / "prior", "--workers", "0")),
    ):
        dump = tmp_path / f"dump_{stage}"
        dump.mkdir()
        r = torchrun(harness, dump, *args)
        assert r.returncode == 0, r.stderr[-3000:]
        ranks = [load_file(dump / f"rank{i}.safetensors") for i in range(2)]
        assert same_weights(ranks[0], ranks[1]), f"{stage}: the ranks' weights differ"
        saved = load_file(tmp_path / stage / "model.safetensors")
        assert same_weights(saved, ranks[0])
        assert re.search(r"processes\s*│\s*2\b", r.stdout), r.stdout  # the summary names both processes
    # The codebook trained by k-means on rank 0, all-reduced EMA and broadcast restarts.
    assert load_file(tmp_path / "tok" / "model.safetensors")["quantizer.initialized"].item()
    # One export, written once, in the compact format.
    meta = json.loads((tmp_path / "codes" / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["splits"] == {"train": 256, "test": 256}


@needs_fashion_mnist
def test_torchrun_run_interrupted_and_resumed_on_one_process(tmp_path):
    (tmp_path / "tok.toml").write_text(TOKENIZER_TOML)
    out = tmp_path / "tok"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "vq.cli.main",
           "fit-tokenizer", "--data", "fashion-mnist", "--limit", "256", "--config", str(tmp_path / "tok.toml"),
           "--steps", "100000", "--eval-every", "100000", "--log-every", "5", "--workers", "0", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 180
    while not (out / ".lock").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(4)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches torchrun and its workers
    _, stderr = proc.communicate(timeout=180)
    assert "interrupted at step" in stderr, stderr[-3000:]
    state = load_state(out / "train_state.safetensors")
    stopped = state["step"]
    assert 0 < stopped < 100000 and stopped % 5 == 0  # both ranks stopped at the same agreed step
    r = vq("fit-tokenizer", "--resume", "--out", out, "--steps", stopped + 10, "--workers", "0")
    assert r.returncode == 0, r.stderr
    assert f"resuming {out} at step {stopped}" in r.stderr
    assert load_state(out / "train_state.safetensors")["step"] == stopped + 10


# --- exact resume, seeds ----------------------------------------------------------------------

def run(*args):
    return run_vq(*args, cwd=ROOT, env=ENV, timeout=600)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, image_folder, tiny_config):
    """Bit for bit: deterministic kernels at a fixed thread count (ENV sets one), and the run
    restores weights, optimizer, schedule, RNG and data order."""
    common = ("fit-tokenizer", "--data", image_folder, "--config", tiny_config, "--steps", "450",
              "--eval-every", "150", "--seed", "5", "--workers", "0", "--deterministic")
    r = run(*common, "--out", tmp_path / "straight")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, "-m", "vq.cli.main", *map(str, common), "--out", str(out)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)  # the first evaluation (step 150) has been written: interrupt mid-run
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    stopped = load_state(out / "train_state.safetensors")["step"]
    assert 150 <= stopped < 450, stopped  # 300 steps (~1.5 s idle, more loaded) left when the signal was sent
    r = run("fit-tokenizer", "--resume", "--out", out, "--workers", "0")  # no length given: finish the saved schedule
    assert r.returncode == 0, r.stderr
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(out / "model.safetensors")
    assert same_weights(a, b)
    rows = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == [150, 300, 450]  # no step twice


def test_seed_sets_the_initial_weights(tmp_path, image_folder, tiny_config):
    def initial(seed, name):
        r = vq("fit-tokenizer", "--data", image_folder, "--config", tiny_config, "--steps", "0", "--seed", seed,
               "--out", tmp_path / name)
        assert r.returncode == 0, r.stderr
        return load_file(tmp_path / name / "model.safetensors")

    a, b, c = initial(1, "a"), initial(1, "b"), initial(2, "c")
    assert same_weights(a, b) and not same_weights(a, c)


def test_resume_reads_the_run_back_and_refuses_other_data(tmp_path, image_folder, tiny_config, cifar_like):
    out = tmp_path / "run"
    r = vq("fit-tokenizer", "--data", image_folder, "--config", tiny_config, "--out", out, "--image-size", "8")
    assert r.returncode == 0, r.stderr
    assert_one_line_error(vq("fit-tokenizer", "--data", cifar_like, "--resume", "--out", out),
                          f"was trained on --data {image_folder}, not {cifar_like}")
    r = vq("fit-tokenizer", "--resume", "--out", out, "--steps", "8")  # data, model and options from the run
    assert r.returncode == 0, r.stderr
    info = json.loads((out / "config.json").read_text())
    assert info["config"]["image_size"] == 8 and info["train"]["steps"] == 8


# --- the time budget ---------------------------------------------------------------------------

def test_time_budget_fits_the_schedule_and_stops(tmp_path, image_folder, tiny_config):
    out = tmp_path / "run"
    r = vq("fit-tokenizer", "--data", image_folder, "--config", tiny_config, "--time-budget", "6s",
           "--eval-every", "100000", "--out", out)
    assert r.returncode == 0, r.stderr
    state = load_state(out / "train_state.safetensors")
    # The total was fitted from the measured step time (it is no longer the placeholder) and run to its end.
    assert state["total"] is not None and state["step"] == state["total"] >= 25
    train_seconds = float(r.stdout.split("train seconds")[1].split()[1])
    assert train_seconds < 6 * 3  # it stopped: budget plus the final evaluation, with room for a busy machine


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("5m") == 300 and parse_duration("1h30m") == 5400
    assert parse_duration("45") == 45
    for bad in ("soon", "0s", "-5m"):
        with pytest.raises(VQError):
            parse_duration(bad)


# --- data ---------------------------------------------------------------------------------------

def test_global_batches_do_not_depend_on_the_number_of_processes(monkeypatch):
    def batches_of(world):
        out = []
        for r in range(world):
            monkeypatch.setattr(dist, "rank", lambda r=r: r)
            monkeypatch.setattr(dist, "world_size", lambda: world)
            it = iter(StepSampler(103, 8, seed=4, start=11))
            out.append([next(it) for _ in range(30)])
        return [sum((o[s] for o in out), []) for s in range(30)]

    one, two = batches_of(1), batches_of(2)
    assert one == two
    assert one[0] == epoch_order(103, 4, 0)[88:96].tolist()  # step 11 of 12 per epoch
    assert one[1] == epoch_order(103, 4, 1)[:8].tolist()  # then the next epoch's permutation


def test_folder_is_read_lazily_and_unreadable_images_are_counted(image_folder):
    (image_folder / "circle" / "broken.png").write_bytes(b"\x89PNG truncated")
    data = load_image_data(str(image_folder))
    assert isinstance(data.train, FileImages) and (data.channels, data.image_size) == (1, 16)
    skipped = Skipped()
    decoded = [materialize(split, skipped=skipped) for split in (data.train, data.test)]
    assert skipped.count == 1 and "broken.png" in skipped.first[0]
    assert sum(len(s) for s in decoded) == 30 and decoded[0].images.dtype == torch.uint8
    holder = next(s for s in (data.train, data.test) if any("broken" in p for p in s.paths))
    with pytest.raises(VQError, match="broken.png"):
        materialize(holder, skipped=Skipped(strict=True))


def test_cli_skips_unreadable_images_or_stops_with_strict(tmp_path, image_folder, tiny_config):
    for i in range(3):
        (image_folder / "square" / f"bad{i}.png").write_bytes(b"not an image")
    r = vq("fit-tokenizer", "--data", image_folder, "--config", tiny_config, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    assert "unreadable image" in r.stderr and "bad" in r.stderr
    r = vq("fit-tokenizer", "--data", image_folder, "--config", tiny_config, "--strict", "--out", tmp_path / "b")
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert last.startswith("error: cannot read ") and "/square/bad" in last and "--strict" in last


def test_image_size_is_the_datasets_own_or_asked_for(tmp_path):
    root = tmp_path / "mixed"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(root / "a" / "0.png")
    Image.new("RGB", (24, 24)).save(root / "a" / "1.png")
    with pytest.raises(VQError, match="several sizes .*--image-size"):
        load_image_data(str(root))
    assert load_image_data(str(root), image_size=12).image_size == 12
    wide = tmp_path / "wide"
    (wide / "a").mkdir(parents=True)
    Image.new("L", (40, 30)).save(wide / "a" / "0.png")
    with pytest.raises(VQError, match="not square"):
        load_image_data(str(wide))
    big = tmp_path / "big"
    (big / "a").mkdir(parents=True)
    Image.new("L", (96, 96)).save(big / "a" / "0.png")
    assert load_image_data(str(big)).image_size == 96  # no silent cap


def test_stream_is_split_over_ranks(cifar_like):
    data = load_image_data(str(cifar_like), streaming=True)
    assert isinstance(data.train, StreamImages) and data.image_size == 32
    parts = [[y for _, y, _ in data.train.configure(rank=r, world=2, seed=0, shuffle_buffer=0)] for r in range(2)]
    whole = [y for _, y, _ in data.train.configure(rank=0, world=1, seed=0, shuffle_buffer=0)]
    assert len(parts[0]) + len(parts[1]) == len(whole) == 20 and parts[0] and parts[1]
    assert sorted(parts[0] + parts[1]) == sorted(whole)


def test_fit_tokenizer_on_a_stream(tmp_path, cifar_like):
    r = vq("fit-tokenizer", "--data", cifar_like, "--streaming", "--steps", "4", "--batch-size", "4", "--workers", "1",
           "--image-size", "16", "--eval-every", "2", "--out", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "s" / "config.json").read_text())
    assert info["dataset"]["streaming"] and info["config"]["image_size"] == 16
    # The saved dataset's stream knows its length (20 rows): epochs of 5 batches of 4.
    r = vq("fit-tokenizer", "--data", cifar_like, "--streaming", "--epochs", "2", "--batch-size", "4", "--workers", "0",
           "--image-size", "16", "--out", tmp_path / "t")
    assert r.returncode == 0, r.stderr
    assert load_state(tmp_path / "t" / "train_state.safetensors")["step"] == 10
    with pytest.raises(VQError, match="pass --steps or --time-budget"):  # a hub stream of unknown length
        total_steps(TrainConfig(epochs=1), None)


# --- code export -----------------------------------------------------------------------------

def test_export_is_compact_memory_mapped_and_resumable(tmp_path, image_folder, tiny_config, monkeypatch):
    r = vq("fit-tokenizer", "--data", image_folder, "--config", tiny_config, "--out", tmp_path / "tok")
    assert r.returncode == 0, r.stderr
    monkeypatch.setattr("vq.pipeline.codes.export.SHARD_SIZE", 8)  # 27 train maps -> 4 shards
    from vq.pipeline.codes.export import export_codes

    export_codes(tmp_path / "tok", tmp_path / "codes", device="cpu", workers=0)
    codes = load_codes(tmp_path / "codes")
    train = codes.splits["train"]
    assert len(train) == 27 and codes.record.shards["train"] == [f"train-0000{i}" for i in range(4)]
    assert all(isinstance(c, np.memmap) and c.dtype == np.uint16 for c in train.shard_codes)
    first = {p.name: p.read_bytes() for p in (tmp_path / "codes").glob("*.npy")}
    # An export interrupted after some shards: no meta.json yet, a shard missing.
    (tmp_path / "codes" / "meta.json").unlink()
    (tmp_path / "codes" / "train-00002.labels.npy").unlink()
    (tmp_path / "codes" / "progress.json").write_text(json.dumps({"tokenizer_fingerprint": codes.record.tokenizer_fingerprint}))
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "codes").glob("*.npy")}
    export_codes(tmp_path / "tok", tmp_path / "codes", device="cpu", workers=0)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "codes").glob("*.npy")}
    assert {n for n in after if after[n] != before.get(n)} == {"train-00002.codes.npy", "train-00002.labels.npy"}
    assert {p.name: p.read_bytes() for p in (tmp_path / "codes").glob("*.npy")} == first
    again = load_codes(tmp_path / "codes").splits["train"]
    assert torch.equal(again.to_memory(16).images, train.to_memory(16).images)


# --- the quantizer under torchrun and TF32 --------------------------------------------------

def test_quantizer_distances_run_without_tf32(monkeypatch):
    import vq.stage1_vqvae.quantizer as quantizer

    seen = []
    real = quantizer.squared_distances

    def spy(x, c):
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        return real(x, c)

    monkeypatch.setattr(quantizer, "squared_distances", spy)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # as the trainer sets it on a GPU
    try:
        VectorQuantizer(16, 4).train()(torch.randn(2, 4, 3, 3))
        assert torch.backends.cuda.matmul.allow_tf32  # the caller's setting is restored
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert seen and not any(seen)
