import numpy as np
import torch

from vq.pipeline.metrics import accuracy, frechet_distance, psnr, ssim


def test_frechet_distance_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(2000, 16))
    assert abs(frechet_distance(f, f)) < 1e-6


def test_frechet_distance_of_shifted_features_is_the_squared_shift():
    f = np.random.default_rng(1).normal(size=(2000, 8))
    shift = np.arange(8) * 0.5
    assert abs(frechet_distance(f, f + shift) - float((shift**2).sum())) < 1e-6


def test_frechet_distance_sees_a_change_of_spread():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5000, 4)), 2 * rng.normal(size=(5000, 4))
    # Tr(I + 4I - 2*2I) = 4 for d = 4, up to sampling noise.
    assert abs(frechet_distance(a, b) - 4.0) < 0.3


def test_psnr_and_ssim_of_identical_and_different_images():
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert torch.isinf(psnr(x, x)).all() or (psnr(x, x) > 100).all()
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-5)
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)
    assert (ssim(x, noisy) < 0.95).all()
    mse = (x - noisy).pow(2).flatten(1).mean(1)
    assert torch.allclose(psnr(x, noisy), 10 * torch.log10(4 / mse))


def test_accuracy_of_a_perfect_and_a_wrong_classifier():
    y = torch.tensor([0, 1, 2, 2, 1])
    assert accuracy(y.clone(), y) == 1.0
    assert accuracy((y + 1) % 3, y) == 0.0
