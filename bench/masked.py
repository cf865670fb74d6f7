"""Issue 19: the masked prior (MaskGIT, `vq fit-prior --kind masked`) against the autoregressive
prior (`vq fit-prior`) over the same tokenizer's codes. Five stages, chosen with --stages:

- `train`: both priors trained at the same time, as two `vq fit-prior` processes with one thread
  each (OMP_NUM_THREADS=1), so that both get the same machine under the same load, with the same
  --time-budget, seed and preset. Under a time budget vq's trainer ignores the preset's --steps
  (the budget wins: the schedule is fitted to the steps the budget allows, and the run stops at
  the first loss read after the budget is spent), so no --steps is passed. Recorded: steps
  reached, vq's loop and wall seconds, tokens/s, the held-out figure of each kind (test bits per
  code token for the autoregressive prior; the masked-code cross-entropy, which is not a
  likelihood, for the masked one), and each process's seconds measured from outside.
- `eval`: `vq eval` of both runs, guided (--guidance, the same seed), at --per-class images of
  every class (10,000 at the default 1,000): the judge's class accuracy and the Fréchet distance
  in the judge's feature space against the whole test split, and the sampling seconds per image.
  The masked prior decodes with its own default steps unless --eval-steps says otherwise.
- `sweep`: `vq eval`'s sample figures of the masked prior at each of --sweep-steps decoding
  steps, at the smaller --sweep-per-class, beside the autoregressive prior's at the same n (a
  Fréchet distance depends on n): the measurement to choose the masked prior's default steps
  by. It runs in this process, through the functions `vq eval` calls (`generate_images`, `judge`,
  the same labels, seed and judge), so the data and the judge's test features are loaded once.
- `speed`: randomly initialised priors of the preset's size (speed does not depend on the
  weights) at each --geometry: the latency of one image and the throughput of larger --batches,
  guided (twice the rows), the autoregressive fast path `sample_codes_fast` against the masked
  `sample_masked_fast` at each of --speed-steps. Median of --repeats timed calls after an untimed
  warm-up, timed in rounds of one call of each method, so a load that changes during the run
  slows every method alike. On a CPU that other work shares, pass --threads 1: torch's default of
  a thread per core makes these small models' many short kernels wait on each other (measured
  here under a load average of 4-5 on 2 cores: 9.5 s for one autoregressive image with 2
  threads, 0.17 s with 1).
- `complete`: --complete-images test images (drawn as `vq eval` draws its completions), three
  masks over the code grid: a centre hole (the cells at least h // 4 rows and w // 4 columns from
  the edges unknown: 5x5 of 7x7), the left half (the first w // 2 columns) unknown, and
  --random-unknown of the cells unknown at random positions (a new seeded draw per image). Each
  image is completed once through the Python API (`plan_completion` + `Pipeline.run_completion`,
  the path `vq complete` takes: encode, prior, decode), without a class, as `vq complete` does by
  default. Without a class, guidance would mix the null rows with themselves (a no-op at twice
  the rows), so --complete-guidance is 1. The masked prior completes natively; the autoregressive
  prior forces the known codes and keeps the likeliest of its candidates, with the candidates set
  so that its time per completion is at least the masked prior's (the smallest count that reaches
  it on the first --calibration-images), and also at `vq complete`'s default of 8. Measured: the
  share of completions the judge gives the image's true class (class kept), the share whose
  known codes came back unchanged, the PSNR of the known pixels against the original (beside the
  tokenizer's reconstruction's, where every code is the image's own), and seconds per completion.

Every figure goes to --json as soon as it is measured. The file keeps the stages of earlier runs,
and a stage that runs again replaces its own figures, so the measurement can be made piecewise,
and a run cut short keeps what it measured. The tables at the end are printed from that file.
The priors and the eval reports live in --work (`autoregressive/`, `masked/`, `eval_*.json`,
`*.log`); the judge is vq eval's, cached in --classifier (trained once, a few minutes on a CPU).

    python bench/masked.py                                   # every stage, the full measurement
    python bench/masked.py --stages speed --geometry 7x7     # one stage
    python bench/masked.py --stages eval sweep complete      # on priors trained by an earlier run
    python bench/masked.py --work /tmp/vq_masked_rehearsal --json /tmp/vq_masked_rehearsal/masked.json \\
        --force --time-budget 20s --per-class 5 --sweep-per-class 5 --sweep-steps 4 8 --repeats 1 --batches 1 8 \\
        --speed-steps 8 4 --complete-images 10 --calibration-images 2 --threads 1   # a rehearsal: figures that mean nothing
"""

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=FutureWarning)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from sampling import geometry, seconds  # noqa: E402  (bench/sampling.py: "HxW" -> (h, w); a timed call)
from vq.pipeline import Pipeline  # noqa: E402
from vq.pipeline.data.images import to_float  # noqa: E402
from vq.pipeline.data.loader import EvalImages, Skipped  # noqa: E402
from vq.pipeline.data.sources import load_data  # noqa: E402
from vq.pipeline.device import resolve_device  # noqa: E402
from vq.pipeline.evaluate.judge import ensure_classifier, judge, predict  # noqa: E402
from vq.pipeline.files import atomic_write_json, read_json  # noqa: E402
from vq.pipeline.generate.draw import CHUNK, generate_images  # noqa: E402
from vq.pipeline.generate.plans import plan_completion  # noqa: E402
from vq.pipeline.kinds import prior_class, tokenizer_class  # noqa: E402
from vq.pipeline.metrics import accuracy, psnr  # noqa: E402
from vq.stage2_prior import SamplingOptions  # noqa: E402
from vq.stage2_prior.fast import sample_codes_fast  # noqa: E402
from vq.stage2_prior.masked_sampling import STEPS, sample_masked_fast  # noqa: E402
from vq.stage2_prior.masking import random_positions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KINDS = ("autoregressive", "masked")
STAGES = ("train", "eval", "sweep", "speed", "complete")
MASKS = ("centre", "left", "random")
CANDIDATE_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # tried in turn for the equal-time count
VQ = [sys.executable, "-m", "vq.cli.main"]


# --- the results file ----------------------------------------------------------------------------

class Results:
    """Every figure, in one JSON file rewritten (atomically) whenever a figure is added. Stages
    measured by earlier runs stay; a stage run again starts from an empty record."""

    def __init__(self, path: Path, args: argparse.Namespace):
        self.path = path
        self.data = read_json(path) if path.exists() else {}
        self.data.setdefault("runs", []).append({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
        self.data["machine"] = machine()

    def stage(self, name: str) -> dict:
        self.data[name] = {}
        return self.data[name]

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


# --- quality: training at equal wall time, vq eval, the steps sweep ------------------------------

def prior_dir(args, kind: str) -> Path:
    return args.work / kind


def fit_command(args, kind: str) -> list[str]:
    return [*VQ, "fit-prior", "--kind", kind, "--tokenizer", str(args.tokenizer), "--out", str(prior_dir(args, kind)),
            "--preset", args.preset, "--time-budget", args.time_budget, "--seed", str(args.seed), "--workers", "0",
            "--device", args.device, "--no-wandb", *(["--force"] if args.force else [])]


def summary_rows(text: str) -> dict:
    """The rows of the summary table a vq command prints (`key │ value`), numbers as numbers."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 2 and cells[0]:
            try:
                rows[cells[0]] = float(cells[1])
            except ValueError:
                rows[cells[0]] = cells[1]
    return rows


def run_logged(cmd: list[str], log: Path, env: dict | None = None) -> None:
    """Run a vq command with its output in `log`; on failure, stop with the log's last lines."""
    with open(log, "w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env).returncode
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        sys.exit(f"{' '.join(cmd[2:4])} failed (exit {code}); the end of {log}:\n{tail}")


def train_stage(args, results: Results, console: Console) -> None:
    """Both priors at once, one thread each, the same budget: equal wall time on the same machine."""
    for kind in KINDS:
        if (prior_dir(args, kind) / "config.json").exists() and not args.force:
            sys.exit(f"{prior_dir(args, kind)} holds a prior already: pass --force to train again, or leave `train` "
                     "out of --stages to measure it")
    run_logged([*VQ, "export-codes", "--tokenizer", str(args.tokenizer), "--device", args.device],
               args.work / "export.log")  # reused when current; both trainings then only read it
    threads = str(args.train_threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "COLUMNS": "200"}
    record = results.stage("train")
    record.update(time_budget=args.time_budget, threads_each=args.train_threads, preset=args.preset, seed=args.seed)
    console.print(f"training both priors at once for {args.time_budget} each ({threads} thread each)")
    logs = {kind: args.work / f"fit_{kind}.log" for kind in KINDS}
    t0 = time.perf_counter()
    files = {kind: open(logs[kind], "w") for kind in KINDS}
    procs = {kind: subprocess.Popen(fit_command(args, kind), stdout=files[kind], stderr=subprocess.STDOUT, cwd=REPO,
                                    env=env) for kind in KINDS}
    ended: dict[str, float] = {}
    while len(ended) < len(procs):  # each one's seconds, measured from outside
        for kind, p in procs.items():
            if kind not in ended and p.poll() is not None:
                ended[kind] = time.perf_counter() - t0
                files[kind].close()
        time.sleep(0.5)
    for kind, p in procs.items():
        if p.returncode != 0:
            tail = "\n".join(logs[kind].read_text().splitlines()[-15:])
            sys.exit(f"vq fit-prior --kind {kind} failed (exit {p.returncode}); the end of {logs[kind]}:\n{tail}")
        rows = summary_rows(logs[kind].read_text())
        record[kind] = {"steps": int(rows["steps"]), "loop_seconds": rows["train seconds"],
                        "wall_seconds": rows["wall seconds"], "process_seconds": ended[kind],
                        "tokens_per_s": rows["tokens/s"],
                        "metrics": read_json(prior_dir(args, kind) / "config.json").get("metrics", {}),
                        "dir": str(prior_dir(args, kind)), "log": str(logs[kind])}
    results.save()


def vq_eval(args, kind: str, per_class: int, steps: int | None, name: str) -> dict:
    """`vq eval` of one prior, guided, without its completion figure (the `complete` stage
    measures completion) -> the figures compared here, with the report's path."""
    out = args.work / f"eval_{name}.json"
    cmd = [*VQ, "eval", "--tokenizer", str(args.tokenizer), "--prior", str(prior_dir(args, kind)),
           "--per-class", str(per_class), "--complete-images", "0", "--guidance", str(args.guidance),
           "--seed", str(args.seed), "--classifier", str(args.classifier), "--device", args.device, "--out", str(out),
           *(["--steps", str(steps)] if steps else [])]
    run_logged(cmd, args.work / f"eval_{name}.log", {**os.environ, "COLUMNS": "200"})
    r = read_json(out)
    s = r["samples"]
    return {"n": s["n"], "acc": s["acc"], "fd": s["fd"], "sample_seconds": s["seconds"],
            "seconds_per_image": s["seconds"] / s["n"], "steps": steps, "held_out": r.get("prior", {}),
            "real_train": {k: r["real_train"][k] for k in ("n", "acc", "fd")},
            "reconstructions": {k: r["reconstructions"][k] for k in ("n", "acc", "fd")},
            "judge_test_acc": r["classifier"]["test_acc"], "eval_seconds": r["seconds"], "report": str(out)}


def eval_stage(args, results: Results, console: Console) -> None:
    record = results.stage("eval")
    record.update(per_class=args.per_class, guidance=args.guidance, seed=args.seed)
    for kind in KINDS:
        steps = args.eval_steps if kind == "masked" else None
        record[kind] = vq_eval(args, kind, args.per_class, steps, kind)
        results.save()
        console.print(f"eval {kind}: acc {record[kind]['acc']:.4f}, FD {record[kind]['fd']:.3f} (n={record[kind]['n']})")


def judge_data(pipe: Pipeline, args):
    """The tokenizer's test split, as `vq eval` reads it, and `vq eval`'s judge (from its cache,
    or trained into it)."""
    data = load_data(pipe.tokenizer_info.data_options())
    test = EvalImages(data.test, None, Skipped()).split
    classifier = ensure_classifier(data, test, args.classifier, args.device)
    return test, classifier.to(resolve_device(args.device)).eval()


def decode_settings(steps: int | None) -> dict:
    """A masked prior's own sampling settings (`SamplingOptions.settings`): its decoding steps, or
    none (its default). An autoregressive prior takes none."""
    return {"steps": steps} if steps else {}


def sweep_stage(args, results: Results, console: Console) -> None:
    """`vq eval`'s sample figures (the same labels, seed, generator and judge, through vq's own
    `generate_images` and `judge`) at each decoding step count, in this process: the data, the
    judge and the test split's features are loaded once instead of once per `vq eval`."""
    pipes = {kind: Pipeline.from_pretrained(args.tokenizer, prior_dir(args, kind), device=args.device) for kind in KINDS}
    test, classifier = judge_data(pipes["masked"], args)
    _, test_feats = predict(classifier, to_float(test.images))
    names = pipes["masked"].class_names
    labels = torch.arange(len(names)).repeat_interleave(args.sweep_per_class)
    record = results.stage("sweep")
    record.update(per_class=args.sweep_per_class, guidance=args.guidance, seed=args.seed, masked={})
    warm = set()
    for kind, steps in [("autoregressive", None)] + [("masked", s) for s in args.sweep_steps]:
        pipe, opts = pipes[kind], SamplingOptions(guidance=args.guidance, seed=args.seed, settings=decode_settings(steps))
        if kind not in warm:  # untimed: the first call of a prior makes its static buffers
            warm.add(kind)
            generate_images(pipe.tokenizer, pipe.prior, labels[:CHUNK], opts)
        t = time.perf_counter()
        images = generate_images(pipe.tokenizer, pipe.prior, labels, opts).cpu()
        elapsed = time.perf_counter() - t
        j = judge(classifier, images, labels, test_feats, test.labels, names)
        row = {"n": j.n, "acc": j.acc, "fd": j.fd, "sample_seconds": elapsed, "seconds_per_image": elapsed / j.n}
        if kind == "masked":
            record["masked"][str(steps)] = row
        else:
            record[kind] = row
        results.save()
        console.print(f"sweep {kind}{f' {steps} steps' if steps else ''}: acc {row['acc']:.4f}, FD {row['fd']:.3f}, "
                      f"{1000 * row['seconds_per_image']:.2f} ms/image")


# --- speed: random priors of the preset's size -----------------------------------------------------

def random_prior(kind: str, preset: str, grid: tuple[int, int], device: torch.device):
    """A randomly initialised prior of the preset's size over a grid of the preset's codebook."""
    cls = prior_class(kind)
    model_cfg, _ = cls.presets[preset]
    codebook = tokenizer_class("vqvae").presets[preset][0]["codebook_size"]
    torch.manual_seed(0)
    config = cls.config_class(codebook_size=codebook, height=grid[0], width=grid[1], num_classes=10, **model_cfg)
    return cls(config).to(device).eval()


def speed_methods(args, grid: tuple[int, int], device: torch.device) -> dict:
    """Row name -> (the prior, a call drawing guided code maps for labels with a generator)."""
    ar, masked = (random_prior(kind, args.preset, grid, device) for kind in KINDS)
    g = args.guidance
    methods = {"autoregressive, sample_codes_fast": (ar, lambda y, gen: sample_codes_fast(ar, y, guidance=g, generator=gen))}
    for s in args.speed_steps:
        methods[f"masked {s} steps, sample_masked_fast"] = (
            masked, lambda y, gen, s=s: sample_masked_fast(masked, y, guidance=g, generator=gen, steps=s))
    return methods


def speed_stage(args, results: Results, console: Console) -> None:
    device = resolve_device(args.device)
    record = results.stage("speed")
    record.update(guidance=args.guidance, preset=args.preset, repeats=args.repeats, threads=torch.get_num_threads(),
                  device=str(device), geometries={})
    for spec in args.geometry:
        grid = geometry(spec)
        methods = speed_methods(args, grid, device)
        rows = record["geometries"][spec] = {name: {"params": sum(p.numel() for p in m.parameters()), "batches": {}}
                                             for name, (m, _) in methods.items()}
        for batch in args.batches:
            labels = torch.arange(batch, device=device) % 10
            calls = {name: (lambda fn=fn: fn(labels, torch.Generator(device).manual_seed(0)))
                     for name, (_, fn) in methods.items()}
            for name, call in calls.items():  # the warm-up: one-time costs (static buffers, allocations)
                rows[name]["batches"][str(batch)] = {"warmup_s": seconds(call, device), "times": []}
                results.save()
            for _ in range(args.repeats):  # rounds of one call of each method
                for name, call in calls.items():
                    row = rows[name]["batches"][str(batch)]
                    row["times"].append(seconds(call, device))
                    row["seconds"] = statistics.median(row["times"])
                    row["images_per_s"] = batch / row["seconds"]
                    results.save()
            console.print(f"speed {spec} batch {batch}: " + ", ".join(
                f"{name.split(',')[0]} {rows[name]['batches'][str(batch)]['seconds']:.3f} s" for name in calls))


# --- completion with irregular masks -----------------------------------------------------------

def code_masks(kind: str, count: int, grid: tuple[int, int], unknown_share: float, seed: int) -> torch.Tensor:
    """(count, h, w) bool, True = known: a centre hole, the left half unknown, or a share of the
    cells unknown at random positions (a fresh seeded draw for each image)."""
    h, w = grid
    known = torch.ones(count, h, w, dtype=torch.bool)
    if kind == "centre":
        known[:, h // 4 : h - h // 4, w // 4 : w - w // 4] = False
    elif kind == "left":
        known[:, :, : w // 2] = False
    elif kind == "random":
        n = h * w
        cells = min(n - 1, max(1, round(unknown_share * n)))
        unknown = random_positions(torch.full((count,), cells), n, torch.Generator().manual_seed(seed))
        known = ~unknown.view(count, h, w)
    else:
        raise ValueError(f"unknown mask {kind}")
    return known


def pixel_mask(known: torch.Tensor, size: int) -> torch.Tensor:
    """(h, w) known codes -> (size, size) bool pixels, each code's cell whole."""
    return F.interpolate(known[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0.5


def draw_test_images(test, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n test images (uint8) and their labels, drawn as `vq eval` draws the images it completes."""
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n]
    return test.images[idx], test.labels[idx]


def complete_one(pipe: Pipeline, image: torch.Tensor, known: torch.Tensor, opts: SamplingOptions, candidates: int):
    """One unconditional completion through the API `vq complete` uses -> (Completions, seconds)."""
    request = plan_completion(pipe.tokenizer_info, pipe.prior_info, image, pixel_mask(known, pipe.image_size), paste=False,
                              n=1, options=opts, candidates=candidates)
    t = time.perf_counter()
    done = pipe.run_completion(request)
    elapsed = time.perf_counter() - t
    assert torch.equal(done.known, known), "the pixel mask did not give back the code mask"
    return done, elapsed


def completion_options(pipe: Pipeline, args, seed: int) -> SamplingOptions:
    """The options of one completion: --complete-guidance, and for the masked prior --eval-steps
    (the autoregressive prior has no decoding steps, and refuses them)."""
    steps = args.eval_steps if pipe.prior_info.kind.parallel_decoding else None
    return SamplingOptions(guidance=args.complete_guidance, seed=seed, settings=decode_settings(steps))


def completion_seconds(pipe: Pipeline, images, known, args, candidates: int) -> float:
    """The median seconds of one completion on these images, after a warm-up call."""
    complete_one(pipe, images[0], known[0], completion_options(pipe, args, args.seed), candidates)
    return statistics.median(complete_one(pipe, x, k, completion_options(pipe, args, args.seed + i), candidates)[1]
                             for i, (x, k) in enumerate(zip(images, known)))


def equal_time_candidates(pipes: dict, images, known, args) -> dict:
    """The fewest candidates whose autoregressive completion takes at least the masked prior's
    time, timed on the first calibration images."""
    k = args.calibration_images
    masked = completion_seconds(pipes["masked"], images[:k], known[:k], args, 1)
    tried = {}
    for c in CANDIDATE_LADDER:
        tried[str(c)] = completion_seconds(pipes["autoregressive"], images[:k], known[:k], args, c)
        if tried[str(c)] >= masked:
            break
    return {"images": k, "masked_seconds": masked, "autoregressive_seconds": tried, "candidates": c}


def score_completions(pipe: Pipeline, images, labels, known, classifier, args, candidates: int) -> dict:
    """Complete every image once -> class kept, known codes kept, known-pixel PSNR, seconds."""
    outs, kept, times, psnr_done, psnr_recon = [], [], [], [], []
    for i, (x, k) in enumerate(zip(images, known)):
        done, elapsed = complete_one(pipe, x, k, completion_options(pipe, args, args.seed + i), candidates)
        original = pipe.encode(x)[0]
        px = pixel_mask(k, pipe.image_size).expand_as(x)
        real, recon = to_float(x), to_float(pipe.reconstruct(x, output_type="pt")[0])
        outs.append(done.images[0])
        kept.append(bool(torch.equal(done.code_maps[0][k], original[k])))
        times.append(elapsed)
        psnr_done.append(float(psnr(to_float(done.images[0])[px][None], real[px][None])))
        psnr_recon.append(float(psnr(recon[px][None], real[px][None])))
    pred, _ = predict(classifier, to_float(torch.stack(outs)))
    return {"n": len(outs), "candidates": candidates, "class_kept": accuracy(pred, labels),
            "known_codes_kept": sum(kept) / len(kept), "known_pixel_psnr": statistics.mean(psnr_done),
            "reconstruction_known_pixel_psnr": statistics.mean(psnr_recon),
            "seconds_median": statistics.median(times), "seconds_mean": statistics.mean(times)}


def complete_stage(args, results: Results, console: Console) -> None:
    pipes = {kind: Pipeline.from_pretrained(args.tokenizer, prior_dir(args, kind), device=args.device) for kind in KINDS}
    test, classifier = judge_data(pipes["masked"], args)
    images, labels = draw_test_images(test, args.complete_images, args.seed)
    grid = pipes["masked"].code_shape
    record = results.stage("completion")
    record.update(n=len(images), guidance=args.complete_guidance, steps=args.eval_steps, seed=args.seed,
                  random_unknown=args.random_unknown, threads=torch.get_num_threads(), grid=list(grid), masks={})
    masks = {kind: code_masks(kind, len(images), grid, args.random_unknown, args.seed) for kind in args.masks}
    calibration = record["calibration"] = equal_time_candidates(pipes, images, masks[args.masks[0]], args)
    calibration["mask"] = args.masks[0]
    results.save()
    equal = calibration["candidates"]
    console.print(f"completion: {plural(equal, 'candidate')} give the autoregressive prior at least the masked prior's time")
    methods = {f"masked, native ({args.eval_steps or STEPS} steps)": ("masked", 1),
               f"autoregressive, {plural(equal, 'candidate')} (equal time)": ("autoregressive", equal)}
    for c in args.ar_candidates:
        if c != equal:
            methods[f"autoregressive, {plural(c, 'candidate')}"] = ("autoregressive", c)
    for mask in args.masks:
        rows = record["masks"][mask] = {"unknown_codes_mean": float((~masks[mask]).flatten(1).sum(1).float().mean())}
        for name, (kind, candidates) in methods.items():
            rows[name] = score_completions(pipes[kind], images, labels, masks[mask], classifier, args, candidates)
            results.save()
            console.print(f"completion {mask}, {name}: class kept {rows[name]['class_kept']:.3f}, "
                          f"{rows[name]['seconds_median']:.3f} s each")


# --- tables ----------------------------------------------------------------------------------------

def table(title: str, columns: list[str]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    return t


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def held_out(figures: dict) -> str:
    if "test_bits_per_token" in figures:
        return f"{figures['test_bits_per_token']:.3f} bits/token (NLL)"
    if "test_masked_bits_per_code" in figures:
        return f"{figures['test_masked_bits_per_code']:.3f} bits/code (masked CE, not a likelihood)"
    return "-"


def print_quality(data: dict, console: Console) -> None:
    train, ev = data.get("train", {}), data.get("eval", {})
    if not any(kind in ev or kind in train for kind in KINDS):
        return
    guidance = f"guidance {ev['guidance']:g}, " if ev else ""
    t = table(f"quality at equal training time ({train.get('time_budget', '?')} each, {train.get('threads_each', '?')} "
              f"thread each, concurrently; vq eval, {guidance}n = {next((ev[k]['n'] for k in KINDS if k in ev), '-')})",
              ["prior", "steps", "loop s", "tokens/s", "held-out", "class acc", "Fréchet dist.", "ms / image"])
    for kind in KINDS:
        tr, e = train.get(kind, {}), ev.get(kind, {})
        steps = f" ({e.get('steps') or STEPS} steps)" if kind == "masked" and e else ""
        t.add_row(kind + steps, str(tr.get("steps", "-")), f"{tr['loop_seconds']:.0f}" if tr else "-",
                  f"{tr['tokens_per_s']:,.0f}" if tr else "-", held_out(tr.get("metrics", {})),
                  f"{e['acc']:.4f}" if e else "-", f"{e['fd']:.3f}" if e else "-",
                  f"{1000 * e['seconds_per_image']:.2f}" if e else "-")
    if "autoregressive" in ev:
        for name in ("real_train", "reconstructions"):
            r = ev["autoregressive"][name]
            t.add_row(name.replace("_", " ") + (" (floor)" if name == "real_train" else ""), "", "", "", "",
                      f"{r['acc']:.4f}", f"{r['fd']:.3f}", "")
    console.print(t)
    if all(kind in ev for kind in KINDS):
        ar, m = ev["autoregressive"], ev["masked"]
        console.print(f"masked vs autoregressive: FD {m['fd'] / ar['fd']:.3f}x (goal <= 1.10: "
                      f"{'met' if m['fd'] <= 1.1 * ar['fd'] else 'not met'}), accuracy {m['acc'] - ar['acc']:+.4f} "
                      f"(goal >= 0: {'met' if m['acc'] >= ar['acc'] else 'not met'})")


def print_sweep(data: dict, console: Console) -> None:
    sw = data.get("sweep")
    if not sw or not sw.get("masked"):
        return
    n = next(iter(sw["masked"].values()))["n"]
    t = table(f"masked prior: decoding steps (vq eval's samples, guidance {sw['guidance']:g}, n = {n:,})",
              ["prior", "class acc", "Fréchet dist.", "ms / image"])
    rows = {f"masked, {s} steps": r for s, r in sw["masked"].items()}
    if "autoregressive" in sw:
        rows["autoregressive (reference)"] = sw["autoregressive"]
    for name, r in rows.items():
        t.add_row(name, f"{r['acc']:.4f}", f"{r['fd']:.3f}", f"{1000 * r['seconds_per_image']:.2f}")
    console.print(t)
    best_fd = min(sw["masked"], key=lambda s: sw["masked"][s]["fd"])
    best_acc = max(sw["masked"], key=lambda s: sw["masked"][s]["acc"])
    console.print(f"best Fréchet distance at {best_fd} steps; best class accuracy at {best_acc} steps")


def print_speed(data: dict, console: Console) -> None:
    sp = data.get("speed")
    if not sp:
        return
    for spec, rows in sp["geometries"].items():
        batches = sorted({int(b) for r in rows.values() for b in r["batches"]})
        ar = next(r for name, r in rows.items() if name.startswith("autoregressive"))
        masked = next(r for name, r in rows.items() if name.startswith("masked"))
        params = f"{ar['params'] / 1e6:.2f}M and {masked['params'] / 1e6:.2f}M parameters"
        t = table(f"sampling speed, {spec} codes, {sp['preset']} priors ({params}), guidance {sp['guidance']:g}, "
                  f"{sp['device']}, torch threads {sp['threads']}, median of {sp['repeats']}",
                  ["method"] + [("1 image: ms (AR / this)" if b == 1 else f"batch {b}: images/s (this / AR)") for b in batches])
        for name, r in rows.items():
            cells = []
            for b in batches:
                row, base = r["batches"].get(str(b), {}), ar["batches"].get(str(b), {})
                if "seconds" not in row:
                    cells.append("-")
                elif b == 1:
                    cells.append(f"{1000 * row['seconds']:.1f} ({base['seconds'] / row['seconds']:.2f}x)")
                else:
                    cells.append(f"{row['images_per_s']:,.1f} ({row['images_per_s'] / base['images_per_s']:.2f}x)")
            t.add_row(name, *cells)
        console.print(t)


def print_completion(data: dict, console: Console) -> None:
    co = data.get("completion")
    if not co or not co.get("masks"):
        return
    cal = co["calibration"]
    console.print(f"equal time: the masked prior took {cal['masked_seconds']:.3f} s per completion on {cal['images']} "
                  f"images; autoregressive: " + ", ".join(f"{plural(int(c), 'candidate')} {s:.3f} s"
                                                          for c, s in cal["autoregressive_seconds"].items()))
    for mask, rows in co["masks"].items():
        methods = {k: v for k, v in rows.items() if isinstance(v, dict)}
        masked = next(iter(methods.values()))
        recon = masked["reconstruction_known_pixel_psnr"]
        t = table(f"completion, {mask} mask ({rows['unknown_codes_mean']:.1f} of {co['grid'][0] * co['grid'][1]} codes "
                  f"unknown), {co['n']} test images, no class, guidance {co['guidance']:g}; reconstructions' "
                  f"known-pixel PSNR {recon:.2f} dB",
                  ["method", "class kept", "known codes kept", "known-pixel PSNR", "s / completion", "time vs masked"])
        for name, r in methods.items():
            t.add_row(name, f"{r['class_kept']:.3f}", f"{r['known_codes_kept']:.3f}", f"{r['known_pixel_psnr']:.2f}",
                      f"{r['seconds_median']:.3f}", f"{r['seconds_median'] / masked['seconds_median']:.2f}x")
        console.print(t)


# --- main ------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--tokenizer", type=Path, default=REPO / "runs/tokenizer", help="the tokenizer both priors model")
    ap.add_argument("--work", type=Path, default=Path("/tmp/vq_masked_bench"), help="where the priors and reports go")
    ap.add_argument("--json", type=Path, default=REPO / "bench/results/masked/masked_cpu.json")
    ap.add_argument("--classifier", type=Path, default=REPO / "runs/classifier", help="vq eval's judge cache")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--preset", choices=["demo", "full"], default="demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=2.0, help="of samples (eval, sweep, speed)")
    g = ap.add_argument_group("train")
    g.add_argument("--time-budget", default="300s", help="each prior's training time (vq's --time-budget)")
    g.add_argument("--train-threads", type=int, default=1, help="torch threads of each training process")
    g.add_argument("--force", action="store_true", help="replace the priors in --work")
    g = ap.add_argument_group("eval and sweep")
    g.add_argument("--per-class", type=int, default=1000)
    g.add_argument("--eval-steps", type=int, help="the masked prior's decoding steps in eval and complete (default: its own)")
    g.add_argument("--sweep-steps", type=int, nargs="+", default=[4, 8, 12, 16])
    g.add_argument("--sweep-per-class", type=int, default=200)
    g = ap.add_argument_group("speed")
    g.add_argument("--geometry", nargs="+", default=["7x7", "14x14"], help="code grids HxW")
    g.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256], help="images per call (guided: twice the rows)")
    g.add_argument("--speed-steps", type=int, nargs="+", default=[4, 8, 16], help="the masked prior's decoding steps")
    g.add_argument("--repeats", type=int, default=3)
    g.add_argument("--threads", type=int, help="torch threads for speed and complete (default: torch's)")
    g = ap.add_argument_group("complete")
    g.add_argument("--complete-images", type=int, default=200)
    g.add_argument("--masks", nargs="+", choices=MASKS, default=list(MASKS), help="the first calibrates the equal time")
    g.add_argument("--random-unknown", type=float, default=0.5, help="share of the cells unknown in the random mask")
    g.add_argument("--ar-candidates", type=int, nargs="*", default=[8], help="fixed candidate counts beside the equal-time one")
    g.add_argument("--calibration-images", type=int, default=5)
    g.add_argument("--complete-guidance", type=float, default=1.0)
    args = ap.parse_args()
    args.tokenizer, args.work, args.classifier = args.tokenizer.resolve(), args.work.resolve(), args.classifier.resolve()
    if not all(re.fullmatch(r"\d+(x\d+)?", spec) for spec in args.geometry):
        ap.error("--geometry takes code grids such as 7x7 14x14")
    return args


STAGE_RUNNERS = {"train": train_stage, "eval": eval_stage, "sweep": sweep_stage, "speed": speed_stage,
                 "complete": complete_stage}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    results = Results(args.json, args)
    console = Console(width=None if sys.stdout.isatty() else 160)
    for stage in STAGES:
        if stage in args.stages:
            t, load = time.perf_counter(), os.getloadavg()
            STAGE_RUNNERS[stage](args, results, console)
            results.data.setdefault("stages", {})[stage] = {"seconds": time.perf_counter() - t, "load_average_before": load,
                                                            "load_average_after": os.getloadavg()}
            results.save()
    for show in (print_quality, print_sweep, print_speed, print_completion):
        show(results.data, console)
    console.print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
