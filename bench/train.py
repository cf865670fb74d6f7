"""Training throughput and start-up, as a user runs it: every figure comes from a real `vq`
process (or torchrun of N of them), measured from the outside. Prints one table; `--json FILE`
also writes the figures with the machine they came from.

- tokenizer training, images/s (the demo VQ-VAE on Fashion-MNIST, or `--preset full`);
- prior training, tokens/s and model FLOPs: on a GPU also MFU against the card's bf16 peak;
- DataLoader images/s: 64x64 RGB PNGs decoded by N workers, no model;
- fit-tokenizer on a folder of 100,000 64x64 RGB PNGs: seconds to the first step, peak memory
  of the whole process tree (PSS, and RSS summed, an upper bound);
- each training figure with 1 process and, with --procs 2, 2 processes under torchrun (gloo on a
  CPU, NCCL on GPUs), at the same global batch.

    python bench/train.py                                  # this machine, demo presets
    python bench/train.py --preset full --device cuda      # one GPU
    python bench/train.py --folder /tmp/photos64           # reuse a folder of PNG crops
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from procmon import run_monitored  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM figures
ENV = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "COLUMNS": "200"}


def vq_cmd(procs: int) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", "vq.cli.main"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), "-m", "vq.cli.main"]


def summary_value(stdout: str, row: str) -> float | None:
    m = re.search(rf"{re.escape(row)}\s*│\s*([-\d.e+]+)", stdout)
    return float(m.group(1)) if m else None


def run(cmd: list[str], what: str, marker: str | None = None, env=None) -> dict:
    r = run_monitored(cmd, env=env or ENV, cwd=str(ROOT), marker=marker, timeout=3600, interval=0.25)
    if r["returncode"] != 0:
        sys.exit(f"{what} failed:\n{r['stderr'][-3000:]}")
    return r


def threads_env(procs: int) -> dict:
    """The same cores for 1 or N processes: N processes share them out."""
    cores = len(os.sched_getaffinity(0))
    return {**ENV, "OMP_NUM_THREADS": str(max(1, cores // procs))}


def tokenizer_speed(args, procs: int, work: Path) -> dict:
    out = work / f"tok_{procs}"
    cmd = vq_cmd(procs) + ["fit-tokenizer", "--preset", args.preset, "--device", args.device, "--steps", str(args.tok_steps),
                           "--eval-every", "1000000", "--workers", "0", "--out", str(out), "--force"]
    r = run(cmd, f"fit-tokenizer ({procs} process)", env=threads_env(procs))
    return {"images_per_s": summary_value(r["stdout"], "images/s"), "steps": args.tok_steps, "procs": procs}


def prior_speed(args, procs: int, tokenizer: Path, work: Path) -> dict:
    out = work / f"prior_{procs}"
    cmd = vq_cmd(procs) + ["fit-prior", "--preset", args.preset, "--device", args.device, "--steps", str(args.prior_steps),
                           "--eval-every", "1000000", "--tokenizer", str(tokenizer), "--codes", str(work / "codes"),
                           "--workers", "0", "--out", str(out), "--force"]
    r = run(cmd, f"fit-prior ({procs} process)", env=threads_env(procs))
    from vq.pipeline.records import PriorRecord

    record = PriorRecord.read(out)
    per_token = record.kind.flops_per_token(record.config)  # None: a kind that does not know its own
    tokens = summary_value(r["stdout"], "tokens/s")
    flops = tokens * per_token if tokens and per_token else None
    return {"tokens_per_s": tokens, "model_tflops": flops / 1e12 if flops else None, "procs": procs,
            "mfu": mfu(flops, args.device), "steps": args.prior_steps}


def mfu(flops: float | None, device: str) -> float | None:
    """Achieved / peak bf16 FLOP/s, for GPUs whose peak we know (a CPU's depends on its vector units)."""
    if not flops or not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return flops / (peak * 1e12 * torch.cuda.device_count()) if peak else None


def warm_page_cache(folder: Path) -> None:
    """Read every file once, so that the loader figures measure decoding, not a cold disk."""
    for p in folder.rglob("*.png"):
        p.read_bytes()


def loader_speed(folder: Path, workers: int, batches: int = 150, batch: int = 128) -> dict:
    from vq.pipeline.data.loader import TrainBatches
    from vq.pipeline.data.sources import load_image_data

    data = load_image_data(str(folder))
    stream = iter(TrainBatches(data.train, batch_size=batch, seed=0, device=torch.device("cpu"), workers=workers))
    next(stream)  # workers started, first batch decoded
    t = time.perf_counter()
    n = sum(next(stream)[1].numel() for _ in range(batches))
    return {"workers": workers, "images_per_s": n / (time.perf_counter() - t)}


def big_folder_start(folder: Path, work: Path) -> dict:
    cmd = vq_cmd(1) + ["fit-tokenizer", "--data", str(folder), "--steps", "30", "--eval-every", "1000000",
                       "--out", str(work / "big"), "--force"]
    r = run(cmd, "fit-tokenizer on the folder", marker="first step after")
    return {"first_step_s": r["marker_s"], "peak_pss_mb": r["peak_tree_pss_mb"], "peak_rss_sum_mb": r["peak_tree_rss_mb"],
            "peak_single_rss_mb": r["peak_single_rss_mb"], "processes": r["peak_procs"], "wall_s": r["wall_s"],
            "images": count_images(folder)}


def count_images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.png"))


def machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} x{torch.cuda.device_count()}"
    return f"{platform.machine()} CPU, {len(os.sched_getaffinity(0))} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="demo", choices=["demo", "full"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    ap.add_argument("--tok-steps", type=int, default=150)
    ap.add_argument("--prior-steps", type=int, default=150)
    ap.add_argument("--folder", type=Path, help="a folder of 64x64 PNGs (default: made with photo_folder.py)")
    ap.add_argument("--count", type=int, default=100_000, help="crops to make when --folder is not given")
    ap.add_argument("--skip-folder", action="store_true", help="only the training figures")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    console = Console()
    results = {"machine": machine(args.device), "torch": torch.__version__, "preset": args.preset}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results["tokenizer"] = [tokenizer_speed(args, p, work) for p in args.procs]
        results["prior"] = [prior_speed(args, p, work / f"tok_{args.procs[0]}", work) for p in args.procs]
        if not args.skip_folder:
            folder = args.folder
            if folder is None:
                folder = work / "photos64"
                subprocess.run([sys.executable, str(ROOT / "bench" / "photo_folder.py"), str(folder), "--count",
                                str(args.count), "--classes", "10", "--test-photos", "2"], check=True)
            warm_page_cache(folder)
            results["loader"] = [loader_speed(folder, w) for w in (1, 2)]
            results["big_folder"] = big_folder_start(folder, work)

    table = Table(title=f"training throughput, {results['machine']}, torch {results['torch']}, preset {args.preset}")
    for col in ("what", "processes / workers", "figure"):
        table.add_column(col)
    for r in results["tokenizer"]:
        table.add_row("tokenizer training", str(r["procs"]), f"{r['images_per_s']:,.0f} images/s")
    for r in results["prior"]:
        extra = (f", {r['model_tflops'] * 1e3:.1f} GFLOP/s" if r["model_tflops"] is not None else "") + (
            f", MFU {r['mfu']:.1%}" if r["mfu"] is not None else "")
        table.add_row("prior training", str(r["procs"]), f"{r['tokens_per_s']:,.0f} tokens/s{extra}")
    for r in results.get("loader", []):
        table.add_row("DataLoader, 64x64 PNGs", f"{r['workers']} workers", f"{r['images_per_s']:,.0f} images/s")
    if "big_folder" in results:
        b = results["big_folder"]
        table.add_row(f"fit-tokenizer, {b['images']:,} PNGs", f"1 + {b['processes'] - 1} workers",
                      f"first step after {b['first_step_s']:.1f} s; peak memory {b['peak_pss_mb']:,.0f} MB PSS "
                      f"({b['peak_rss_sum_mb']:,.0f} MB RSS summed, {b['peak_single_rss_mb']:,.0f} MB largest process)")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
