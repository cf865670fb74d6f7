"""Sampling speed: our KV-cached loop vs x-transformers' `AutoregressiveWrapper.generate` with and
without its KV cache, on the same randomly initialised prior and batch (speed does not depend on
the weights). Prints a table of images per second; `--json FILE` also writes the figures.

    python bench/sampling.py                       # demo-sized prior (7x7 codes) on this machine
    python bench/sampling.py --preset full --device cuda
"""

import argparse
import json
import platform
import statistics
import time
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from x_transformers import AutoregressiveWrapper  # noqa: E402

from vq.pipeline.presets import PRIOR_PRESETS  # noqa: E402
from vq.stage2_prior import CodePrior, PriorConfig, sample_codes  # noqa: E402

GEOMETRY = {"demo": dict(codebook_size=256, height=7, width=7), "full": dict(codebook_size=1024, height=14, width=14)}


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (allocator, kernels)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(GEOMETRY), default="demo")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=32, help="same top-k filter for every method")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--skip-uncached", action="store_true", help="skip the slow no-cache baseline")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    device = torch.device(args.device)
    model_cfg, _ = PRIOR_PRESETS["transformer"][args.preset]
    torch.manual_seed(0)
    model = CodePrior(PriorConfig(**GEOMETRY[args.preset], num_classes=10, **model_cfg)).to(device).eval()
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else torch.autocast(device.type, enabled=False)
    c = model.config
    labels = torch.arange(args.batch, device=device) % c.num_classes
    prompts = model.class_tokens(labels, args.batch, device)
    wrapper = AutoregressiveWrapper(model.net)

    def ours(cfg):
        return lambda: sample_codes(model, labels, cfg_scale=cfg, top_k=args.top_k, generator=torch.Generator(device).manual_seed(0))

    def theirs(cache):
        return lambda: wrapper.generate(prompts, c.seq_len, cache_kv=cache, filter_logits_fn="top_k", filter_kwargs={"k": args.top_k})

    methods = {
        "vq sample_codes (KV cache)": ours(1.0),
        "vq sample_codes (KV cache) + guidance 1.5": ours(1.5),
        "x-transformers generate(cache_kv=True)": theirs(True),
    }
    if not args.skip_uncached:
        methods["x-transformers generate(cache_kv=False)"] = theirs(False)
    results = {}
    with torch.no_grad(), ctx:
        for name, fn in methods.items():
            results[name] = args.batch / timed(fn, device, args.repeats)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    table = Table(title=f"sampling {c.height}x{c.width} codes, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M-parameter prior, "
                        f"batch {args.batch}, {args.dtype}, {where}")
    table.add_column("method")
    table.add_column("images/s", justify="right")
    table.add_column("vs generate(cache_kv=True)", justify="right")
    ref = results["x-transformers generate(cache_kv=True)"]
    for name, ips in results.items():
        table.add_row(name, f"{ips:.1f}", f"{ips / ref:.2f}x")
    Console().print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": where, "torch": torch.__version__, "args": vars(args), "images_per_s": results}, f, indent=2)


if __name__ == "__main__":
    main()
