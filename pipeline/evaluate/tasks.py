"""The measurements `vq eval` makes beyond judging samples: the prior's held-out figure on test
codes, completion of test images' lower halves, agreement of samples with test images' edge maps
given as sketches, and the field's FID (`fid`)."""

import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from vq.pipeline.codes.maps import CodeSet
from vq.pipeline.data.images import to_float, to_uint8
from vq.pipeline.data.splits import Split
from vq.pipeline.evaluate.fid import fid, skip_reason
from vq.pipeline.evaluate.judge import judge, predict
from vq.pipeline.generate.draw import generate_images, to_prior, to_tokenizer
from vq.pipeline.metrics import accuracy
from vq.pipeline.sketch.edges import edge_f1, edge_map
from vq.pipeline.train.scores import held_out_bits
from vq.stage2_prior import SamplingOptions

BATCH = 500  # test images encoded or reconstructed at once


def inception_fid(samples: torch.Tensor, test: Split, weights: Path | None, dev, console: Console) -> dict:
    """FID of the samples against the whole test split (the reference `vq eval`'s judge uses too),
    with the protocol beside the number; or why it was skipped."""
    if weights is None:
        console.print(f"[yellow]{skip_reason()}[/yellow]", highlight=False)
        return {"skipped": skip_reason()}
    t = time.time()
    result = fid(to_uint8(samples), test.images, weights, device=dev)
    result["reference"] = f"the test split ({len(test)} images)"
    result["seconds"] = time.time() - t
    return result


@torch.no_grad()
def prior_figure(tokenizer, prior, codes: CodeSet | None, test: Split, dev) -> dict:
    """The prior's held-out figure (`Prior.held_out`, `train.scores.held_out_bits`), and with an
    exact likelihood its bits per pixel dimension. On the exported test codes when there are some
    (a saved pipeline has none: then on the test images encoded here, except for a sketch prior,
    which also needs their sketches)."""
    if codes is not None:
        test_codes = codes.splits["test"]
        bits = held_out_bits(prior, test_codes.with_sketches() if "sketch" in prior.conditions else test_codes)
    elif "sketch" in prior.conditions:
        return {"skipped": "a saved sketch prior's score needs the exported codes with sketches"}
    else:
        encoded = torch.cat([tokenizer.encode_indices(to_float(test.images[i : i + BATCH]).to(dev)).cpu()
                             for i in range(0, len(test), BATCH)])
        bits = held_out_bits(prior, Split(encoded.flatten(1), test.labels))
    dims = tokenizer.config.channels * tokenizer.config.image_size ** 2
    per_dim = {"bits_per_dim": bits * math.prod(prior.code_shape) / dims} if prior.exact_likelihood else {}
    return {"name": prior.held_out.name, "label": prior.held_out.label, "bits": bits, **per_dim}


@torch.no_grad()
def completion_accuracy(tokenizer, prior, classifier, split, n: int, options: SamplingOptions, dev) -> dict:
    """Keep the top half of n test images (the codes it determines), complete the rest once each,
    with the true class and without one, and classify the completions."""
    g = torch.Generator().manual_seed(options.seed)
    idx = torch.randperm(len(split), generator=g)[:n]
    images, labels = to_float(split.images[idx]), split.labels[idx]
    size = tokenizer.config.image_size
    pixels = torch.zeros(size, size, dtype=torch.bool)
    pixels[: size // 2] = True
    known = to_prior(prior, tokenizer.known_codes(pixels)[None])[0].to(dev)
    result = {"n": int(n), "known_codes": int(known.sum()), "of_codes": known.numel()}
    for mode in ("with_class", "unconditional"):
        outs = []
        for i in range(0, n, 250):
            x = images[i : i + 250].to(dev)
            codes = to_prior(prior, tokenizer.encode_indices(x))
            y = labels[i : i + 250].to(dev) if mode == "with_class" else torch.full((x.shape[0],), -1, device=dev)
            gen = torch.Generator(device=dev).manual_seed(options.seed + i)
            done = prior.sample(y, options=options if mode == "with_class" else replace(options, guidance=1.0), generator=gen,
                                known=codes, known_mask=known.expand(x.shape[0], -1, -1))
            outs.append(tokenizer.decode_indices(to_tokenizer(tokenizer, done)).float().cpu().clamp(-1, 1))
        pred, _ = predict(classifier, torch.cat(outs))
        result[f"acc_{mode}"] = accuracy(pred, labels)
    return result


@torch.no_grad()
def sketch_agreement(tokenizer, prior, classifier, split, n: int, options: SamplingOptions, dev,
                     test_feats: torch.Tensor, names: list[str]) -> dict:
    """n random test images' edge maps as sketches -> edge F1 against the sketch, class accuracy
    and Fréchet distance of: samples given sketch and class, the sketch alone, the class alone
    (the floor), reconstructions and the real images."""
    g = torch.Generator().manual_seed(options.seed)
    idx = torch.randperm(len(split), generator=g)[:n]
    real, labels = to_float(split.images[idx]), split.labels[idx]
    sketches = edge_map(real)
    no_class = torch.full_like(labels, -1)
    images = {
        "sketch_and_class": generate_images(tokenizer, prior, labels, options, sketches).cpu(),
        "sketch_only": generate_images(tokenizer, prior, no_class, options, sketches).cpu(),
        "class_only": generate_images(tokenizer, prior, labels, options).cpu(),
        "reconstructions": torch.cat([tokenizer.reconstruct(real[i : i + BATCH].to(dev)).float().cpu()
                                      for i in range(0, len(real), BATCH)]).clamp(-1, 1),
        "real": real,
    }
    result = {"n": int(len(idx)), "guidance": options.guidance,
              **({"class_guidance": options.class_guidance} if options.class_guidance is not None else {})}
    for key, x in images.items():
        j = judge(classifier, x, labels, test_feats, split.labels, names)
        result[key] = {"edge_f1": float(edge_f1(edge_map(x), sketches).mean()), "acc": j.acc, "fd": j.fd}
    return result
