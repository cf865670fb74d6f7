"""Demo quality, judged the way `vq eval` judges it, against a validation reference: the figures
recipes are tuned on (issue 29), so the test split stays for the final before / after table
(`vq eval`).

The reference is 1,000 train images of each class (a fixed draw); the real-image floor and the
reconstructions use `--per-class` other train images of each class. Samples are drawn at each
`--settings` entry (guidance:temperature[:top_k]), n = `--per-class` x classes, from the same seed.

    python bench/demo_quality.py --tokenizer runs/tokenizer --prior runs/prior --settings 2:1 1.5:1 2:0.9:64
    python bench/demo_quality.py --tokenizer runs/tokenizer          # the tokenizer alone

Prints a table; --json FILE appends its rows (with --label) to FILE.
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent))

from vq.pipeline.checkpoint import load_model  # noqa: E402
from vq.pipeline.data.images import to_float  # noqa: E402
from vq.pipeline.data.loader import EvalImages, Skipped, materialize  # noqa: E402
from vq.pipeline.data.sources import load_data  # noqa: E402
from vq.pipeline.evaluate.judge import ensure_classifier, judge, predict  # noqa: E402
from vq.pipeline.generate.draw import generate_images  # noqa: E402
from vq.pipeline.generate.pipeline import Pipeline  # noqa: E402
from vq.pipeline.records import TokenizerRecord  # noqa: E402
from vq.pipeline.threads import Threads  # noqa: E402
from vq.stage2_prior import SamplingOptions  # noqa: E402

REFERENCE_PER_CLASS = 1000


def split_train(labels: torch.Tensor, per_class: int, classes: int, seed: int = 29) -> tuple[list[int], list[int]]:
    """(reference indices, comparison indices): disjoint draws of train images of each class."""
    g = torch.Generator().manual_seed(seed)
    ref, other = [], []
    for c in range(classes):
        idx = (labels == c).nonzero().flatten()
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
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--prior", type=Path)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--settings", nargs="*", default=["2:1"], help="guidance:temperature[:top_k] per row")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0], help="sample each setting at each seed")
    ap.add_argument("--label", default="")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    print(Threads(follow=False).start(), flush=True)
    if args.prior is not None:
        pipe = Pipeline.from_pretrained(args.tokenizer, args.prior)
        tokenizer, prior, record = pipe.tokenizer, pipe.prior, pipe.tokenizer_info
    else:
        record = TokenizerRecord.read(args.tokenizer)
        tokenizer, prior = load_model(record, "cpu").eval(), None
    data = load_data(record.data_options())
    names = list(data.class_names)
    train = data.train
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
        recon = torch.cat([tokenizer.reconstruct(images[i : i + 500], labels[i : i + 500]).float()
                           for i in range(0, images.shape[0], 500)]).clamp(-1, 1)
        mse = float(((recon - images) ** 2).mean() / 4)  # in [0, 1] units
        for what, imgs in (("real train", images), ("reconstructions", recon)):
            j = judged(imgs, labels)
            rows.append({"what": what, "acc": j.acc, "fd": j.fd, "n": j.n, "seconds": 0.0})
        rows[-1]["psnr"] = float(10 * torch.log10(torch.tensor(1.0 / mse)))
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
