import os
import warnings

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# vq eval's judges go to a per-user cache by default (~/.cache/vq): the suite's to one of its own.
os.environ.setdefault("VQ_CACHE", __import__("tempfile").mkdtemp(prefix="vq-test-cache-"))
# One compute thread per process, here and in every `vq` the tests start (they inherit this
# environment): the suite's models are tiny, and on a 2-core machine shared with a DataLoader
# worker, a server or another job, a second OpenMP/OpenBLAS thread's spin-waits cost far more
# than the work (test_fast_sampling ran 12x slower with 2 threads on a loaded machine; numpy's
# 2048x2048 eigvals in test_fid 7x). Set before numpy and torch load, which read them once.
for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")
warnings.filterwarnings("ignore", category=FutureWarning, module="x_transformers")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case a plugin imported torch before this file

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def pattern(cls: int, i: int, size: int, channels: int) -> np.ndarray:
    """A class-dependent picture: stripes whose direction and period depend on the class."""
    rng = np.random.default_rng(cls * 1000 + i)
    yy, xx = np.mgrid[0:size, 0:size]
    period = 3 + cls
    base = ((xx if cls % 2 else yy) // period % 2) * 200 + rng.integers(0, 40, (size, size))
    img = np.clip(base, 0, 255).astype(np.uint8)
    return img if channels == 1 else np.stack([img, np.roll(img, cls, 0), 255 - img], -1)


def write_shapes(root):
    """3 classes x 10 grey 16x16 PNGs in class sub-folders."""
    from PIL import Image

    for c, name in enumerate(["circle", "square", "triangle"]):
        (root / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(pattern(c, i, 16, 1), "L").save(root / name / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path):
    """3 classes x 10 grey 16x16 PNGs in class sub-folders, the test's own to change."""
    return write_shapes(tmp_path / "shapes")


@pytest.fixture
def cifar_like(tmp_path):
    """A DatasetDict saved to disk with CIFAR-10's schema: `img` images, `label` ClassLabel."""
    import datasets
    from PIL import Image

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CIFAR10_CLASSES)})
    splits = {}
    for split, n in (("train", 20), ("test", 10)):
        labels = [i % 10 for i in range(n)]
        imgs = [Image.fromarray(pattern(c, i, 32, 3), "RGB") for i, c in enumerate(labels)]
        splits[split] = datasets.Dataset.from_dict({"img": imgs, "label": labels}, features=features)
    path = tmp_path / "cifar_like"
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


@pytest.fixture
def batch():
    """A fixed batch of 8 grey 16x16 images in [-1, 1] with labels."""
    imgs = np.stack([pattern(i % 3, i, 16, 1) for i in range(8)])
    x = torch.from_numpy(imgs).float().div(127.5).sub(1).unsqueeze(1)
    return x, torch.tensor([i % 3 for i in range(8)])


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    """fit-tokenizer -> fit-prior (which exports the codes into chain/codes) on 300 real
    Fashion-MNIST images; shared by the modules that chain commands (they add runs beside it and
    never change these)."""
    from test_cli import vq
    from test_pipeline import PRIOR_TOML, TOKENIZER_TOML

    root = tmp_path_factory.mktemp("chain")
    (root / "tok.toml").write_text(TOKENIZER_TOML)
    (root / "prior.toml").write_text(PRIOR_TOML)
    r = vq("fit-tokenizer", "--data", "fashion-mnist", "--limit", "300", "--config", root / "tok.toml", "--out", root / "tokenizer")
    assert r.returncode == 0, r.stderr
    r = vq("fit-prior", "--tokenizer", root / "tokenizer", "--codes", root / "codes", "--config", root / "prior.toml", "--out", root / "prior")
    assert r.returncode == 0, r.stderr
    return root


@pytest.fixture(scope="session")
def sketch_chain(chain, tmp_path_factory):
    """A sketch prior beside the shared chain's class prior, on the chain's tokenizer (its codes
    exported again, with sketches, into a folder of its own), and a drawing; trained once for the
    modules that use it (sketches, the studio)."""
    from test_cli import vq
    from test_sketch import drawing

    root = tmp_path_factory.mktemp("sketch")
    r = vq("fit-prior", "--tokenizer", chain / "tokenizer", "--codes", root / "codes", "--condition", "sketch",
           "--sketch-styles", "free", "--config", chain / "prior.toml", "--out", root / "sketch-prior")
    assert r.returncode == 0, r.stderr
    for run in ("tokenizer", "prior"):
        (root / run).symlink_to(chain / run)
    # The evaluation classifier is cached per dataset, and this is the chain's dataset: one cache
    # for both (`vq eval --classifier`), so the judge is trained once per session, not twice.
    (chain / "classifier").mkdir(exist_ok=True)
    (root / "classifier").symlink_to(chain / "classifier", target_is_directory=True)
    drawing("boot", 12, ink=20, paper=240).convert("RGB").save(root / "boot.jpg")
    return root


@pytest.fixture(scope="session")
def vae_runs(tmp_path_factory):
    """A VAE and a class-conditional VAE, 3 steps each on the shapes folder, trained once for the
    modules that sample from them (test_pipeline through the CLI, test_api through Pipeline), which
    only read them."""
    from test_cli import vq

    root = tmp_path_factory.mktemp("vae_runs")
    shapes = write_shapes(root / "shapes")
    for model in ("vae", "cvae"):
        r = vq("fit-tokenizer", "--model", model, "--data", shapes, "--steps", "3", "--batch-size", "8", "--out", root / model)
        assert r.returncode == 0, r.stderr
    return root
