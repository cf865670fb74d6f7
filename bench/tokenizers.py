"""Tokenizer quality side by side: quantizer x loss, each row one `vq fit-tokenizer` run at the same
budget (the demo preset unless --steps; the README's rows used the preset before issue 29, batch
128 x 1,000 steps: pass --steps 1000 and add --batch-size 128 to the runs to redo them), measured on the held-out split: PSNR, SSIM, codebook
usage, sharpness (high-frequency energy of reconstructions over originals'), and for labelled
data the class accuracy and Fréchet distance of reconstructions of n real train images under
`vq eval`'s classifier (cached in --classifier).

    python bench/tokenizers.py --data fashion-mnist --variants ema-mse ema-ssim ema-random ema-adv ema-both
    python bench/tokenizers.py --data /tmp/crops32 --variants ema-mse ema-both --no-judge
    python bench/tokenizers.py --variants ema-mse@2500     # MSE alone, given both's wall time

Prints a table and writes bench/results/tokenizers_<data>.json, or --json (rows appended, keyed by variant).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The terms' weights and start steps; the quantizer's own settings. Chosen once, before measuring.
LOSSES = {
    "mse": {},
    "ssim": {"perceptual": "ssim", "perceptual_weight": 0.1},
    "random": {"perceptual": "random", "perceptual_weight": 0.1},
    "adv": {"adversarial_weight": 0.2, "adversarial_start": 300},
    "both": {"perceptual": "random", "perceptual_weight": 0.1, "adversarial_weight": 0.2, "adversarial_start": 300},
    # After the first rows: VQGAN's own weights (perceptual 1, adversarial 0.8), started early.
    "strong": {"perceptual": "random", "perceptual_weight": 1.0, "adversarial_weight": 0.8, "adversarial_start": 100},
    # Between the two, after `strong` sharpened photos but cost them 1.9 dB.
    "mid": {"perceptual": "random", "perceptual_weight": 0.3, "adversarial_weight": 0.5, "adversarial_start": 100},
    # Between mid (within 1 dB, sharpness 0.57) and strong (0.66, -1.9 dB) on photos.
    "mid2": {"perceptual": "random", "perceptual_weight": 0.6, "adversarial_weight": 0.65, "adversarial_start": 100},
    # Between mid (-0.8 dB, 0.57) and mid2 (-1.3 dB, 0.62) on photos.
    "mid3": {"perceptual": "random", "perceptual_weight": 0.45, "adversarial_weight": 0.58, "adversarial_start": 100},
}
QUANTIZERS = {"ema": {}, "l2": {"quantizer": "l2", "code_dim": 8}, "fsq": {"quantizer": "fsq"}}


def variant_config(name: str) -> dict:
    """`quantizer-loss`, optionally `@steps` (the same at another length, e.g. ema-mse@2500 to
    give MSE alone the wall time the adversarial terms take)."""
    quantizer, loss = name.split("@")[0].split("-", 1)
    return {**QUANTIZERS[quantizer], **LOSSES[loss]}


def variant_steps(name: str, default: int | None) -> int | None:
    return int(name.split("@")[1]) if "@" in name else default


def toml(model: dict) -> str:
    def value(v):
        return json.dumps(v)  # strings, numbers and lists read the same in TOML
    return "[model]\n" + "".join(f"{k} = {value(v)}\n" for k, v in model.items())


def judge_reconstructions(run: Path, per_class: int, classifier_root: Path) -> dict:
    """Class accuracy and Fréchet distance of reconstructions of per_class real train images per
    class, as `vq eval` measures them."""
    from vq.pipeline.checkpoint import load_model
    from vq.pipeline.data.images import to_float
    from vq.pipeline.data.loader import EvalImages, Skipped, real_images
    from vq.pipeline.data.sources import load_data
    from vq.pipeline.evaluate.judge import ensure_classifier, judge, predict
    from vq.pipeline.evaluate.run import reconstructions
    from vq.pipeline.records import TokenizerRecord

    record = TokenizerRecord.read(run)
    tokenizer = load_model(record, "cpu")
    data = load_data(record.data_options())
    test = EvalImages(data.test, None, Skipped()).split
    classifier = ensure_classifier(data, test, classifier_root, "cpu")
    _, test_feats = predict(classifier.eval(), to_float(test.images))
    real = real_images(data.train, per_class, len(data.class_names), 0)
    x, y = to_float(real.images), real.labels
    recon = reconstructions(tokenizer, x, y)
    real_j = judge(classifier, x, y, test_feats, test.labels, data.class_names)
    rec_j = judge(classifier, recon, y, test_feats, test.labels, data.class_names)
    return {"n": rec_j.n, "recon_acc": rec_j.acc, "recon_fd": rec_j.fd, "real_acc": real_j.acc, "real_fd": real_j.fd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--variants", nargs="+", default=["ema-mse", "ema-both"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/vq-tokenizers"))
    ap.add_argument("--steps", type=int, help="override the demo preset's steps (for a rehearsal)")
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--classifier", type=Path, default=ROOT / "runs" / "classifier")
    ap.add_argument("--no-judge", action="store_true", help="unlabelled data: skip accuracy and Fréchet distance")
    ap.add_argument("--json", type=Path, help="the results file (default: bench/results/tokenizers_<data>.json)")
    args = ap.parse_args()
    tag = Path(args.data).name
    results_path = args.json or ROOT / "bench" / "results" / f"tokenizers_{tag}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.variants:
        out = args.work / tag / name
        cfg = args.work / tag / f"{name}.toml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(toml(variant_config(name)))
        cmd = [sys.executable, "-m", "vq.cli.main", "fit-tokenizer", "--preset", "demo", "--data", args.data,
               "--config", str(cfg), "--out", str(out), "--force", "--seed", "0"]
        steps = variant_steps(name, args.steps)
        if steps:
            cmd += ["--steps", str(steps), "--eval-every", str(steps)]
        t = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"{name} failed:\n{r.stderr[-3000:]}")
        info = json.loads((out / "config.json").read_text())
        row = {"variant": name, "model": variant_config(name), "seconds": round(time.time() - t, 1),
               "steps": info["train"]["steps"], **{k: info["metrics"][k] for k in ("psnr", "ssim", "usage", "perplexity", "sharpness")}}
        if not args.no_judge:
            row.update(judge_reconstructions(out, args.per_class, args.classifier))
        results[name] = row
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(row), flush=True)
    cols = ["variant", "seconds", "psnr", "ssim", "usage", "sharpness", "recon_acc", "recon_fd"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for row in results.values():
        print("| " + " | ".join(f"{row[c]:.4g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
    main()
