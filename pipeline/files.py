"""Files vq writes and reads: atomic writes (a crash or a full disk leaves the previous version
whole), small metadata files read with limits (a crafted folder may hold anything under a
metadata file's name), run directories that refuse to clobber earlier results, and a lock against
two runs writing one directory."""

import errno
import json
import os
import socket
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from vq.pipeline.errors import VQError

STATE_FILE = "train_state.safetensors"  # a training run's whole state, for --resume
UMASK = os.umask(0o022)  # read once, as the process started (reading it means setting it) ...
os.umask(UMASK)  # ... and put back at once


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # disk full, quota exceeded, file-size limit


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, fsync, rename: a crash or a full disk
    mid-write leaves the previous version of `path` whole."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp's file is private: give it the mode a plain write would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in FULL:
            kept = "the previous version is intact" if path.exists() else "nothing was written"
            raise VQError(f"no space to write {path} ({e.strerror}); {kept}; free some space and run the "
                          "command again (a training run continues with --resume)") from None
        if isinstance(e, (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
            raise VQError(f"cannot write {path}: {e.strerror.lower()}; choose another --out") from None
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


JSON_BYTES = 4 * 2**20  # the largest metadata file vq reads (a run's config.json is a few kB)
JSON_DEPTH = 32  # the deepest nesting vq's own metadata files have is 6


def read_small_file(path: Path, limit: int = JSON_BYTES) -> bytes:
    """The bytes of a small regular file, refusing (before reading) anything else a crafted
    folder may hold under that name: a folder, a device or a pipe (a symlink to /dev/zero would
    be read forever), or a file over `limit` bytes. A symlink to a regular file is read (the
    Hugging Face cache links a snapshot's files to its blobs)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise VQError(f"{path} does not exist") from None
    except OSError as e:
        raise VQError(f"cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise VQError(f"{path} is not a regular file; vq reads its metadata only from plain files")
    if st.st_size > limit:
        raise VQError(f"{path} holds {st.st_size:,} bytes, more than the {limit:,} vq reads for a metadata file")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise VQError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > limit:  # it grew, or it is a special file that reports no size
        raise VQError(f"{path} holds more than the {limit:,} bytes vq reads for a metadata file")
    return data


def json_depth(obj) -> int:
    """How deeply lists and objects nest in parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            if depth <= JSON_DEPTH:
                stack.extend((child, depth + 1) for child in children)
    return deepest


def read_json(path: Path, limit: int = JSON_BYTES):
    """A JSON file vq (or someone) wrote: small (`read_small_file`), valid, at most JSON_DEPTH deep."""
    data = read_small_file(path, limit)
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VQError(f"{path} is not valid JSON ({e})") from None
    except RecursionError:
        raise VQError(f"{path} nests its JSON deeper than vq reads ({JSON_DEPTH} levels)") from None
    if json_depth(obj) > JSON_DEPTH:
        raise VQError(f"{path} nests its JSON deeper than vq reads ({JSON_DEPTH} levels)")
    return obj


def check_run_dir(out: Path, *, resume: bool, force: bool, what: str) -> None:
    """Refuse to write a new run over an existing one unless the user asked to resume or force."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VQError(f"{out} exists and is not a directory")
    existing = any((out / f).exists() for f in ("config.json", STATE_FILE, "train_state.pt"))
    if resume and force:
        raise VQError("--resume and --force contradict each other: choose one")
    if resume and not (out / STATE_FILE).exists():
        old = (" (its train_state.pt is from an older vq, which pickled it; vq no longer reads pickles: "
               "start afresh with --force)") if (out / "train_state.pt").exists() else "; drop --resume to start a new run there"
        raise VQError(f"nothing to resume in {out} (no {STATE_FILE}){old}")
    if (out / ".lock").exists() and int(os.environ.get("RANK", "0")) == 0:
        _live_holder(out)  # refuse now, before any data is loaded, if another run is writing there
    if existing and not (resume or force):
        raise VQError(
            f"{out} already holds a {what}; pass --resume to continue it, --force to replace it, "
            "or --out DIR for a new one"
        )


def stored_path(path: Path | str, run_dir: Path) -> str:
    """A path to keep in a run's metadata: relative to the run directory, so that runs moved
    together (a prior and its tokenizer) and commands run from any directory still find it."""
    return os.path.relpath(Path(path).resolve(), Path(run_dir).resolve())


def resolve_stored(value: str, run_dir: Path) -> Path:
    """The inverse of stored_path; absolute paths (and those of older runs, relative to the
    directory vq ran in) are tried as they are when the run-relative one does not exist."""
    candidate = Path(os.path.normpath(Path(run_dir) / value))
    return candidate if candidate.exists() or not Path(value).exists() else Path(value)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_holder(out: Path) -> int:
    """Raise if the lock in `out` is held by a live process (or one on another host); else
    return the dead holder's pid (0 when unreadable)."""
    lock = Path(out) / ".lock"
    try:
        pid_text, _, holder = lock.read_text().strip().partition(" ")
        pid = int(pid_text or 0)
    except (OSError, ValueError):
        return 0
    if holder and holder != socket.gethostname():
        raise VQError(f"{out} is locked by vq process {pid} on host {holder}; if no run is using it, delete {lock}")
    if pid and pid != os.getpid() and _pid_alive(pid):
        raise VQError(f"{out} is in use by another vq process (pid {pid}); wait for it or choose another --out")
    return pid


@contextmanager
def run_lock(out: Path):
    """One writer per run directory. The lock file names the process and host that hold it; a
    lock left by a dead process of this host (a kill -9, a crash) is taken over with a note."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = out / ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            pid = _live_holder(out)
            print(f"note: {out} was locked by process {pid or '?'}, which is gone; taking the lock over", file=sys.stderr)
            lock.unlink(missing_ok=True)
    else:
        raise VQError(f"could not lock {out}")
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {socket.gethostname()}")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
