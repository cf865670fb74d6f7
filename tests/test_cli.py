"""The `vq` command as a user runs it: real processes, real files, one-line errors."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vq_process import run_vq

ROOT = Path(__file__).resolve().parents[1]
TINY_TOML = """
[model]
hidden = 16
res_blocks = 1
code_dim = 8
codebook_size = 16

[train]
steps = 6
batch_size = 8
eval_every = 3
"""


def vq(*args, cwd=None):
    """`python -m vq.cli.main ARGS` in a process of its own (forked with torch already imported: vq_process)."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "COLUMNS": "200"}
    return run_vq(*args, cwd=cwd or ROOT, env=env, timeout=600)


def assert_one_line_error(result, pattern):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and pattern in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


def test_bad_inputs_exit_with_one_line(tmp_path, tiny_config):
    assert_one_line_error(vq("fit-tokenizer", "--model", "transformer", "--out", tmp_path / "a"), "'transformer' is not a tokenizer kind; choose one of vqvae, vae, cvae")
    assert_one_line_error(vq("fit-tokenizer", "--data", tmp_path / "missing", "--out", tmp_path / "b"), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(vq("fit-tokenizer", "--data", tmp_path / "empty", "--out", tmp_path / "c"), "no class sub-folders")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nhiden = 3\n")
    assert_one_line_error(vq("fit-tokenizer", "--config", bad, "--out", tmp_path / "d"), "unknown model config key 'hiden'")
    assert not any((tmp_path / x).exists() for x in "abcd")


def test_fit_tokenizer_writes_a_loadable_run_and_protects_it(tmp_path, image_folder, tiny_config):
    out = tmp_path / "run"
    r = vq("fit-tokenizer", "--data", image_folder, "--config", tiny_config, "--out", out)
    assert r.returncode == 0, r.stderr
    assert {"config.json", "model.safetensors", "reconstructions.png", "train_state.safetensors"} <= {p.name for p in out.iterdir()}
    info = json.loads((out / "config.json").read_text())
    assert info["kind"] == "tokenizer" and info["model"] == "vqvae"
    assert info["class_names"] == ["circle", "square", "triangle"]
    assert info["config"]["codebook_size"] == 16 and set(info["metrics"]) >= {"mse", "psnr", "usage", "perplexity"}
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [3, 6]
    assert "step 3: mse=" in r.stderr  # each evaluation inside the loop is printed

    before = digest(out)
    assert_one_line_error(vq("fit-tokenizer", "--data", image_folder, "--config", tiny_config, "--out", out), "already holds a tokenizer")
    assert_one_line_error(vq("fit-tokenizer", "--model", "vae", "--data", image_folder, "--config", tiny_config, "--out", out, "--resume"), "resume it with --model vqvae")
    assert digest(out) == before

    r = vq("fit-tokenizer", "--out", out, "--resume", "--steps", "12", "--print-config")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)  # the run's own model and training, with the new length
    assert shown["model_config"] == info["config"] and shown["train_config"] == {**info["train"], "steps": 12}
    assert digest(out) == before

    r = vq("fit-tokenizer", "--data", image_folder, "--config", tiny_config, "--out", out, "--resume", "--steps", "9")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 9


@pytest.mark.parametrize("model", ["vae", "cvae"])
def test_fit_vae_models_on_a_saved_hf_dataset(tmp_path, cifar_like, model):
    out = tmp_path / model
    r = vq("fit-tokenizer", "--model", model, "--data", cifar_like, "--out", out, "--steps", "3",
           "--batch-size", "8", "--image-size", "16")
    assert r.returncode == 0, r.stderr
    info = json.loads((out / "config.json").read_text())
    assert info["model"] == model and info["config"]["channels"] == 3 and info["config"]["image_size"] == 16
    assert len(info["class_names"]) == 10


def test_ctrl_c_saves_the_run_and_resume_finishes_it(tmp_path, image_folder, tiny_config):
    import signal
    import time

    out = tmp_path / "run"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, "-m", "vq.cli.main", "fit-tokenizer", "--data", str(image_folder),
                             "--config", str(tiny_config), "--steps", "100000", "--eval-every", "100000", "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / ".lock").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(3)  # well into the training loop
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert (out / "train_state.safetensors").exists() and (out / "model.safetensors").exists()
    assert not (out / ".lock").exists()
    r = vq("fit-tokenizer", "--data", image_folder, "--config", tiny_config, "--steps", "5", "--out", out, "--resume")
    assert r.returncode == 0, r.stderr


def test_wandb_offline_logs_reconstruction_previews(tmp_path, image_folder, tiny_config):
    out = tmp_path / "run"
    r = vq("fit-tokenizer", "--data", image_folder, "--config", tiny_config, "--out", out, "--wandb")
    assert r.returncode == 0, r.stderr
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert len(list(runs[0].glob("files/media/images/val/preview_*.png"))) == 2  # evals at steps 3 and 6
    r = vq("fit-tokenizer", "--out", out, "--resume", "--steps", "9", "--wandb")
    assert r.returncode == 0, r.stderr
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({p.name.rsplit("-", 1)[1] for p in runs}) == 1  # the resumed run keeps its wandb id


def test_usage_errors_are_one_line(tmp_path):
    assert_one_line_error(vq("sample", "--sed", "3"), "No such option: --sed")
    # The sampling numbers are the library's to check: the rule and message of the API and the studio.
    assert_one_line_error(vq("sample", "--top-p", "1.5", "--tokenizer", tmp_path / "t"), "top_p must lie in (0, 1] (1 = no cut), got 1.5")
    assert_one_line_error(vq("sample", "-n", "0", "--tokenizer", tmp_path / "t"), "n must be a whole number from 1 to 100,000, got 0")
    assert_one_line_error(vq("complete", tmp_path / "x.png", "--keep", "middle"), "'middle' is not a side; choose one of top, bottom, left, right")
    assert_one_line_error(vq("fit-tokenizer", "--precision", "fp16", "--out", tmp_path / "a"), "'fp16' is not a precision; choose one of auto, bf16, fp32")
    assert_one_line_error(vq("fit-tokenizer", "--downsample", "3", "--out", tmp_path / "a"), "3 is not a power of two")
    r = vq("sample", "--sed", "3")
    assert r.returncode == 2 and "(see vq sample --help)" in r.stderr
    assert not (tmp_path / "a").exists()
    r = vq("--help")
    assert r.returncode == 0 and "fit-tokenizer" in r.stdout and not r.stderr
    r = vq()
    assert "Usage: vq" in r.stdout and "fit-tokenizer" in r.stdout and not r.stderr
    r = vq("fit-tokenizer", "--help")  # the kinds are the registry's: `vq kinds` lists them; matched in any case
    assert r.returncode == 0 and "vq kinds" in r.stdout and "auto (bf16 on CUDA, else fp32), bf16 or fp32" in r.stdout
    r = vq("kinds")
    assert r.returncode == 0 and all(k in r.stdout for k in ("vqvae", "vae", "cvae", "autoregressive", "masked"))
    r = vq("fit-tokenizer", "--model", "VAE", "--preset", "Full", "--precision", "BF16", "--print-config", "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert (shown["model"], shown["preset"], shown["train_config"]["precision"]) == ("vae", "full", "bf16")


def test_every_short_flag_means_one_thing_and_every_option_is_explained():
    import typer.main

    from vq.cli.main import app

    # -n is the one short flag whose long name differs by command, for one meaning: how many
    # images to make of each class (sample, eval) or of the input image (complete).
    shared = {"-n": {"--per-class", "--completions"}}
    longs, shorts, device_help = {}, {}, set()
    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            assert (getattr(param, "help", None) or "").strip(), f"vq {name} {param.name} has no help"
            long = next((o for o in param.opts if o.startswith("--")), param.name)
            for short in (o for o in param.opts + param.secondary_opts if len(o) == 2 and o[0] == "-"):
                longs.setdefault(short, set()).add(long)
                shorts.setdefault(long, set()).add(short)
            if long == "--device":
                device_help.add(param.help)
    assert {s: n for s, n in longs.items() if len(n) > 1} == shared
    assert longs["-c"] == {"--class"} and longs["-b"] == {"--batch-size"} and "--config" not in shorts
    assert all(len(s) == 1 for s in shorts.values()), shorts
    assert len(device_help) == 1


def test_print_config_resolves_preset_file_and_flags_without_reading_data(tmp_path, tiny_config):
    out = tmp_path / "run"
    r = vq("fit-tokenizer", "--data", tmp_path / "missing", "--config", tiny_config, "--steps", "9", "--lr", "0.01",
           "--image-size", "16", "--print-config", "--out", out)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert (shown["kind"], shown["model"], shown["preset"]) == ("tokenizer", "vqvae", "demo")
    model, train = shown["model_config"], shown["train_config"]
    assert (model["hidden"], model["codebook_size"], model["downsample"]) == (16, 16, 4)  # file, file, preset
    assert (model["image_size"], model["channels"]) == (16, None) and shown["from_data"] == ["channels"]
    assert (train["steps"], train["batch_size"], train["lr"], train["warmup_steps"]) == (9, 8, 0.01, 100)
    assert not out.exists()
    r = vq("fit-prior", "--tokenizer", tmp_path / "none", "--preset", "full", "--dim", "64", "--print-config", "--out", out)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert (shown["model_config"]["dim"], shown["model_config"]["depth"], shown["train_config"]["steps"]) == (64, 8, 8000)
    assert shown["from_data"] == ["codebook_size", "height", "num_classes", "sketch_size", "width"]
    assert shown["sampling"] == {}  # the full preset keeps no cut of its own
    assert not out.exists()
    assert_one_line_error(vq("fit-prior", "--resume", "--print-config", "--out", out), "no prior at")
    r = vq("fit-prior", "--tokenizer", tmp_path / "none", "--print-config", "--out", out)
    assert json.loads(r.stdout)["sampling"] == {"top_k": 64}  # the demo preset's
    (tmp_path / "cut.toml").write_text("[sampling]\ntop_p = 0.9\n")
    r = vq("fit-prior", "--tokenizer", tmp_path / "none", "--config", tmp_path / "cut.toml", "--print-config", "--out", out)
    assert json.loads(r.stdout)["sampling"] == {"top_k": 64, "top_p": 0.9}
    (tmp_path / "none.toml").write_text("[sampling]\ntop_k = 0\n")  # 0: no cut, so no default
    r = vq("fit-prior", "--tokenizer", tmp_path / "none", "--config", tmp_path / "none.toml", "--print-config", "--out", out)
    assert json.loads(r.stdout)["sampling"] == {}
    (tmp_path / "bad.toml").write_text("[sampling]\ntop_k = -1\n")
    assert_one_line_error(vq("fit-prior", "--tokenizer", tmp_path / "none", "--config", tmp_path / "bad.toml", "--print-config",
                             "--out", out), "key 'top_k' must lie from 0")
    assert_one_line_error(vq("fit-tokenizer", "--config", tmp_path / "cut.toml", "--print-config", "--out", out),
                          "[sampling] holds a prior's sampling defaults; a vqvae has none")


def test_a_flag_switches_off_what_the_config_file_switched_on(tmp_path, image_folder, tiny_config):
    config = tmp_path / "wandb.toml"
    config.write_text(TINY_TOML + "wandb = true\ndeterministic = true\n")

    def shown(*flags):
        return json.loads(vq("fit-tokenizer", "--config", config, *flags, "--print-config").stdout)["train_config"]

    on, off = shown(), shown("--no-wandb", "--no-deterministic")
    assert (on["wandb"], on["deterministic"], off["wandb"], off["deterministic"]) == (True, True, False, False)
    out = tmp_path / "run"
    r = vq("fit-tokenizer", "--data", image_folder, "--config", config, "--no-wandb", "--out", out)
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").exists() and not (out / "wandb").exists()


def test_help_reads_as_prose_at_any_width():
    wide = vq("--help", cwd=None)
    assert wide.returncode == 0
    # A docstring's own line breaks no longer cut its sentences: at 200 columns each fits one line.
    assert "on images; writes OUT/config.json, OUT/model.safetensors and OUT/reconstructions.png." in wide.stdout
    env_narrow = {**os.environ, "COLUMNS": "60"}
    narrow = subprocess.run([sys.executable, "-m", "vq.cli.main", "fit-prior", "--help"], capture_output=True, text=True,
                            env=env_narrow, timeout=120)
    lines = [line.strip() for line in narrow.stdout.splitlines()]
    gpus = next(i for i, line in enumerate(lines) if line.startswith("On N GPUs"))
    text = " ".join(lines[lines.index("Usage: vq fit-prior [OPTIONS]") + 1 : gpus]).split()
    from vq.cli.fit import fit_prior

    first = fit_prior.__doc__.split("\n\n")[0]
    assert "\n" not in first and first.startswith("Train a class-conditional transformer prior")
    assert " ".join(text) == first  # the whole paragraph, rewrapped at 60 columns and nothing else
    assert all(len(line) <= 60 for line in narrow.stdout.splitlines())
