"""What a user reads when vq runs unattended: training progress in a log, where the judge of
`vq eval` is cached."""

import io
from pathlib import Path

from rich.console import Console

from vq.pipeline.evaluate.judge import classifier_cache
from vq.pipeline.train import progress


def test_a_log_gets_plain_progress_lines(monkeypatch):
    """A bar shows nothing in a file or a pipe until the end: there, a line every LOG_EVERY seconds."""
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    log = io.StringIO()
    lines = progress.LogLines(Console(file=log, force_terminal=False, width=200), True, first_step=0)
    lines.tick(350, 1400, "loss 0.4321")
    lines.tick(700, None, "")  # a time budget: no total
    text = log.getvalue()
    assert "step 350/1,400 (25%)" in text and "so far" in text and "left" in text and "loss 0.4321" in text
    assert "step 700, " in text
    quiet = io.StringIO()
    progress.LogLines(Console(file=quiet, force_terminal=True), True, 0).tick(5, 10, "")  # a terminal: the bar says it
    progress.LogLines(Console(file=quiet, force_terminal=False), False, 0).tick(5, 10, "")  # not the main process
    assert quiet.getvalue() == ""


def test_the_judges_cache_is_per_user_not_per_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("VQ_CACHE", str(tmp_path / "cache"))
    assert classifier_cache() == tmp_path / "cache" / "classifier"
    monkeypatch.delenv("VQ_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert classifier_cache() == tmp_path / "xdg" / "vq" / "classifier"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    places = []
    for here in (tmp_path / "a", tmp_path / "b"):
        here.mkdir()
        monkeypatch.chdir(here)
        places.append(classifier_cache())
    assert places == [Path(tmp_path / "home" / ".cache" / "vq" / "classifier")] * 2


def test_importing_vq_warns_of_nothing():
    """x-transformers' import-time torch.jit.script deprecation is vq's to hide: a user cannot act on it."""
    import subprocess
    import sys

    code = "from vq.pipeline import Pipeline, VQError; from vq.stage2_prior import AutoregressivePrior"
    r = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr[-2000:]


def test_a_crafted_training_state_says_nothing_rather_than_failing(tmp_path):
    """`unfinished_training` reads the header of a run's train_state.safetensors, which a folder from
    elsewhere may hold: anything but a well-formed vq header is None, read within its size cap."""
    import json
    import os

    from vq.pipeline.checkpoint import MAX_STATE_HEADER, unfinished_training
    from vq.pipeline.files import STATE_FILE

    def state(name: str, header: bytes, size: int | None = None) -> Path:
        run = tmp_path / name
        run.mkdir()
        (run / STATE_FILE).write_bytes((len(header) if size is None else size).to_bytes(8, "little") + header)
        return run

    def header(vq) -> bytes:
        return json.dumps({"__metadata__": {"vq": vq if isinstance(vq, str) else json.dumps(vq)}}).encode()

    assert unfinished_training(state("stopped", header({"tree": {"step": 5, "total": None, "finished": False}}))) == (5, None)
    assert unfinished_training(state("done", header({"tree": {"step": 9, "finished": True}}))) is None
    assert unfinished_training(state("old", header({"tree": {"step": 9}}))) is None  # before the mark: cannot tell
    crafted = [state("number", header(5)), state("nested", b"[" * 200_000 + b"]" * 200_000),
               state("huge", b"{}", size=MAX_STATE_HEADER + 1), state("short", b"{", size=1000),
               state("types", header({"tree": {"step": "5", "finished": False}})), state("list", header([1, 2]))]
    assert [unfinished_training(run) for run in crafted] == [None] * len(crafted)
    linked = tmp_path / "linked"
    linked.mkdir()
    os.symlink("/dev/zero", linked / STATE_FILE)
    assert unfinished_training(linked) is None and unfinished_training(tmp_path / "missing") is None
