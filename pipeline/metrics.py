"""Image and feature metrics for `vq eval`: PSNR, SSIM, the Fréchet distance between Gaussian fits
of two feature sets (Heusel et al. 2017, the distance behind FID), and classification accuracy."""

import warnings

import numpy as np
import torch


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB of (b, c, h, w) images; [-1, 1] images have a range of 2."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp(min=1e-12))


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004): 11x11 Gaussian window with sigma 1.5 (smaller for
    smaller images), K1 = 0.01, K2 = 0.03; the tokenizer's SSIM loss is the same function."""
    from vq.stage1_vqvae.losses import ssim as _ssim

    return _ssim(x, y, size=min(11, x.shape[-1], x.shape[-2]), data_range=data_range)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two (n, d) feature sets."""
    from scipy import linalg  # only `vq eval` needs scipy: training does not load it

    mu1, s1 = gaussian_stats(a)
    mu2, s2 = gaussian_stats(b)
    with warnings.catch_warnings():  # ReLU features that are always 0 make S singular; sqrtm copes
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        eps = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def accuracy(predicted: torch.Tensor, target: torch.Tensor) -> float:
    return float((predicted == target).float().mean()) if target.numel() else float("nan")
