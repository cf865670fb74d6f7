"""FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium") and Inception Score (Salimans et al. 2016, "Improved Techniques for Training GANs")
the way the field computes them, through torch-fidelity (Obukhov et al.): its Inception-v3 is a
port of the TensorFlow graph that the original FID and IS code used, with TensorFlow's resizing,
so the numbers compare with published ones, which vq's own judge classifier cannot give.

The weights come from `--inception-weights PATH`, else from the torch hub cache where
torch-fidelity's own loader keeps its download, else from that same download, attempted once with
a short timeout unless offline. They are read with `torch.load(weights_only=True)`: torch-fidelity
itself unpickles `feature_extractor_weights_path` with `weights_only=False`, so it is handed only
tensors that vq has already read safely."""

import hashlib
import io
import os
import pickle
import threading
import urllib.request
from pathlib import Path

import numpy as np
import torch

from vq.pipeline.errors import VQError

# torch-fidelity's URL_INCEPTION_V3 (a test checks they agree); kept here so that importing this
# module, and printing how to get the file, does not import torch-fidelity and torchvision.
INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]
DOWNLOAD_TIMEOUT = 5.0  # seconds to connect, and for each read: a machine without network says so fast
FEATURES = ["2048", "logits_unbiased"]  # pool3 for FID, logits without the bias for IS (torch-fidelity's choices)
IS_SPLITS = 10  # torch-fidelity's and the original IS code's default


def cached_weights() -> Path:
    """Where torch-fidelity's loader (`torch.hub.load_state_dict_from_url`) keeps its download."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def skip_reason() -> str:
    return (f"FID skipped: no Inception-v3 weights here and they could not be downloaded; get {INCEPTION_URL} "
            f"into {cached_weights().parent} (found there from then on) or pass --inception-weights PATH")


def offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")
               for name in ("HF_HUB_OFFLINE", "VQ_OFFLINE"))


def inception_weights(path: Path | None = None) -> Path | None:
    """The weights file to use: `path` if given, else torch-fidelity's cached download, else that
    download now (unless offline); None when there is none, and FID is then skipped."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise VQError(f"--inception-weights {path}: no such file; download {INCEPTION_URL} and give its path")
        return path
    cached = cached_weights()
    if cached.is_file():
        return cached
    if offline():
        return None
    try:
        download(INCEPTION_URL, cached)
    except (OSError, ValueError):  # no network, a refused or cut connection, a corrupt file: all mean skip
        return None
    return cached


def download(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT) -> None:
    """What torch hub's download does (the sha256 prefix in the file name checked, the file moved
    into place whole), but bounded in time, so that a machine without network never hangs."""
    expected = torch.hub.HASH_REGEX.search(dest.name).group(1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f"{dest.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with open_url(url, timeout) as response, open(partial, "wb") as f:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
        if not digest.hexdigest().startswith(expected):
            raise ValueError(f"{url} did not match its sha256 prefix {expected}")
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def open_url(url: str, timeout: float):
    """urlopen's timeout covers connecting and each read but not the name lookup, which a broken
    resolver can stretch to tens of seconds: the opening runs in a thread we stop waiting for."""
    result = {}

    def target():
        try:
            result["response"] = urllib.request.urlopen(url, timeout=timeout)
        except Exception as e:  # handed to the caller: a thread's own exceptions would only be printed
            result["error"] = e

    opener = threading.Thread(target=target, daemon=True)
    opener.start()
    opener.join(2 * timeout)  # GitHub redirects its release files: two connections to open
    if "response" in result:
        return result["response"]
    raise result.get("error") or TimeoutError(f"{url} did not answer within {timeout:g} s")


def is_release_file(weights: Path) -> bool:
    """Whether `weights` is torch-fidelity's released file (its sha256 starts as its name says):
    only then are the numbers comparable with anyone else's."""
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest().startswith(torch.hub.HASH_REGEX.search(INCEPTION_FILE).group(1))


def load_inception(weights: Path, device: torch.device | str = "cpu"):
    """torch-fidelity's InceptionV3 feature extractor with the weights in `weights`, read safely."""
    from torch_fidelity import FeatureExtractorInceptionV3

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise VQError(f"{weights} is no weights file torch reads safely ({str(e).splitlines()[0][:120]}); "
                      f"give torch-fidelity's {INCEPTION_FILE}") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise VQError(f"{weights} holds no state dict of tensors; give torch-fidelity's {INCEPTION_FILE}")
    # torch-fidelity takes a path and torch.loads it with weights_only=False; a buffer of the tensors
    # already read is all it gets to unpickle.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    del state
    try:
        extractor = FeatureExtractorInceptionV3("inception-v3-compat", FEATURES, feature_extractor_weights_path=buffer)
    except RuntimeError:  # load_state_dict(strict=True): its message lists every tensor, many lines
        raise VQError(f"{weights} does not hold torch-fidelity's Inception-v3 weights (tensor names or shapes "
                      f"differ); give its {INCEPTION_FILE}") from None
    return extractor.to(device)


class GaussianFit:
    """Running mean and covariance of features in float64, so that memory stays flat however many
    images: the same numbers as torch-fidelity's `fid_features_to_statistics` (np.mean, np.cov)."""

    def __init__(self, dim: int):
        self.n, self.total, self.outer = 0, np.zeros(dim), np.zeros((dim, dim))

    def add(self, features: torch.Tensor) -> None:
        f = features.detach().to("cpu", torch.float64).numpy()
        self.n += len(f)
        self.total += f.sum(0)
        self.outer += f.T @ f

    def statistics(self) -> dict:
        mu = self.total / self.n
        return {"mu": mu, "sigma": (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)}


def check_images(images: torch.Tensor, name: str) -> None:
    if not (torch.is_tensor(images) and images.dtype == torch.uint8 and images.dim() == 4
            and images.shape[1] in (1, 3)):
        raise VQError(f"FID needs {name} as uint8 (N, C, H, W) with C 1 or 3, not "
                      f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
    if len(images) < 2:
        raise VQError(f"FID needs at least 2 {name} images to fit a covariance, not {len(images)}")


@torch.no_grad()
def inception_features(extractor, images: torch.Tensor, batch_size: int, device) -> tuple[GaussianFit, torch.Tensor]:
    """The Gaussian fit of the pool3 features, and the unbiased logits (4 KB an image, kept for
    torch-fidelity's Inception Score, which shuffles them into splits)."""
    fit, logits = GaussianFit(2048), []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        if batch.shape[1] == 1:  # grey repeated to RGB, as the field does for MNIST-like data
            batch = batch.expand(-1, 3, -1, -1)
        pool, logit = extractor(batch)
        fit.add(pool)
        logits.append(logit.cpu())
    return fit, torch.cat(logits)


def fid(samples: torch.Tensor, reference: torch.Tensor, weights: Path, batch_size: int = 64,
        device: torch.device | str = "cpu") -> dict:
    """FID between `samples` and `reference`, and the samples' Inception Score: both uint8 (N, C, H, W)."""
    from torch_fidelity import __version__
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    check_images(samples, "samples")
    check_images(reference, "reference")
    weights = Path(weights)
    extractor = load_inception(weights, device)
    fit_samples, logits = inception_features(extractor, samples, batch_size, device)
    fit_reference, _ = inception_features(extractor, reference, batch_size, device)
    distance = fid_statistics_to_metric(fit_samples.statistics(), fit_reference.statistics(), verbose=False)
    splits = min(IS_SPLITS, len(samples))
    score = isc_features_to_metric(logits, splits=splits)
    release = is_release_file(weights)
    protocol = (f"torch-fidelity {__version__} Inception-v3 (the TensorFlow FID graph ported to PyTorch), "
                f"weights {weights.name}"
                f"{'' if release else ' (NOT its released file: these numbers compare with nothing)'}; "
                f"uint8 images resized by torch-fidelity to 299x299 with bilinear interpolation as TensorFlow 1.x "
                f"does it (align_corners=False), then (x - 128) / 128; grey repeated to 3 channels; FID = Fréchet "
                f"distance between Gaussian fits of the pool3 2048-d features of {len(samples)} samples and "
                f"{len(reference)} reference images; Inception Score from the samples' unbiased logits over "
                f"{splits} splits")
    return {"fid": distance[KEY_METRIC_FID], "inception_score": score[KEY_METRIC_ISC_MEAN],
            "inception_score_std": score[KEY_METRIC_ISC_STD], "n_samples": len(samples),
            "n_reference": len(reference), "standard_weights": release, "protocol": protocol}
