"""Run directories: the error type users see, refusing to clobber earlier results, a lock
against two runs writing one directory, and atomic file writes."""

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


class VQError(Exception):
    """An error caused by the user's input: the CLI prints it as one line and exits non-zero."""

    exit_code = 1


class Interrupted(VQError):
    exit_code = 130


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise VQError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VQError(f"{path} is not valid JSON ({e})") from None


def check_run_dir(out: Path, *, resume: bool, force: bool, what: str) -> None:
    """Refuse to write a new run over an existing one unless the user asked to resume or force."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VQError(f"{out} exists and is not a directory")
    existing = (out / "config.json").exists() or (out / "train_state.pt").exists()
    if resume and force:
        raise VQError("--resume and --force contradict each other: choose one")
    if resume and not (out / "train_state.pt").exists():
        raise VQError(f"nothing to resume in {out} (no train_state.pt); drop --resume to start a new run there")
    if existing and not (resume or force):
        raise VQError(
            f"{out} already holds a {what}; pass --resume to continue it, --force to replace it, "
            "or --out DIR for a new one"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def run_lock(out: Path):
    """One writer per run directory; a lock left by a dead process is taken over."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = out / ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _pid_alive(pid):
                raise VQError(f"{out} is in use by another vq process (pid {pid})") from None
            lock.unlink(missing_ok=True)
    else:
        raise VQError(f"could not lock {out}")
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
