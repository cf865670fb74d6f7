"""FID through torch-fidelity, offline: the Inception-v3 weights cannot be downloaded here, so the
code path runs on a file of the right architecture with RANDOM weights. Its numbers are then
meaningless (random features, nothing like Inception's); only their properties are checked."""

import pickle
import socket
import time

import numpy as np
import pytest
import torch
from torch import nn

from vq.pipeline.evaluate import fid as fid_module
from vq.pipeline.evaluate.fid import GaussianFit, download, fid, inception_weights, skip_reason
from vq.pipeline.errors import VQError


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """torch-fidelity's InceptionV3 built without its download (the loading turned off for the
    build), re-initialised so that features keep their scale through 90-odd layers (the default
    init shrinks them to ~1e-8), saved as its converter saves the real file: a plain dict of
    tensors without BatchNorm's num_batches_tracked."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        mp.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state_dict: None)
        model = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    nn.init.normal_(model.fc.weight, std=2048**-0.5)
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save({k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    return path


def grey_images(seed: int, n: int = 4, size: int = 28) -> torch.Tensor:
    # Few images: every one is resized to 299x299 and costs a full Inception pass on the CPU.
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_fid_of_a_set_with_itself_is_zero_with_the_protocol_written(random_weights):
    images = grey_images(0)
    result = fid(images, images, random_weights, batch_size=3)
    assert abs(result["fid"]) < 1e-3
    assert result["n_samples"] == result["n_reference"] == 4
    assert np.isfinite(result["inception_score"]) and np.isfinite(result["inception_score_std"])
    assert result["standard_weights"] is False  # the numbers say they compare with nothing
    for words in ("torch-fidelity", "Inception-v3", "299", "bilinear", "grey repeated to 3 channels", "Fréchet",
                  "2048", "NOT its released file"):
        assert words in result["protocol"]


def test_fid_of_different_sets_is_positive(random_weights):
    dark = grey_images(1) // 4
    rgb = torch.randint(128, 256, (3, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    assert fid(dark, rgb, random_weights)["fid"] > 1e-3


def test_gaussian_fit_in_batches_is_torch_fidelitys_statistics():
    from torch_fidelity.metric_fid import fid_features_to_statistics

    features = torch.randn(50, 16) * 3 + 1
    fit = GaussianFit(16)
    for batch in features.split(7):
        fit.add(batch)
    ours, theirs = fit.statistics(), fid_features_to_statistics(features)
    assert np.allclose(ours["mu"], theirs["mu"], atol=1e-6) and np.allclose(ours["sigma"], theirs["sigma"], atol=1e-5)


def test_the_weights_url_is_torch_fidelitys():
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    assert fid_module.INCEPTION_URL == URL_INCEPTION_V3


def test_offline_without_a_cached_file_there_are_no_weights_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    assert inception_weights(None) is None
    assert time.perf_counter() - start < 5
    reason = skip_reason()
    assert "\n" not in reason and fid_module.INCEPTION_URL in reason and "--inception-weights PATH" in reason
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in reason


def test_torch_fidelitys_cached_download_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VQ_OFFLINE", "1")
    cached = tmp_path / "torch" / "hub" / "checkpoints" / fid_module.INCEPTION_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert inception_weights(None) == cached


def test_a_missing_weights_path_is_a_one_line_error(tmp_path):
    with pytest.raises(VQError) as error:
        inception_weights(tmp_path / "nowhere.pth")
    assert "--inception-weights" in str(error.value) and "\n" not in str(error.value)


def test_a_refused_download_means_no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("VQ_OFFLINE", raising=False)
    with socket.socket() as closed:  # a port nobody listens on: the connection is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(fid_module, "INCEPTION_URL", f"http://127.0.0.1:{port}/{fid_module.INCEPTION_FILE}")
    assert inception_weights(None) is None
    assert not any((tmp_path / "torch" / "hub" / "checkpoints").iterdir())  # no partial file left


def test_a_server_that_never_answers_does_not_hang_the_download(tmp_path):
    with socket.socket() as silent:  # accepts connections (the backlog does) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/{fid_module.INCEPTION_FILE}"
        start = time.perf_counter()
        with pytest.raises(OSError):
            download(url, tmp_path / fid_module.INCEPTION_FILE, timeout=0.5)
        assert time.perf_counter() - start < 5
    assert not any(tmp_path.iterdir())


class Trap:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_a_pickle_in_place_of_weights_is_refused_not_unpickled(tmp_path, capsys):
    path = tmp_path / "weights.pth"
    with open(path, "wb") as f:
        pickle.dump({"fc.weight": Trap()}, f, protocol=2)
    with pytest.raises(VQError) as error:
        fid(grey_images(0), grey_images(1), path)
    assert "\n" not in str(error.value) and "unpickled!" not in capsys.readouterr().out


def test_weights_of_another_architecture_are_a_one_line_error(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(nn.Linear(4, 2).state_dict(), path)
    with pytest.raises(VQError) as error:
        fid(grey_images(0), grey_images(1), path)
    assert "Inception-v3" in str(error.value) and "\n" not in str(error.value)


def test_images_that_are_not_uint8_are_a_one_line_error(random_weights):
    with pytest.raises(VQError) as error:
        fid(torch.rand(4, 1, 28, 28), grey_images(0), random_weights)
    assert "uint8" in str(error.value)
