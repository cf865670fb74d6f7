"""Demo quality, judged the way `vq eval` judges it (the same judge, class accuracy and Fréchet
distance of its features), but against train images instead of the test split: the figures recipes
are chosen on (issue 29), so that the test split stays unread for the final before / after table
(`vq eval`). The judge, the tokenizer and the prior all trained on those images, so this reference
cannot reveal memorised samples; at the demo's one or two epochs it served to rank recipes.

The reference is 1,000 train images of each class (a fixed draw); the real-image floor and the
reconstructions use `--per-class` other train images of each class (PSNR per image, averaged, as
`vq eval`). Samples are drawn at each `--settings` entry (guidance:temperature[:top_k]) and each
`--seeds` entry, n = `--per-class` x classes. A setting without a top_k draws without a cut, also
from a prior whose saved defaults (`vq eval`'s, unless `--top-k 0`) have one.

    python bench/demo_quality.py --tokenizer runs/tokenizer --prior runs/prior --settings 2:1 1.5:1 2:0.9:64
    python bench/demo_quality.py --tokenizer runs/tokenizer          # the tokenizer alone
    python bench/demo_quality.py --step-costs                        # ms per training step, by size

Prints a table; --json FILE appends its rows (with --label) to FILE as JSON lines.
`bench/results/demo_quality_ablation_cpu.json` gathers such lines by hand, each with the recipe it
measured in words. `--step-costs` times one training step (forward, backward, AdamW) of the demo
tokenizer at batch 64 and 128 and of priors of several sizes, with and without dropout, on random
data at the chosen threads (best of 3 rounds of 5 steps, the sizes interleaved), so that recipes
can be compared at equal time.
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from vq.pipeline.checkpoint import load_model
from vq.pipeline.data.images import to_float
from vq.pipeline.data.loader import EvalImages, Skipped, materialize
from vq.pipeline.data.sources import load_data
from vq.pipeline.evaluate.judge import ensure_classifier, judge, predict
from vq.pipeline.evaluate.run import reconstructions
from vq.pipeline.generate.draw import generate_images
from vq.pipeline.generate.pipeline import Pipeline
from vq.pipeline.metrics import psnr
from vq.pipeline.records import TokenizerRecord
from vq.pipeline.threads import Threads
from vq.stage2_prior import SamplingOptions

REFERENCE_PER_CLASS = 1000
# (dim, depth, dropout); the first is the demo preset before issue 29
PRIOR_SIZES = {"dim 192, depth 4, dropout 0.1": (192, 4, 0.1), "dim 192, depth 4": (192, 4, 0.0),
               "dim 160, depth 4": (160, 4, 0.0), "dim 128, depth 4": (128, 4, 0.0),
               "dim 128, depth 6": (128, 6, 0.0), "dim 256, depth 3": (256, 3, 0.0)}


def step_costs(codebook: int = 256, rounds: int = 3, steps: int = 5) -> list[dict]:
    """ms per training step of the demo tokenizer (batch 64, 128) and of priors of PRIOR_SIZES
    (batch 64), interleaved so that load on the machine falls on all of them alike."""
    from vq.stage1_vqvae.vqvae import PRESETS, VQVAE, VQVAEConfig
    from vq.stage2_prior.autoregressive import AutoregressivePrior
    from vq.stage2_prior.config import PriorConfig

    torch.manual_seed(0)
    jobs = {}
    tokenizer = VQVAE(VQVAEConfig(**PRESETS["demo"][0]))
    for batch in (64, 128):
        jobs[f"tokenizer, batch {batch}"] = (tokenizer, (torch.rand(batch, 1, 28, 28) * 2 - 1,))
    codes, labels = torch.randint(0, codebook, (64, 7, 7)), torch.randint(0, 10, (64,))
    for name, (dim, depth, dropout) in PRIOR_SIZES.items():
        prior = AutoregressivePrior(PriorConfig(codebook_size=codebook, dim=dim, depth=depth, heads=4, dropout=dropout))
        jobs[f"prior {name}, batch 64"] = (prior, (codes, labels))
    optimizers = {name: torch.optim.AdamW(model.parameters(), 1e-4) for name, (model, _) in jobs.items()}
    best = {name: float("inf") for name in jobs}
    for _ in range(rounds):
        for name, (model, inputs) in jobs.items():
            for i in range(steps + 1):
                if i == 1:
                    t0 = time.perf_counter()
                model(*inputs).loss.backward()
                optimizers[name].step()
                optimizers[name].zero_grad()
            best[name] = min(best[name], (time.perf_counter() - t0) / steps)
    return [{"what": name, "ms_per_step": 1000 * best[name],
             "params_m": sum(p.numel() for p in jobs[name][0].parameters()) / 1e6} for name in jobs]


def split_train(labels: torch.Tensor, per_class: int, classes: int, seed: int = 29) -> tuple[list[int], list[int]]:
    """(reference indices, comparison indices): disjoint draws of train images of each class."""
    g = torch.Generator().manual_seed(seed)
    ref, other = [], []
    for c in range(classes):
        idx = (labels == c).nonzero().flatten()
        if idx.numel() < REFERENCE_PER_CLASS + per_class:
            raise SystemExit(f"class {c} has {idx.numel()} train images; this bench needs "
                             f"{REFERENCE_PER_CLASS} + --per-class {per_class} of each")
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        ref += idx[:REFERENCE_PER_CLASS].tolist()
        other += idx[REFERENCE_PER_CLASS : REFERENCE_PER_CLASS + per_class].tolist()
    return ref, other


def parse_setting(text: str) -> SamplingOptions:
    parts = text.split(":")
    top_k = int(parts[2]) if len(parts) > 2 and parts[2] else None
    return SamplingOptions(guidance=float(parts[0]), temperature=float(parts[1]) if len(parts) > 1 else 1.0, top_k=top_k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--step-costs", action="store_true", help="time training steps by size instead")
    ap.add_argument("--prior", type=Path)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--settings", nargs="*", default=["2:1"], help="guidance:temperature[:top_k] per row")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0], help="sample each setting at each seed")
    ap.add_argument("--label", default="")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    print(Threads(follow=False).start(), flush=True)
    if args.step_costs:
        rows = step_costs()
        for r in rows:
            print(f"{r['what']:52}{r['params_m']:6.2f}M{r['ms_per_step']:8.0f} ms/step")
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({"label": args.label, "step_costs": rows}) + "\n")
        return
    if args.tokenizer is None:
        ap.error("--tokenizer is needed (or --step-costs)")
    if args.prior is not None:
        pipe = Pipeline.from_pretrained(args.tokenizer, args.prior, device="cpu")
        tokenizer, prior, record = pipe.tokenizer, pipe.prior, pipe.tokenizer_info
    else:
        record = TokenizerRecord.read(args.tokenizer)
        tokenizer, prior = load_model(record, "cpu").eval(), None
    data = load_data(record.data_options())
    names = list(data.class_names)
    train = data.train
    if getattr(train, "labels", None) is None:
        raise SystemExit("this bench needs a dataset whose train labels are known up front (not a stream)")
    ref_idx, other_idx = split_train(torch.as_tensor(train.labels), args.per_class, len(names))
    ref = materialize(train, indices=ref_idx)
    real = materialize(train, indices=other_idx)
    test = EvalImages(data.test, None, Skipped()).split
    classifier = ensure_classifier(data, test).eval()
    _, ref_feats = predict(classifier, to_float(ref.images))
    judged = lambda images, labels: judge(classifier, images, labels, ref_feats, ref.labels, names)  # noqa: E731
    rows = []
    with torch.no_grad():
        images, labels = to_float(real.images), real.labels
        recon = reconstructions(tokenizer, images, labels)
        for what, imgs in (("real train", images), ("reconstructions", recon)):
            j = judged(imgs, labels)
            rows.append({"what": what, "acc": j.acc, "fd": j.fd, "n": j.n, "seconds": 0.0})
        rows[-1]["psnr"] = float(psnr(recon, images).mean())
        if prior is not None:
            wanted = torch.arange(len(names)).repeat_interleave(args.per_class)
            for text, seed in ((t, s) for t in args.settings for s in args.seeds):
                t0 = time.time()
                samples = generate_images(tokenizer, prior, wanted, replace(parse_setting(text), seed=seed)).cpu()
                j = judged(samples, wanted)
                rows.append({"what": f"samples {text} s{seed}", "acc": j.acc, "fd": j.fd, "n": j.n,
                             "seconds": time.time() - t0})
    print(f"{'':24}{'acc':>8}{'FD (val)':>10}{'n':>7}{'s':>7}   {args.label}")
    for r in rows:
        extra = f"  PSNR {r['psnr']:.2f}" if "psnr" in r else ""
        print(f"{r['what']:24}{r['acc']:8.3f}{r['fd']:10.2f}{r['n']:7d}{r['seconds']:7.1f}{extra}")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"label": args.label, "tokenizer": str(args.tokenizer), "prior": str(args.prior),
                                "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
