"""Installing vq puts one namespace, `vq`, into site-packages: no top-level `cli` or `pipeline`
to collide with other projects."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_fresh_install_has_one_namespace(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    env_dir = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", *wheels.glob("vq-*.whl")],
                   check=True, capture_output=True, timeout=300)
    # The dependencies (torch, typer, ...) come from this environment's site-packages, added as a
    # plain path: its .pth files (our own editable install among them) are not processed there.
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = lambda *args: subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)  # noqa: E731

    for name in ("cli", "pipeline", "stage1_vqvae", "stage2_prior"):
        r = run(python, "-c", f"import {name}")
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, (name, r.stderr)
    r = run(python, "-c", "import vq.pipeline.train.trainer, vq.pipeline.serve.guard, vq.stage2_prior, vq.cli.main; print(vq.cli.main.__file__)")
    assert r.returncode == 0, r.stderr
    assert str(env_dir) in r.stdout  # the installed copy, not this checkout
    r = run(env_dir / "bin" / "vq", "--help")
    assert r.returncode == 0, r.stderr
    assert "fit-tokenizer" in r.stdout and "sample" in r.stdout
