"""The suite's way of starting `vq` (tests/vq_process.py: forked from a process that has imported
torch already) gives what `python -m vq.cli.main` gives: the same exit code, stdout and stderr, in
the command's own working directory and environment."""

import os
import subprocess
import sys

import vq_process
from test_cli import TINY_TOML


def test_a_forked_command_is_the_command(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "COLUMNS": "200"}
    commands = [
        (("--help",), {"COLUMNS": "60"}),  # the command's own environment: help wrapped at 60 columns
        (("sample", "--sed", "3"), {}),  # a usage error: exit 2 and one line
        (("fit-tokenizer", "--data", "missing", "--out", "a"), {}),  # a refusal once torch and the data code are loaded
        (("fit-tokenizer", "--config", "tiny.toml", "--steps", "9", "--print-config", "--out", "b"), {}),  # its cwd
    ]
    for args, extra in commands:
        forked = vq_process.run_vq(*args, cwd=tmp_path, env={**env, **extra})
        plain = subprocess.run([sys.executable, "-m", "vq.cli.main", *args], capture_output=True, text=True, cwd=tmp_path,
                               env={**env, **extra}, timeout=600)
        assert (forked.returncode, forked.stdout, forked.stderr) == (plain.returncode, plain.stdout, plain.stderr), args
    assert forked.returncode == 0 and '"steps": 9' in forked.stdout
    if os.environ.get("VQ_TEST_FRESH_PROCESSES", "") in ("", "0"):
        assert vq_process._zygote.usable  # they were forked, not run plainly
