"""How good each stage is on held-out data, measured the same way while training and by `vq eval`:
a tokenizer's reconstructions (MSE, PSNR, SSIM, sharpness, codebook use) and a prior's
negative log-likelihood of code maps, in bits."""

import math

import torch

from vq.pipeline.data import Split, image_batch
from vq.pipeline.export import SKETCH_MAPS, split_record
from vq.pipeline.loader import batches
from vq.pipeline.metrics import psnr, ssim
from vq.pipeline.sketch_styles import training_sketches
from vq.stage1_vqvae.losses import abs_laplacian

EVAL_PIXELS = 500 * 28 * 28  # images evaluated at once: 500 at 28 px, fewer at larger sizes (flat memory)
NLL_BATCH = 256  # code maps scored at once


def eval_batch(image_size: int) -> int:
    return max(1, EVAL_PIXELS // (image_size * image_size))


@torch.no_grad()
def evaluate_tokenizer(model, split: Split) -> dict:
    """Test-split MSE, PSNR, SSIM (images in [-1, 1], a range of 2) and sharpness (high-frequency
    energy of the reconstructions over the originals', stage1_vqvae.losses.abs_laplacian); for a VQ-VAE
    also codebook usage (share of codes used at least once) and perplexity."""
    device = next(model.parameters()).device
    batch_size = eval_batch(model.config.image_size)
    sq_err, psnr_sum, ssim_sum, lap_recon, lap_real, n = 0.0, 0.0, 0.0, 0.0, 0.0, 0
    counts = torch.zeros(getattr(model.config, "codebook_size", 1), device=device)
    for batch in batches(split, batch_size):
        images, labels = image_batch(batch, device)
        recon = model.reconstruct(images, labels).float().clamp(-1, 1)
        sq_err += float((recon - images).pow(2).flatten(1).mean(1).sum())
        psnr_sum += float(psnr(recon, images).sum())
        ssim_sum += float(ssim(recon, images).sum())
        lap_recon += float(abs_laplacian(recon).sum())
        lap_real += float(abs_laplacian(images).sum())
        n += images.shape[0]
        if model.discrete:
            counts += torch.bincount(model.encode_indices(images).flatten(), minlength=counts.numel())
    metrics = {"mse": sq_err / n, "psnr": psnr_sum / n, "ssim": ssim_sum / n, "sharpness": lap_recon / max(lap_real, 1e-8)}
    if model.discrete:
        p = counts / counts.sum()
        metrics["usage"] = float((counts > 0).float().mean())
        metrics["perplexity"] = float(torch.exp(-(p * p.clamp(min=1e-10).log()).sum()))
    return metrics


@torch.no_grad()
def reconstruction_grid(model, split: Split, n: int = 32) -> torch.Tensor:
    """Rows of 16: originals, then their reconstructions beneath, twice."""
    device = next(model.parameters()).device
    images, labels = image_batch((split.images[:n], split.labels[:n]), device)
    recon = model.reconstruct(images, labels).float()
    rows = []
    for i in range(0, images.shape[0], 16):
        rows += [images[i : i + 16].float(), recon[i : i + 16]]
    return torch.cat(rows)


def prepare_batch(batch: tuple, device: torch.device) -> tuple:
    codes, labels = batch
    return codes.to(device, non_blocking=True).long(), labels.to(device, non_blocking=True)


def batch_preparer(config, train: bool = False):
    """The model's inputs from a batch: (codes, labels), or for a sketch prior, whose batches hold
    records (`export.CodeMaps.with_sketches`), (codes, labels, sketches): the edge maps, or, for
    training a prior with `sketch_styles = "free"`, sketches in free-hand styles drawn afresh
    from each record's edges and outline (`pipeline.sketch_styles.training_sketches`, with the
    drawing flag as a second channel for a flagged prior). Evaluation reads the edge maps, flag 0."""
    if "sketch" not in config.conditions:
        return prepare_batch
    free = train and config.sketch_styles == "free"

    def prepare(batch: tuple, device: torch.device) -> tuple:
        records, labels = batch
        codes, maps = split_record(records.to(device, non_blocking=True), (config.height, config.width), config.sketch_size)
        edges = maps[:, SKETCH_MAPS.index("edges")][:, None]
        sketch = (training_sketches(edges, maps[:, SKETCH_MAPS.index("outline")][:, None], config.sketch_channels == 2)
                  if free else edges)
        return codes, labels.to(device, non_blocking=True), sketch

    return prepare


@torch.no_grad()
def nll_bits(model, split, batch_size: int = NLL_BATCH) -> float:
    """Mean negative log-likelihood of a split's codes given their class (and for a sketch prior,
    whose split holds records, the sketch), in bits per code token."""
    device = next(model.parameters()).device
    prepare = batch_preparer(model.config)
    total, count = 0.0, 0
    for batch in batches(split, batch_size):
        inputs = prepare(batch, device)
        total += float(model(*inputs).loss.float()) * inputs[0].numel()
        count += inputs[0].numel()
    return total / max(count, 1) / math.log(2)


@torch.no_grad()
def masked_bits(model, split, batch_size: int = NLL_BATCH, seed: int = 0) -> float:
    """A masked prior's held-out measure: the cross-entropy of masked codes given the others (half
    of each map masked, at positions drawn from `seed`, so every evaluation masks the same), in
    bits per masked code. Not a likelihood: not comparable with `nll_bits`."""
    device = next(model.parameters()).device
    prepare = batch_preparer(model.config)
    g = torch.Generator(device=device).manual_seed(seed)
    total, count = 0.0, 0
    for batch in batches(split, batch_size):
        inputs = prepare(batch, device)
        total += float(model.masked_ce(*inputs, generator=g).sum())
        count += inputs[0].shape[0]
    return total / max(count, 1) / math.log(2)


def held_out_bits(model, split) -> tuple[str, float]:
    """(name, value) of a prior's held-out score in bits: the exact NLL per code token of a prior
    that has a likelihood, else the masked-code cross-entropy, named so it is never mistaken
    for one."""
    if model.exact_likelihood:
        return "bits_per_token", nll_bits(model, split)
    return "masked_bits_per_code", masked_bits(model, split)


def pixel_dims(meta: dict) -> int:
    img = meta["image"]
    return img["channels"] * img["image_size"] ** 2
