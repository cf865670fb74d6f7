"""The terms that make reconstructions sharp (VQGAN: Esser et al. 2021, "Taming Transformers for
High-Resolution Image Synthesis"): a PatchGAN discriminator with a hinge loss and the adaptive
weight, and perceptual distances, one of which needs no downloaded weights.

Images are (b, c, H, W) in [-1, 1].
"""

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """Isola et al. 2017 ("pix2pix"): a stack of stride-2 4x4 convolutions whose output is a map of
    real/fake logits, one per overlapping patch. GroupNorm instead of BatchNorm, so the logits of
    a sample do not depend on the rest of its batch (nor on the number of processes)."""

    def __init__(self, channels: int, hidden: int = 64, layers: int = 2):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(channels, hidden, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        ch = hidden
        for i in range(1, layers):
            nxt = hidden * min(2 ** i, 8)
            mods += [nn.Conv2d(ch, nxt, 4, stride=2, padding=1), nn.GroupNorm(math.gcd(32, nxt), nxt), nn.LeakyReLU(0.2)]
            ch = nxt
        mods += [nn.Conv2d(ch, ch, 3, padding=1), nn.GroupNorm(math.gcd(32, ch), ch), nn.LeakyReLU(0.2),
                 nn.Conv2d(ch, 1, 3, padding=1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def adaptive_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor, last_layer: torch.Tensor,
                    limit: float = 1e4) -> torch.Tensor:
    """||grad rec|| / ||grad adv|| at the decoder's last layer (VQGAN eq. 7): the adversarial term
    pulls as hard as the reconstruction term, whatever their scales. Detached, and bounded."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0, limit).detach()


# --- perceptual distances --------------------------------------------------------------------

def ssim(x: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5, data_range: float = 2.0) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) of (b, c, h, w) images, Gaussian window, K1 = 0.01,
    K2 = 0.03, averaged over valid windows and channels."""
    x, y = x.float(), y.float()
    c = x.shape[1]
    g = torch.exp(-(torch.arange(size, dtype=torch.float32, device=x.device) - (size - 1) / 2) ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(c, 1, size, size)

    def blur(t):
        return F.conv2d(t, kernel, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mu_x ** 2, blur(y * y) - mu_y ** 2, blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - SSIM with a 7x7 window, small enough for 28 px images."""
    return 1 - ssim(x, y, size=7).mean()


def abs_laplacian(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean absolute Laplacian: the high-frequency energy behind the sharpness figure
    (reconstructions' over originals'; MSE blurs, which shows as a ratio well under 1)."""
    c = images.shape[1]
    k = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]], device=images.device).expand(c, 1, 3, 3)
    return F.conv2d(images.float(), k, groups=c).abs().flatten(1).mean(1)


def _feature_distance(fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS' form without learned channel weights: unit-normalise each feature vector over the
    channels, then the mean squared difference, summed over the stages."""
    total = 0.0
    for a, b in zip(fx, fy):
        a, b = F.normalize(a, dim=1, eps=1e-8), F.normalize(b, dim=1, eps=1e-8)
        total = total + (a - b).pow(2).sum(1).mean()
    return total


class RandomFeatures(nn.Module):
    """Perceptual distance in the features of a fixed, randomly initialised conv net (three
    stages, ReLU, average pooling). Random conv features already separate texture and edges far
    better than pixels; it needs no weights from anywhere, and its seed fixes it."""

    def __init__(self, channels: int, widths: tuple[int, ...] = (32, 64, 128), seed: int = 1234):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        stages, ch = [], channels
        for w in widths:
            conv = nn.Conv2d(ch, w, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, generator=g)
            nn.init.zeros_(conv.bias)
            stages.append(nn.Sequential(conv, nn.ReLU()))
            ch = w
        self.stages = nn.ModuleList(stages)
        self.requires_grad_(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else F.avg_pool2d(x, 2))
            out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _feature_distance(self.features(x.float()), self.features(y.float()))


VGG_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16 weights, as torch hub caches them


def lpips_weights_path(given: str | None) -> Path:
    """The VGG16 weights the `lpips` term reads: the given file, or torch hub's cache. Never downloaded."""
    if given:
        return Path(given)
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    return hub / VGG_FILE


class VGGFeatures(nn.Module):
    """LPIPS (Zhang et al. 2018) over VGG16's five stages, with uniform channel weights (the paper's
    'baseline' variant): ImageNet weights from a file on disk."""

    CUTS = (4, 9, 16, 23, 30)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's vgg16.features

    def __init__(self, weights: Path):
        super().__init__()
        from torchvision.models import vgg16

        net = vgg16(weights=None).features
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")})
        self.net = net[: self.CUTS[-1]].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406])[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225])[None, :, None, None], persistent=False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x.float() + 1) / 2).expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        out, start = [], 0
        for cut in self.CUTS:
            x = self.net[start:cut](x)
            out.append(x)
            start = cut
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _feature_distance(self.features(x), self.features(y))


def check_perceptual(kind: str, lpips_weights: str | None) -> None:
    """Raise FileNotFoundError, before any training, when `lpips` is asked for without its weights."""
    if kind == "lpips" and not lpips_weights_path(lpips_weights).is_file():
        raise FileNotFoundError(
            f"the lpips perceptual loss needs torchvision's VGG16 weights at {lpips_weights_path(lpips_weights)}, "
            f"and vq never downloads them; copy {VGG_FILE} there (or set lpips_weights), or use perceptual = \"random\"")


def perceptual_module(kind: str, channels: int, lpips_weights: str | None) -> nn.Module | None:
    """The perceptual term's network (kept out of the model's state: it is fixed), or None."""
    check_perceptual(kind, lpips_weights)
    if kind == "random":
        return RandomFeatures(channels)
    if kind == "lpips":
        return VGGFeatures(lpips_weights_path(lpips_weights))
    return None
