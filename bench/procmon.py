"""Run a command and measure what a benchmark needs of it from the outside: wall time, the time at
which some line of output first appeared (e.g. "first batch", to separate start-up from work), and
the peak memory of its whole process tree, DataLoader workers and torchrun children included,
which `resource.getrusage` and /usr/bin/time cannot give (they report one process's peak, or the
largest of the reaped children's).

    from procmon import run_monitored       # with bench/ on sys.path
    r = run_monitored(["vq", "fit-tokenizer", ...], marker="step 1")
    python bench/procmon.py --marker foo -- python -c "print('foo')"

Memory is sampled every `interval` seconds as the resident set size (RSS) of the process and all
its descendants, through psutil when it is installed, else straight from /proc (Linux). Two peaks
are kept: of the sum over the tree, and of the largest single process. The sum is an upper bound
on the memory the tree really uses: pages shared between processes (copy-on-write pages of forked
DataLoader workers, shared libraries, shared-memory tensors) count once per process that maps
them. Peaks shorter than `interval` can be missed.

The command runs in its own session, so that on timeout the whole tree can be killed, and so can
whatever is left of its process group once it has exited (strays that would hold its output pipes
open and skew the next measurement). PYTHONUNBUFFERED=1 is set unless `env` sets it otherwise:
a Python child would otherwise hold back its stdout in a block buffer and the marker's time would
be when the buffer filled, not when the line was printed.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

try:
    import psutil
except ImportError:
    psutil = None

PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_psutil(pid: int) -> dict[int, int]:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    rss = {}
    for p in procs:
        try:
            rss[p.pid] = p.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            pass
    return rss


def _tree_proc(pid: int) -> dict[int, int]:
    children: dict[int, list[int]] = {}
    rss_of = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) can hold spaces and parentheses; fields after its last ")" are
        # state, ppid, ..., with rss (in pages) 21 places after state.
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(name))
        rss_of[int(name)] = int(fields[21]) * PAGE
    rss, todo = {}, [pid]
    while todo:
        p = todo.pop()
        if p in rss_of:
            rss[p] = rss_of[p]
            todo += children.get(p, [])
    return rss


def tree_rss(pid: int) -> dict[int, int]:
    """{pid: RSS in bytes} for pid and all its descendants ({} once it is gone)."""
    return _tree_psutil(pid) if psutil else _tree_proc(pid)


def tree_pss(pids) -> int:
    """Summed proportional set size (bytes) of the processes: a shared page counts 1/n in each of
    the n processes mapping it, so unlike summed RSS this is the tree's real share of memory
    (Linux /proc/PID/smaps_rollup; 0 where unreadable)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next((int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:")), 0)
        except OSError:
            pass
    return total


def _kill(pid: int, pids) -> None:
    """SIGKILL the process group led by pid and the given processes (which may have left it)."""
    for kill, target in [(os.killpg, pid), *((os.kill, p) for p in pids)]:
        try:
            kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_monitored(cmd: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
                  marker: str | None = None, timeout: float = 3600, interval: float = 0.1) -> dict:
    """Run cmd to completion (or kill its tree after `timeout` seconds) and return
    {"returncode", "timed_out", "wall_s", "marker_s", "peak_tree_rss_mb", "peak_tree_pss_mb",
    "peak_single_rss_mb", "peak_procs", "stdout", "stderr"}: times in seconds since launch, marker_s the first line on
    either stream containing `marker` (None if none did), peak_procs the most processes seen in
    the tree at once, MB = 2**20 bytes."""
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
    marker_s = None
    lock = threading.Lock()

    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", start_new_session=True)

    # One thread per pipe: reading both from this thread could block on one while the child blocks
    # writing to the other, full one.
    def read(name: str, stream) -> None:
        nonlocal marker_s
        for line in stream:
            lines[name].append(line)
            if marker is not None and marker in line:
                with lock:
                    if marker_s is None:
                        marker_s = time.monotonic() - start

    readers = [threading.Thread(target=read, args=(n, getattr(proc, n)), daemon=True) for n in lines]
    for t in readers:
        t.start()

    peak_tree = peak_single = peak_procs = peak_pss = 0
    timed_out = False
    while True:
        rss = tree_rss(proc.pid)
        if rss:
            peak_tree = max(peak_tree, sum(rss.values()))
            peak_single = max(peak_single, max(rss.values()))
            peak_procs = max(peak_procs, len(rss))
            peak_pss = max(peak_pss, tree_pss(rss))
        try:
            proc.wait(timeout=interval)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() - start > timeout:
                _kill(proc.pid, tree_rss(proc.pid))
                proc.wait()
                timed_out = True
                break
    wall_s = time.monotonic() - start

    _kill(proc.pid, ())
    for t in readers:
        t.join(timeout=10)  # a stray that left the session may still hold a pipe: don't wait on it
    return {
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "wall_s": wall_s,
        "marker_s": marker_s,
        "peak_tree_rss_mb": peak_tree / 2**20,
        "peak_tree_pss_mb": peak_pss / 2**20,
        "peak_single_rss_mb": peak_single / 2**20,
        "peak_procs": peak_procs,
        "stdout": "".join(lines["stdout"]),
        "stderr": "".join(lines["stderr"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="%(prog)s [--marker TEXT] [--timeout S] [--interval S] -- COMMAND ...")
    ap.add_argument("--marker", help="report when a line containing this first appears")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between memory samples")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("no command given")
    r = run_monitored(cmd, marker=args.marker, timeout=args.timeout, interval=args.interval)
    print(json.dumps({k: v for k, v in r.items() if k not in ("stdout", "stderr")}, indent=1))
    sys.exit(r["returncode"] if r["returncode"] >= 0 else 1)


if __name__ == "__main__":
    main()
