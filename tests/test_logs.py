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
    r = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-W", "error::DeprecationWarning:vq", "-c", code],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr[-2000:]
