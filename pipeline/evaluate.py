"""`vq eval`: one table of how good each stage is, written to eval.json.

- tokenizer: test MSE, PSNR, SSIM, codebook usage and perplexity;
- prior: test NLL in bits per code token and per pixel dimension;
- samples, per class and overall: the share the classifier assigns to the asked-for class, and the
  Fréchet distance between classifier features of the samples and of the test split, with the
  same two numbers for real train images (the floor) and for the tokenizer's reconstructions;
- completion: test images with their bottom half removed, completed, classified;
- sketches (a sketch prior): n test images' edge maps as sketches; the edge agreement (F1 at one
  pixel, `pipeline.sketch.edge_f1`) of samples drawn from them with and without their class,
  beside samples of the right class without the sketch (the floor), the tokenizer's
  reconstructions of the real images, and the real images (1 by construction: the sketches are
  their edges); with class accuracy and Fréchet distance of each;
- drawings (a sketch prior, `--drawings DIR`): free-hand drawings as people make them; the share
  of samples of the drawn class, with and without the class given (then framed to the class's
  box, its guidance `drawing_class_guidance`'s), and how well samples stay inside the drawn
  outline and fill it (`pipeline.drawings`).
Every Fréchet distance is computed at the stated n against the whole test split."""

import math
import time
from pathlib import Path

import torch
from rich.console import Console

from vq.pipeline.classifier import ensure_classifier, predict
from vq.pipeline import hub
from vq.pipeline.data import HUB_ID, Split, stored_data_options, to_float, to_uint8
from vq.pipeline.generate import SamplingOptions, generate_images
from vq.pipeline.metrics import accuracy, frechet_distance
from vq.pipeline.pipeline import Pipeline
from vq.pipeline.runs import VQError, atomic_write_json
from vq.pipeline.loader import EvalImages, Skipped, real_images
from vq.pipeline.stage_scores import evaluate_tokenizer, held_out_bits
from vq.pipeline.device import resolve_device


def judge(classifier, images: torch.Tensor, labels: torch.Tensor | None, test_feats: torch.Tensor,
          test_labels: torch.Tensor, class_names: list[str]) -> dict:
    """Class accuracy and Fréchet distance, overall and per class, of images in [-1, 1]."""
    pred, feats = predict(classifier, images)
    out = {"n": int(images.shape[0]), "fd": frechet_distance(feats.numpy(), test_feats.numpy())}
    if labels is not None:
        out["acc"] = accuracy(pred, labels)
        out["per_class"] = {}
        for c, name in enumerate(class_names):
            sel, ref = labels == c, test_labels == c
            if sel.sum() > 1 and ref.sum() > 1:
                out["per_class"][name] = {
                    "acc": accuracy(pred[sel], labels[sel]),
                    "fd": frechet_distance(feats[sel].numpy(), test_feats[ref].numpy()),
                }
    else:
        out["predicted_share"] = {name: float((pred == c).float().mean()) for c, name in enumerate(class_names)}
    return out


@torch.no_grad()
def evaluate_run(tokenizer_dir: Path, prior_dir: Path | None, *, per_class: int = 1000, opts: SamplingOptions | None = None,
                 completions: int = 500, device: str = "auto", classifier_root: Path = Path("runs/classifier"),
                 out: Path | None = None, sweep: list[tuple[float, float]] | None = None,
                 sketch_images: int = 1000, pipeline: str | None = None, fid: bool = False,
                 inception_weights: Path | None = None, drawings: Path | None = None, drawing_samples: int = 8,
                 console: Console | None = None) -> dict:
    """`vq eval` of two runs, or of a saved pipeline (folder or Hub id) given as `pipeline`; with
    `fid`, also the field's FID and Inception Score (`pipeline.fid`) of the samples against the
    test split, when Inception-v3 weights can be had (else the report says it was skipped, and why)."""
    console = console or Console(stderr=True)
    opts = opts or SamplingOptions()
    opts.validate()
    weights = None
    if fid:
        from vq.pipeline.fid import inception_weights as find_weights

        weights = find_weights(inception_weights)  # a bad --inception-weights is refused before any work
    for path, what in ((out, "--out"), (classifier_root, "--classifier")):
        if path is not None and Path(path).exists() and Path(path).is_dir() == (what == "--out"):
            raise VQError(f"{what} {path} is a {'folder' if what == '--out' else 'file'}; give a "
                          f"{'file name for eval.json' if what == '--out' else 'folder'}")
    t0 = time.time()
    if pipeline is not None:
        tokenizer_dir, prior_dir = hub.parts(pipeline)
    pipe = Pipeline.from_pretrained(tokenizer_dir, prior_dir, device=device)
    tokenizer, prior, tok_info, prior_info = pipe.tokenizer, pipe.prior, pipe.tokenizer_info, pipe.prior_info
    info = tok_info.stored
    codes = None
    if prior is not None:  # the prior's NLL means something only on this tokenizer's codes: check before any work
        from vq.pipeline.export import check_codes_match, codes_of_run, load_codes

        codes_dir = codes_of_run(prior_info.codes_dir, tokenizer_dir)
    if prior is not None and (pipeline is None or (codes_dir / "meta.json").exists()):
        codes = load_codes(codes_dir)
        check_codes_match(codes.meta, info, codes_dir)
        if "sketch" in prior_info.conditions:
            from vq.pipeline.export import has_sketches
            from vq.pipeline.sketch import check_detector

            check_detector(prior_info.stored, prior_dir)
            if not has_sketches(codes.meta):
                raise VQError(f"{codes_dir} holds no sketches for the sketch prior {prior_dir}; add them with "
                              f"`vq export-codes --tokenizer {tokenizer_dir} --out {codes_dir} --sketches`")
    if opts.class_cfg is not None and (prior is None or "sketch" not in prior_info.conditions):
        raise VQError("--class-guidance weighs a class against a sketch: it needs a sketch prior")
    if opts.class_cfg is not None and not sketch_images and drawings is None:
        raise VQError("--class-guidance counts for test sketches or --drawings; with --sketch-images 0 give --drawings")
    drawing_set = box = None
    if drawings is not None:  # read before any work: a bad folder or name is refused at once
        if prior is None or "sketch" not in prior_info.conditions:
            raise VQError("--drawings needs a sketch prior (`vq fit-prior --condition sketch`)")
        from vq.pipeline.drawings import read_drawing_set
        from vq.pipeline.sketch import drawing_box

        box = drawing_box(prior_info.stored)
        drawing_set = read_drawing_set(drawings, tok_info.class_names, tok_info.image_size, prior_info.stored)
    dev = resolve_device(device)
    data_options = stored_data_options(info, tokenizer_dir)
    if pipeline is not None:
        check_named_data(data_options.spec, pipeline)
    data = data_options.load()
    names = data.class_names
    test = EvalImages(data.test, None, Skipped()).split
    classifier, cinfo = ensure_classifier(data, test, classifier_root, device, console)
    classifier.to(dev).eval()
    test_pred, test_feats = predict(classifier, to_float(test.images))
    report: dict = {
        "tokenizer_dir": str(tokenizer_dir), "tokenizer_model": tok_info.model, "dataset": data.describe(),
        "classifier": {"test_acc": accuracy(test_pred, test.labels), "dir": str(classifier_root)},
        "sampling": {"cfg": opts.cfg, "temperature": opts.temperature, "top_k": opts.top_k, "top_p": opts.top_p,
                     "seed": opts.seed, "per_class": per_class, **({"class_cfg": opts.class_cfg} if opts.class_cfg is not None else {})},
        "device": str(dev),
    }
    console.print(f"classifier test accuracy: {report['classifier']['test_acc']:.4f}")

    tokenizer.to(dev).eval()
    report["tokenizer"] = evaluate_tokenizer(tokenizer, test)
    num_classes = len(names)
    real_split = real_images(data.train, per_class, num_classes, opts.seed)
    real, real_labels = to_float(real_split.images), real_split.labels
    report["real_train"] = judge(classifier, real, real_labels, test_feats, test.labels, names)
    recon = torch.cat([tokenizer.reconstruct(real[i : i + 500].to(dev), real_labels[i : i + 500].to(dev)).float().cpu()
                       for i in range(0, real.shape[0], 500)]).clamp(-1, 1)
    report["reconstructions"] = judge(classifier, recon, real_labels, test_feats, test.labels, names)

    if prior is not None:
        report["prior"] = prior_nll(tokenizer, prior, codes, test, dev)
        report["prior"]["dir"] = str(prior_dir)
    conditional = tok_info.samples_by_class
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    sample_labels = labels if conditional else torch.full((labels.shape[0],), -1)
    ts = time.time()
    samples = generate_images(tokenizer, prior, sample_labels, opts).cpu()
    report["samples"] = judge(classifier, samples, labels if conditional else None, test_feats, test.labels, names)
    report["samples"]["seconds"] = time.time() - ts
    if fid:
        report["fid"] = inception_fid(samples, test, weights, dev, console)

    if sweep and prior is not None:
        report["sweep"] = []
        for cfg_scale, temp in sweep:
            o = SamplingOptions(cfg_scale, temp, opts.top_k, opts.top_p, opts.seed, opts.steps)
            s = generate_images(tokenizer, prior, labels, o).cpu()
            j = judge(classifier, s, labels, test_feats, test.labels, names)
            report["sweep"].append({"cfg": cfg_scale, "temperature": temp, "acc": j["acc"], "fd": j["fd"], "n": j["n"]})
            console.print(f"sweep cfg={cfg_scale} T={temp}: acc={j['acc']:.4f} fd={j['fd']:.3f}")

    if prior is not None and completions > 0:
        report["completion"] = completion_accuracy(tokenizer, prior, classifier, test, completions, opts, dev)
    if prior is not None and "sketch" in prior.conditions and sketch_images > 0:
        report["sketch"] = sketch_agreement(tokenizer, prior, classifier, test, sketch_images, opts, dev,
                                            test_feats, names)
    if drawing_set is not None:
        from vq.pipeline.drawings import drawing_agreement

        report["drawings"] = drawing_agreement(tokenizer, prior, classifier, drawing_set, drawing_samples, opts, names, box)
        report["drawings"]["dir"] = str(drawings)
    report["seconds"] = time.time() - t0
    out = Path(out) if out else default_report_path(pipeline, prior_dir if prior is not None else tokenizer_dir)
    atomic_write_json(out, report)
    report["out"] = str(out)
    return report


def check_named_data(spec: str | None, pipeline: str) -> None:
    """A saved pipeline (someone else's folder) names the data it is evaluated on: only a dataset
    name or a Hub id is read, never a path on this machine it names."""
    if not isinstance(spec, str) or not HUB_ID.fullmatch(spec) or Path(spec).expanduser().exists():
        raise VQError(f"{pipeline} names its dataset as {str(spec)[:60]!r}, which is no dataset name or Hub id; a saved "
                      "pipeline is evaluated only on such data: evaluate the runs it was saved from instead")


def inception_fid(samples: torch.Tensor, test: Split, weights: Path | None, dev, console: Console) -> dict:
    """FID of the samples against the whole test split (the reference `vq eval`'s judge uses too),
    with the protocol beside the number; or why it was skipped."""
    from vq.pipeline.fid import fid, skip_reason

    if weights is None:
        console.print(f"[yellow]{skip_reason()}[/yellow]", highlight=False)
        return {"skipped": skip_reason()}
    t = time.time()
    result = fid(to_uint8(samples), test.images, weights, device=dev)
    result["reference"] = f"the test split ({len(test)} images)"
    result["seconds"] = time.time() - t
    return result


def default_report_path(pipeline: str | None, run_dir: Path) -> Path:
    """eval.json in the run evaluated; for a saved pipeline, beside its parts (where its model card
    reads it); for a Hub id, whose files live in the Hub cache, runs/eval/<user>--<name>.json."""
    if pipeline is None:
        return Path(run_dir) / "eval.json"
    if Path(pipeline).is_dir():
        return Path(pipeline) / "eval.json"
    return Path("runs/eval") / f"{str(pipeline).replace('/', '--')}.json"


@torch.no_grad()
def prior_nll(tokenizer, prior, codes, test: Split, dev) -> dict:
    """The prior's held-out score (`stage_scores.held_out_bits`): with a likelihood, its test NLL
    in bits per code token and per pixel dimension; else the masked-code cross-entropy, labelled.
    On the exported test codes when there are some (a saved pipeline has none: then on the test
    images encoded here, except for a sketch prior, which also needs their sketches)."""
    h, w = tokenizer.grid_shape
    dims = tokenizer.config.channels * tokenizer.config.image_size ** 2
    if codes is not None:
        test_codes = codes.splits["test"]
        name, bits = held_out_bits(prior, test_codes.with_sketches() if "sketch" in prior.conditions else test_codes)
    elif "sketch" in prior.conditions:
        return {"skipped": "a saved sketch prior's score needs the exported codes with sketches"}
    else:
        encoded = torch.cat([tokenizer.encode_indices(to_float(test.images[i : i + 500]).to(dev)).cpu()
                             for i in range(0, len(test), 500)])
        name, bits = held_out_bits(prior, Split(encoded, test.labels))
    return {f"test_{name}": bits, **({"test_bits_per_dim": bits * h * w / dims} if prior.exact_likelihood else {})}


@torch.no_grad()
def completion_accuracy(tokenizer, prior, classifier, split, n: int, opts: SamplingOptions, dev) -> dict:
    """Keep the top half of n test images (the codes of the top rows), complete the rest once each,
    with the true class and without one, and classify the completions."""
    g = torch.Generator().manual_seed(opts.seed)
    idx = torch.randperm(len(split), generator=g)[:n]
    images, labels = to_float(split.images[idx]), split.labels[idx]
    h, w = tokenizer.grid_shape
    mask = torch.zeros(h, w, dtype=torch.bool, device=dev)
    mask[: math.ceil(h / 2)] = True
    result = {"n": int(n), "kept_code_rows": math.ceil(h / 2), "of_rows": h}
    for mode in ("with_class", "unconditional"):
        outs = []
        for i in range(0, n, 250):
            x = images[i : i + 250].to(dev)
            codes = tokenizer.encode_indices(x)
            y = labels[i : i + 250].to(dev) if mode == "with_class" else torch.full((x.shape[0],), -1, device=dev)
            gen = torch.Generator(device=dev).manual_seed(opts.seed + i)
            done = prior.sample(y, cfg_scale=opts.cfg if mode == "with_class" else 1.0, temperature=opts.temperature,
                                top_k=opts.top_k, top_p=opts.top_p, generator=gen,
                                known=codes, known_mask=mask.expand(x.shape[0], -1, -1), **opts.decode_kwargs(prior))
            outs.append(tokenizer.decode_indices(done).float().cpu().clamp(-1, 1))
        pred, _ = predict(classifier, torch.cat(outs))
        result[f"acc_{mode}"] = accuracy(pred, labels)
    return result


@torch.no_grad()
def sketch_agreement(tokenizer, prior, classifier, split, n: int, opts: SamplingOptions, dev,
                     test_feats: torch.Tensor, names: list[str]) -> dict:
    """n random test images' edge maps as sketches -> edge F1 against the sketch, class accuracy
    and Fréchet distance of: samples given sketch and class, the sketch alone, the class alone
    (the floor), reconstructions and the real images."""
    from vq.pipeline.sketch import edge_f1, edge_map

    g = torch.Generator().manual_seed(opts.seed)
    idx = torch.randperm(len(split), generator=g)[:n]
    real, labels = to_float(split.images[idx]), split.labels[idx]
    sketches = edge_map(real)
    no_class = torch.full_like(labels, -1)
    images = {
        "sketch_and_class": generate_images(tokenizer, prior, labels, opts, sketches).cpu(),
        "sketch_only": generate_images(tokenizer, prior, no_class, opts, sketches).cpu(),
        "class_only": generate_images(tokenizer, prior, labels, opts).cpu(),
        "reconstructions": torch.cat([tokenizer.reconstruct(real[i : i + 500].to(dev)).float().cpu()
                                      for i in range(0, len(real), 500)]).clamp(-1, 1),
        "real": real,
    }
    result = {"n": int(len(idx)), "cfg": opts.cfg, **({"class_cfg": opts.class_cfg} if opts.class_cfg is not None else {})}
    for key, x in images.items():
        j = judge(classifier, x, labels, test_feats, split.labels, names)
        result[key] = {"edge_f1": float(edge_f1(edge_map(x), sketches).mean()), "acc": j["acc"], "fd": j["fd"]}
    return result
