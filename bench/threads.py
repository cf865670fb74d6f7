"""Several vq processes on one machine: how fast each runs with vq's thread choice (`pipeline/threads.py`)
against torch's default of a compute thread per core (what vq did before: VQ_THREADS=<cores> here).

- `pair`: a demo tokenizer fit (`vq fit-tokenizer --preset demo --steps N`) alone, then two at
  once, started together; each process's own images/s (its loop, less evaluations).
- `studio`: a studio-sized request (`Pipeline.sample(class, n=1)`, guidance 2) on an idle
  machine (both policies' requests interleaved), then while a demo tokenizer fit of the same
  policy runs beside it; median of --requests calls.

Both policies are measured in the same run, one after the other, so the same machine gives both.
Prints a table per stage; --json writes the figures.

    python bench/threads.py --tokenizer runs/tokenizer --prior runs/prior --json bench/results/threads_cpu.json
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VQ = str(Path(sys.executable).with_name("vq"))
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
POLICIES = {"vq's choice": {}, "a thread per core (before)": {"VQ_THREADS": str(CORES)}}


def environment(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VQ_THREADS", "OMP_NUM_THREADS")}
    return {**env, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **extra}


def start_fit(out: Path, steps: int, extra: dict) -> subprocess.Popen:
    command = [VQ, "fit-tokenizer", "--preset", "demo", "--steps", str(steps), "--eval-every", str(10 * steps), "--out", str(out)]
    return subprocess.Popen(command, env=environment(extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> dict:
    text = process.communicate()[0]
    found = re.search(r"images/s\D+([\d.]+)", text)
    first = next((line.strip() for line in text.splitlines() if line.strip().startswith("threads:")), "")
    if process.returncode or not found:
        raise SystemExit(f"vq fit-tokenizer failed ({process.returncode}):\n{text[-2000:]}")
    changes = [line.strip() for line in text.splitlines() if "->" in line and line.strip().startswith("threads:")]
    return {"images_per_s": float(found[1]), "threads": first, "changes": changes}


def pair(args, work: Path) -> dict:
    rows = {}
    for name, extra in POLICIES.items():
        alone = finish(start_fit(work / "alone", args.steps, extra))
        both = [start_fit(work / f"pair{i}", args.steps, extra) for i in range(2)]
        each = [finish(p) for p in both]
        rows[name] = {"alone": alone, "pair": each}
        print(name, "alone", alone["images_per_s"], "two at once", [e["images_per_s"] for e in each], flush=True)
        for folder in ("alone", "pair0", "pair1"):
            subprocess.run(["rm", "-rf", str(work / folder)], check=True)
    return rows


def studio(args, work: Path) -> dict:
    """Idle: both policies' requests interleaved, one of each in turn. Beside a fit: each policy's
    requests while a fit of the same policy runs."""
    from vq.pipeline import Pipeline

    pipes = {}
    for name, extra in POLICIES.items():  # a Pipeline reads the thread variables when it is made
        os.environ.pop("VQ_THREADS", None)
        os.environ.update(extra)
        pipes[name] = Pipeline.from_pretrained(args.tokenizer, args.prior, device="cpu")
    os.environ.pop("VQ_THREADS", None)

    def request(name: str) -> float:
        t = time.perf_counter()
        pipes[name].sample(args.class_name, n=1, guidance=2.0)
        return time.perf_counter() - t

    idle = {name: [] for name in POLICIES}
    for name in POLICIES:
        request(name)  # warm
    for _ in range(args.requests):
        for name in POLICIES:
            idle[name].append(request(name))
    rows = {}
    for name, extra in POLICIES.items():
        fit = start_fit(work / "beside", 100_000, extra)
        time.sleep(args.settle)  # past the fit's start-up, into its loop
        busy = [request(name) for _ in range(args.requests)]
        fit.terminate()
        fit.communicate()
        subprocess.run(["rm", "-rf", str(work / "beside")], check=True)
        rows[name] = {"idle_s": statistics.median(idle[name]), "busy_s": statistics.median(busy), "idle": idle[name], "busy": busy}
        print(name, f"idle {rows[name]['idle_s'] * 1000:.0f} ms, beside a fit {rows[name]['busy_s'] * 1000:.0f} ms", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", nargs="+", choices=["pair", "studio"], default=["pair", "studio"])
    ap.add_argument("--steps", type=int, default=300, help="steps of each tokenizer fit (pair)")
    ap.add_argument("--tokenizer", type=Path, default=Path("runs/tokenizer"))
    ap.add_argument("--prior", type=Path, default=Path("runs/prior"))
    ap.add_argument("--class", dest="class_name", default="Sneaker")
    ap.add_argument("--requests", type=int, default=15, help="timed requests, idle and beside a fit (studio)")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds between starting the fit and timing (studio)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": CORES, "python": platform.python_version(),
                           "load_before": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory() as tmp:
        if "pair" in args.stages:
            results["pair"] = pair(args, Path(tmp))
        if "studio" in args.stages:
            results["studio"] = studio(args, Path(tmp))
    results["machine"]["load_after"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"\n{results['machine']}")
    if "pair" in results:
        print("\n| threads | one fit alone: images/s | two at once: images/s each | each, share of alone |\n|---|---:|---:|---:|")
        for name, row in results["pair"].items():
            alone, each = row["alone"]["images_per_s"], [e["images_per_s"] for e in row["pair"]]
            print(f"| {name} | {alone:.0f} | {' / '.join(f'{e:.0f}' for e in each)} | "
                  f"{' / '.join(f'{e / alone:.0%}' for e in each)} |")
    if "studio" in results:
        print("\n| threads | 1 image, idle | beside a tokenizer fit | ratio |\n|---|---:|---:|---:|")
        for name, row in results["studio"].items():
            print(f"| {name} | {row['idle_s'] * 1000:.0f} ms | {row['busy_s'] * 1000:.0f} ms | {row['busy_s'] / row['idle_s']:.1f}x |")


if __name__ == "__main__":
    main()
