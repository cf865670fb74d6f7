"""Compute threads: how many torch runs on in a vq process, chosen, not defaulted.

torch starts one compute thread per core, and its OpenMP threads spin while they wait for each
other. Two such processes on the same cores keep making each other wait: measured on a 2-core
machine, two demo tokenizer fits at once each ran at 20% of one fit's speed alone, against 51%
with one thread each (bench/threads.py). So vq chooses:

- pinned: `--threads N` (every command that computes), else the VQ_THREADS variable, else
  OMP_NUM_THREADS (torchrun sets it to 1 for several processes per machine). Never changed.
- automatic: the cores this process may use (its CPU affinity; the ranks of one machine share
  them), less the DataLoader workers it starts, less the cores that other processes kept busy
  lately (Linux's /proc/stat, this process and its workers left out), and at least 1. A training
  run looks again every few seconds and follows, so runs started together share the cores (one
  started later takes what is free), and a run alone takes the cores back when the other ends. With `--deterministic`
  the count is chosen once (a different count can change the last bits of trained weights).
- a generation of a few images runs on one thread: a step of the prior is too small to split
  (one thread was faster here even on an idle machine), and a studio request stays quick beside
  a training run. Generated images did not depend on the thread count where we checked (640 demo
  images at 1 and 2 threads; a test draws a demo-sized prior's codes at both), but a BLAS library
  may round differently at other counts.
"""

import os
import time
from contextlib import contextmanager

import torch

from vq.pipeline.errors import VQError

ENV = "VQ_THREADS"
MAX_THREADS = 4096
FEW_IMAGES = 16  # a generation of fewer images runs on one thread
LOOK_EVERY = 3.0  # seconds between looks at the machine while training
FIRST_LOOK = 0.25  # seconds of the first look, before a training run starts
STAY = 0.75  # free cores must differ from the count by this much to change it (no flapping)


def parse_threads(value, where: str) -> int:
    """A thread count from a flag or a variable: a whole number from 1 to MAX_THREADS."""
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_THREADS:
        raise VQError(f"{where} must be a whole number of threads from 1 to {MAX_THREADS}, got {str(value)[:40]!r}")
    return n


def pinned_threads() -> tuple[int, str] | None:
    """(count, what pinned it), or None when vq chooses. `--threads` reaches here as VQ_THREADS."""
    if os.environ.get(ENV, "").strip():
        return parse_threads(os.environ[ENV], ENV), ENV
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return min(int(omp), MAX_THREADS), "OMP_NUM_THREADS"
    return None


def usable_cpus() -> list[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def process_ticks(stat: str) -> tuple[int, int, int]:
    """(parent pid, its user + system clock ticks, those of its children it has waited for) from
    the text of a /proc/PID/stat."""
    fields = stat[stat.rindex(")") + 2:].split()  # the name, in parentheses, may hold spaces
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


class Load:
    """How many cores other processes kept busy between two looks: the busy time of this
    process's CPUs in /proc/stat, less this process's own and its live children's (DataLoader
    workers). Where /proc is not there, it knows nothing (None)."""

    def __init__(self, cpus: list[int]):
        self.cpus = {f"cpu{c}" for c in cpus}
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self.read()

    def read(self) -> tuple[float, int, int] | None:
        """(now, busy ticks of the CPUs, ticks of this process and its children), or None."""
        try:
            busy = 0
            with open("/proc/stat") as f:
                for line in f:
                    parts = line.split()
                    if parts and parts[0] in self.cpus:
                        ticks = [int(v) for v in parts[1:9]]  # user nice system idle iowait irq softirq steal
                        busy += sum(ticks) - ticks[3] - ticks[4]
            return time.monotonic(), busy, self.own_ticks()
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def own_ticks() -> int:
        """This process's ticks, its ended children's, and its live children's."""
        me = os.getpid()
        with open("/proc/self/stat") as f:
            _, total, ended = process_ticks(f.read())
        total += ended
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and int(entry.name) != me:
                try:
                    with open(f"/proc/{entry.name}/stat") as f:
                        parent, ticks, _ = process_ticks(f.read())
                except (OSError, ValueError, IndexError):
                    continue  # gone meanwhile, or not readable
                total += ticks if parent == me else 0
        return total

    def others(self) -> float | None:
        """Cores busy with other work since the last look (or since this was made)."""
        now, last = self.read(), self.last
        self.last = now
        if now is None or last is None or now[0] <= last[0]:
            return None
        return max(0.0, ((now[1] - last[1]) - (now[2] - last[2])) / self.tick / (now[0] - last[0]))


class Threads:
    """The compute threads of one vq process (see the module's notes). `start` sets the count
    for a long job and says so in a line; a training loop calls `follow` every step; a
    generation runs inside `for_images`."""

    def __init__(self, workers: int = 0, *, follow: bool = True):
        self.pin = pinned_threads()
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        cpus = usable_cpus()
        self.cores = max(1, len(cpus) // ranks)
        self.workers = workers
        # Other ranks of this job are other processes too: with several ranks, each keeps its share.
        self.load = Load(cpus) if self.pin is None and ranks == 1 else None
        self.following = follow and self.load is not None
        self.count = self.pin[0] if self.pin else self.most
        self.others = None
        self.looked = time.monotonic()

    @property
    def most(self) -> int:
        return max(1, self.cores - self.workers)

    def start(self, look: float = FIRST_LOOK) -> str:
        """Choose the count (a short look at the machine first), set it; -> the start-up line."""
        if self.load is not None and look > 0:
            time.sleep(look)
            self._look()
            self.count = self._free_count()
        torch.set_num_threads(self.count)
        if self.pin:
            return f"threads: {self.count} ({self.why()})"
        return f"threads: {self.count} of {self.cores} cores ({self.why()})"

    def generation_line(self) -> str:
        """What `for_images` chooses, for a server's start-up line."""
        if self.pin:
            return f"threads: {self.pin[0]} ({self.why()})"
        return (f"threads: 1 for a request of fewer than {FEW_IMAGES} images, else up to {self.most} by the load "
                "(--threads N pins it)")

    def why(self) -> str:
        if self.pin:
            return f"pinned by {'--threads or ' if self.pin[1] == ENV else ''}{self.pin[1]}"
        parts = [f"{self.workers} DataLoader worker{'s' if self.workers > 1 else ''}"] if self.workers else []
        if self.others is not None:
            parts.append(f"{self.others:.1f} busy elsewhere")
        return f"auto: {', '.join(parts + ['--threads N pins it'])}"

    def _look(self) -> None:
        self.others = self.load.others()
        self.looked = time.monotonic()

    def _free(self) -> float:
        """Cores free for this process's compute threads, as last looked."""
        return self.cores - self.workers - (self.others or 0.0)

    def _free_count(self) -> int:
        return max(1, min(self.most, round(self._free())))

    def follow(self) -> str | None:
        """Every LOOK_EVERY seconds, the count the machine's load calls for; -> a line when it changed."""
        if not self.following or time.monotonic() - self.looked < LOOK_EVERY:
            return None
        self._look()
        target = self._free_count()
        if target == self.count or abs(self._free() - self.count) < STAY:
            return None
        before, self.count = self.count, target
        torch.set_num_threads(target)
        return f"threads: {before} -> {target} ({self.others:.1f} cores busy elsewhere)"

    @contextmanager
    def for_images(self, images: int):
        """Run a generation of `images` images on the count chosen for it; torch's own count is
        restored after."""
        if self.pin:
            n = self.pin[0]
        elif images < FEW_IMAGES:
            n = 1
        else:
            if self.load is not None and time.monotonic() - self.looked >= LOOK_EVERY:
                self._look()
            n = self._free_count()
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield n
        finally:
            torch.set_num_threads(before)
