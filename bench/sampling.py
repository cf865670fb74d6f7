"""Sampling speed: our KV-cached loop (`sample_codes`), the static-shape fast path
(`sample_codes_fast`: eager, fused (the CPU's default), CUDA graphs, torch.compile) and x-transformers'
`AutoregressiveWrapper.generate` with and without its KV cache, each with and without guidance
where it has it, on the same randomly initialised prior and batch (speed does not depend on the
weights). Prints a table of images per second per code geometry; `--json FILE` also writes the
figures, after every timed call, so a run cut short keeps what it measured (`--append` adds to
the rows already there).

Each figure is the median of `--repeats` timed calls, after an untimed warm-up call whose
seconds are reported too: for the recorded modes they include recording the CUDA graphs or
compiling the step. `--interleave` times in rounds of one call of each method, so a machine whose
load changes during the run slows every method alike.

    python bench/sampling.py                                  # demo prior, 7x7 codes, this CPU
    python bench/sampling.py --batch 1 8 64 256 --threads 1 --interleave
    python bench/sampling.py --geometry 7x7 14x14 --kv-heads 1
    python bench/sampling.py --preset full --geometry 7x7 14x14 --device cuda --dtype bf16 --batch 1024
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from x_transformers import AutoregressiveWrapper  # noqa: E402

from vq.stage1_vqvae import VQVAE  # noqa: E402
from vq.stage2_prior import AutoregressivePrior, PriorConfig, sample_codes  # noqa: E402
from vq.stage2_prior.fast import sample_codes_fast  # noqa: E402

PRESET_GEOMETRY = {"demo": "7x7", "full": "14x14"}
METHODS = {
    "plain": "vq sample_codes (KV cache)",
    "fast": "vq sample_codes_fast, eager",
    "fused": "vq sample_codes_fast, fused",
    "graph": "vq sample_codes_fast, CUDA graphs",
    "compile": "vq sample_codes_fast, torch.compile",
    "generate": "x-transformers generate(cache_kv=True)",
    "uncached": "x-transformers generate(cache_kv=False)",
}
DEFAULT_METHODS = {"cpu": ["plain", "fast", "fused", "generate", "uncached"], "cuda": ["plain", "fast", "graph", "compile"]}


def geometry(spec: str) -> tuple[int, int]:
    h, _, w = spec.partition("x")
    return int(h), int(w or h)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def make_runs(args, model: AutoregressivePrior, device: torch.device) -> dict[str, tuple[float, object]]:
    """Row name -> (guidance scale, a call that draws one batch)."""
    c = model.config
    labels = torch.arange(args.batch, device=device) % c.num_classes
    gen = lambda: torch.Generator(device).manual_seed(0)  # noqa: E731
    wrapper = AutoregressiveWrapper(model.net)
    prompts = model.class_tokens(labels, args.batch, device)
    runs = {}
    for method in args.methods:
        for cfg in (1.0, args.guidance):
            name = METHODS[method] + (f" + guidance {cfg:g}" if cfg != 1.0 else "")
            if method == "plain":
                runs[name] = cfg, lambda cfg=cfg: sample_codes(model, labels, guidance=cfg, top_k=args.top_k, generator=gen())
            elif method in ("fast", "fused", "graph", "compile"):
                mode = "eager" if method == "fast" else method
                runs[name] = cfg, lambda cfg=cfg, mode=mode: sample_codes_fast(model, labels, guidance=cfg, top_k=args.top_k,
                                                                               generator=gen(), compile=mode)
            elif cfg == 1.0:  # x-transformers' generate has no guidance
                runs[name] = cfg, lambda cache=method == "generate": wrapper.generate(
                    prompts, c.seq_len, cache_kv=cache, filter_logits_fn="top_k", filter_kwargs={"k": args.top_k})
    return runs


def bench_geometry(args, spec: str, device: torch.device, ctx, record) -> None:
    """Time every method on one code geometry, calling `record(spec, name, row)` whenever a row
    gains a figure. Each method in turn: its warm-up, then its timed runs; with --interleave,
    every warm-up first, then rounds of one run of each method."""
    h, w = geometry(spec)
    model_cfg, _ = AutoregressivePrior.presets[args.preset]
    codebook = VQVAE.presets[args.preset][0]["codebook_size"]
    torch.manual_seed(0)
    config = PriorConfig(codebook_size=codebook, height=h, width=w, num_classes=10, **model_cfg,
                         **({"kv_heads": args.kv_heads} if args.kv_heads else {}))
    model = AutoregressivePrior(config).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    rows: dict[str, dict] = {}

    def warm_up(name: str, cfg: float, fn) -> bool:
        rows[name] = {"guidance": cfg, "params": params}
        try:
            rows[name].update(warmup_s=seconds(fn, device), times=[])
        except Exception as e:  # a mode this machine cannot run (say, CUDA graphs on a CPU): say so, go on
            rows[name]["error"] = f"{type(e).__name__}: {e}"[:300]
        record(spec, name, rows[name])
        return "error" not in rows[name]

    def time_once(name: str, fn) -> None:
        row = rows[name]
        row["times"].append(seconds(fn, device))
        row["seconds"] = statistics.median(row["times"])
        row["images_per_s"] = args.batch / row["seconds"]
        record(spec, name, row)

    with torch.no_grad(), ctx:
        runs = make_runs(args, model, device)
        if args.interleave:
            live = [name for name, (cfg, fn) in runs.items() if warm_up(name, cfg, fn)]
            for _ in range(args.repeats):
                for name in live:
                    time_once(name, runs[name][1])
        else:
            for name, (cfg, fn) in runs.items():
                if warm_up(name, cfg, fn):
                    for _ in range(args.repeats):
                        time_once(name, fn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=list(PRESET_GEOMETRY), default="demo", help="prior size and codebook")
    ap.add_argument("--geometry", nargs="+", help="code maps HxW, e.g. 7x7 14x14 (default: the preset's)")
    ap.add_argument("--kv-heads", type=int, help="key/value heads of the prior (grouped-query attention; default: heads)")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), help="default: plain fast generate uncached on a CPU, "
                    "plain fast graph compile on CUDA")
    ap.add_argument("--guidance", type=float, default=1.5, help="the guided rows' scale")
    ap.add_argument("--batch", type=int, nargs="+", default=[64], help="images per call (guided: twice the rows); "
                    "several: a table each")
    ap.add_argument("--top-k", type=int, default=32, help="same top-k filter for every method")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--interleave", action="store_true", help="time in rounds of one run of each method (a machine "
                    "shared with other work slows every method alike); default: each method's runs in a row, "
                    "so a run cut short keeps whole rows")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--append", action="store_true", help="keep the rows already in --json (other methods or "
                    "geometries measured by an earlier run on this machine)")
    args = ap.parse_args()

    device = torch.device(args.device)
    args.geometry = args.geometry or [PRESET_GEOMETRY[args.preset]]
    args.methods = args.methods or DEFAULT_METHODS["cuda" if device.type == "cuda" else "cpu"]
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    results: dict = {"device": where, "torch": torch.__version__, "runs": [], "rows": {}}
    if args.append and args.json and os.path.exists(args.json):
        with open(args.json) as f:
            earlier = json.load(f)
        results["runs"], results["rows"] = earlier.get("runs", []), earlier.get("rows", {})
    results["runs"].append(vars(args))

    def setting(spec: str) -> str:
        """The key of one table: rows of runs with the same setting are compared (and --append merges them)."""
        kv = f", {args.kv_heads} kv heads" if args.kv_heads else ""
        return f"{spec} codes, {args.preset} prior{kv}, batch {args.batch}, top-k {args.top_k}, {args.dtype}"

    def record(spec: str, name: str, row: dict) -> None:
        results["rows"].setdefault(setting(spec), {})[name] = row
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)

    console = Console(width=None if sys.stdout.isatty() else 150)
    batches = args.batch
    for spec, args.batch in [(spec, batch) for spec in args.geometry for batch in batches]:
        bench_geometry(args, spec, device, ctx, record)
        rows = results["rows"][setting(spec)]
        params = next(iter(rows.values()))["params"]
        table = Table(title=f"sampling {setting(spec)}, {params / 1e6:.1f}M parameters, {where}, median of {args.repeats}")
        for col, justify in (("method", "left"), ("ms / call", "right"), ("images/s", "right"), ("vs sample_codes", "right"),
                             ("first call, s", "right")):
            table.add_column(col, justify=justify)
        for name, row in rows.items():
            if "error" in row or "images_per_s" not in row:
                table.add_row(name, "-", "-", "-", row.get("error", "not timed")[:60])
                continue
            plain = next((r for n, r in rows.items() if n.startswith(METHODS["plain"]) and r["guidance"] == row["guidance"]), {})
            ratio = f"{row['images_per_s'] / plain['images_per_s']:.2f}x" if plain.get("images_per_s") else "-"
            table.add_row(name, f"{row['seconds'] * 1000:,.1f}", f"{row['images_per_s']:,.1f}", ratio, f"{row['warmup_s']:.2f}")
        console.print(table)


if __name__ == "__main__":
    main()
