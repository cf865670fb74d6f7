"""How good each stage is on held-out data, measured the same way while training and by `vq eval`:
a tokenizer's reconstructions (MSE, PSNR, SSIM, sharpness, codebook use) and a prior's held-out
figure over code maps, in bits."""

import math

import torch

from vq.pipeline.codes.maps import batch_preparer
from vq.pipeline.data.images import image_batch
from vq.pipeline.data.loader import batches
from vq.pipeline.data.splits import Split
from vq.pipeline.metrics import psnr, ssim
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
    counts = torch.zeros(model.codebook_size or 1, device=device)
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


@torch.no_grad()
def held_out_bits(model, split, batch_size: int = NLL_BATCH, seed: int = 0) -> float:
    """A prior's held-out figure over a split of code maps, in bits: the mean of its
    `held_out_nats` per map (an exact NLL per code for a prior with a likelihood, else what its
    `held_out` names, never to be mistaken for one). Positions a figure draws come from `seed`, so
    every evaluation draws the same."""
    device = next(model.parameters()).device
    prepare = batch_preparer(model.config)
    g = torch.Generator(device=device).manual_seed(seed)
    total, count = 0.0, 0
    for batch in batches(split, batch_size):
        inputs = prepare(batch, device)
        total += float(model.held_out_nats(*inputs, generator=g).sum())
        count += inputs[0].shape[0]
    return total / max(count, 1) / math.log(2)
