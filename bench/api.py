"""One `Pipeline` loaded once and called N times for n images, against N `vq sample -n n`
processes (each starts Python, imports torch, loads both runs, samples and writes PNGs), in one
run on one machine. Both draw the same classes and seeds; the table says whether their pixels
agree. Prints a table; --json writes the figures.

    python bench/api.py --tokenizer runs/tokenizer --prior runs/prior
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", type=Path, default=Path("runs/tokenizer"))
    ap.add_argument("--prior", type=Path, default=Path("runs/prior"))
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("-n", type=int, default=8, help="images per call")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from vq.pipeline import Pipeline

    t0 = time.perf_counter()
    pipe = Pipeline.from_pretrained(args.tokenizer, args.prior, device=args.device)
    load = time.perf_counter() - t0
    names = pipe.class_names
    calls = [(names[i % len(names)], i) for i in range(args.calls)]
    t0 = time.perf_counter()
    api = [pipe.sample(name, n=args.n, seed=seed, output_type="pt") for name, seed in calls]
    api_calls = time.perf_counter() - t0

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for i, (name, seed) in enumerate(calls):
            out = Path(tmp) / str(i)
            subprocess.run([sys.executable, "-m", "vq.cli.main", "sample", "--tokenizer", str(args.tokenizer),
                            "--prior", str(args.prior), "--class", name, "-n", str(args.n), "--seed", str(seed),
                            "--device", args.device, "--out", str(out)], check=True, capture_output=True, env=env)
        cli = time.perf_counter() - t0
        for i, (name, _) in enumerate(calls):
            files = sorted((Path(tmp) / str(i)).glob("*_[0-9]*.png"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
            written = np.stack([np.asarray(Image.open(f)) for f in files])
            same &= np.array_equal(written, api[i][:, 0].numpy() if api[i].shape[1] == 1 else api[i].permute(0, 2, 3, 1).numpy())

    rows = [
        ("Pipeline: load once", load, None),
        (f"Pipeline: {args.calls} calls of {args.n} images", api_calls, api_calls / args.calls),
        ("Pipeline: load + calls", load + api_calls, (load + api_calls) / args.calls),
        (f"{args.calls} `vq sample -n {args.n}` processes", cli, cli / args.calls),
    ]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"device {pipe.device}, threads {torch.get_num_threads()}")
    print("| what | seconds | per call |\n|---|---:|---:|")
    for what, total, per in rows:
        print(f"| {what} | {total:.2f} | {'' if per is None else f'{per:.3f}'} |")
    speedup = cli / (load + api_calls)
    print(f"\nprocesses / (load + calls): {speedup:.1f}x; processes / calls alone: {cli / api_calls:.1f}x; "
          f"same pixels from both: {same}")
    if args.json:
        args.json.write_text(json.dumps({"load_s": load, "api_calls_s": api_calls, "cli_processes_s": cli,
                                         "calls": args.calls, "n": args.n, "device": str(pipe.device),
                                         "same_pixels": bool(same), "torch": torch.__version__}, indent=2) + "\n")


if __name__ == "__main__":
    main()
