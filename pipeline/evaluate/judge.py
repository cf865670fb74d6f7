"""The judge behind `vq eval`: a small CNN trained on the dataset's train split, cached per dataset
and per user (`classifier_cache`: every directory `vq eval` runs in shares it).
Its accuracy on samples says whether they look like their class; its penultimate features feed
the Fréchet distance (`judge`). Its own test accuracy is reported beside every figure it produces."""

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from vq.pipeline.checkpoint import load_model, save_checkpoint
from vq.pipeline.data.images import image_batch, to_float
from vq.pipeline.data.splits import ImageData, Split
from vq.pipeline.errors import VQError
from vq.pipeline.files import STATE_FILE, run_lock
from vq.pipeline.metrics import accuracy, frechet_distance
from vq.pipeline.records import RunRecord
from vq.pipeline.train.config import TrainConfig
from vq.pipeline.train.trainer import fit

FEATURES = 128


@dataclass
class ClassifierConfig:
    channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    width: int = 32

    RANGES = {"channels": (1, 4), "image_size": (1, 4096), "num_classes": (1, 100_000), "width": (1, 1024)}

    def validate(self) -> None:
        """Nothing between fields to check (`RANGES` holds each one's)."""


@dataclass
class ClassifierOutput:
    loss: torch.Tensor
    metrics: dict


class Classifier(nn.Module):
    name = "cnn"
    config_class = ClassifierConfig

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        w = config.width

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(config.channels, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(2 * w * 16, FEATURES), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURES, config.num_classes))

    @staticmethod
    def image_memory(c: ClassifierConfig) -> tuple[int, str]:
        """(bytes, what sets them) of the working memory to judge one image: the full-resolution layers'."""
        return 4 * 8 * c.width * c.image_size**2, f"{c.image_size} px images, width {c.width}"

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(b, c, H, W) in [-1, 1] -> (b, 128) penultimate activations."""
        return self.body(images)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, step: int = 0) -> ClassifierOutput:
        if self.training:  # random shifts of up to 2 px: cheap, and the judge generalises better
            pad = F.pad(images, (2, 2, 2, 2), value=-1.0)
            dx, dy = torch.randint(0, 5, (2,)).tolist()
            images = pad[..., dy : dy + images.shape[-2], dx : dx + images.shape[-1]]
        logits = self.head(self.features(images))
        loss = F.cross_entropy(logits.float(), labels)
        acc = (logits.argmax(-1) == labels).float().mean()
        return ClassifierOutput(loss, {"acc": acc.detach()})


CLASSIFIER_TRAIN = {"epochs": 3, "batch_size": 128, "lr": 2e-3, "warmup_steps": 100, "weight_decay": 0.01,
                    "eval_every": 10**9}


@torch.no_grad()
def predict(model: Classifier, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [-1, 1] (any device) -> (predicted classes, features), on the CPU."""
    device = next(model.parameters()).device
    preds, feats = [], []
    for i in range(0, images.shape[0], batch_size):
        f = model.features(images[i : i + batch_size].to(device).float())
        feats.append(f.float().cpu())
        preds.append(model.head(f).argmax(-1).cpu())
    return torch.cat(preds), torch.cat(feats)


def cache_key(data: ImageData) -> str:
    desc = {k: v for k, v in data.describe().items() if k != "source"}
    return hashlib.sha256(json.dumps([desc, data.class_names], sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class JudgeRecord(RunRecord):
    """A cached judge's config.json: a run record, and whether its training finished."""

    stage: ClassVar[str] = "classifier"
    complete: bool = True

    @classmethod
    def find_kind(cls, name: str) -> type:
        if name != Classifier.name:
            raise VQError(f"unknown classifier '{str(name)[:40]}'")
        return Classifier

    @classmethod
    def own_fields(cls, info: dict, run_dir: Path) -> dict:
        return {"complete": info.get("complete", True)}


def classifier_cache() -> Path:
    """Where judges are cached unless `--classifier` says: $VQ_CACHE/classifier, else
    $XDG_CACHE_HOME/vq/classifier, else ~/.cache/vq/classifier (the same from any directory)."""
    if os.environ.get("VQ_CACHE"):
        return Path(os.environ["VQ_CACHE"]).expanduser() / "classifier"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "vq" / "classifier"


def ensure_classifier(data: ImageData, test: Split, root: Path | None = None, device: str = "auto",
                      console: Console | None = None) -> Classifier:
    """Load the cached classifier for this dataset or train one (3 epochs of its train split: 3 to 5
    minutes on 2 idle CPU cores for Fashion-MNIST, much longer on a busy machine; once per
    dataset); `test` is the decoded held-out split it is scored on. root: the cache (default
    `classifier_cache()`). Its progress shows as the training loop's: a bar in a terminal, a line a
    minute in a log."""
    console = console or Console(stderr=True)
    out = Path(root or classifier_cache()) / cache_key(data)
    resume = False
    if (out / "config.json").exists():
        record = JudgeRecord.read(out)
        if list(record.class_names) != data.class_names:
            raise VQError(f"{out} holds a classifier of other classes; delete it")
        if record.complete:
            return load_model(record, "cpu")
        resume = (out / STATE_FILE).exists()  # an evaluation interrupted while it trained the classifier
    console.print(f"{'continuing' if resume else 'training'} the evaluation classifier on {data.spec}: once per dataset, "
                  f"3 epochs (3-5 minutes on 2 idle CPU cores for Fashion-MNIST, longer on a busy machine); cached in {out}")
    model = Classifier(ClassifierConfig(data.channels, data.image_size, len(data.class_names)))
    cfg = TrainConfig(**CLASSIFIER_TRAIN, device=device)
    record = JudgeRecord(out, Classifier, model.config, class_names=tuple(data.class_names), dataset=data.describe(),
                         complete=False)

    def evaluate(m):
        pred, _ = predict(m, to_float(test.images))
        return {"test_acc": accuracy(pred, test.labels)}

    with run_lock(out), torch.enable_grad():  # callers may be inside no_grad
        fit(model, data.train, prepare=image_batch, evaluate=evaluate,
            save=lambda m, metrics: save_checkpoint(out, m, replace(record, metrics=metrics)),
            run_dir=out, cfg=cfg, console=console, resume=resume, keep_schedule=True)
        replace(JudgeRecord.read(out), complete=True).write()
    return load_model(JudgeRecord.read(out), "cpu")


@dataclass
class Judged:
    """The judge's figures of a set of images: how many, the Fréchet distance of their features to
    the test split's, and, for images of asked-for classes, the share seen as their class, overall
    and per class (each with its own distance); for images of no class, the share it sees of each."""

    n: int
    fd: float
    acc: float | None = None
    per_class: dict[str, dict[str, float]] | None = None  # name -> {"acc", "fd"}
    predicted_share: dict[str, float] | None = None

    def to_json(self) -> dict:
        """The figures as a report holds them: those measured, under their names."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def judge(classifier, images: torch.Tensor, labels: torch.Tensor | None, test_feats: torch.Tensor,
          test_labels: torch.Tensor, class_names: list[str]) -> Judged:
    """The judge's figures (`Judged`) of images in [-1, 1], of the classes `labels` (None: no class)."""
    pred, feats = predict(classifier, images)
    fd = frechet_distance(feats.numpy(), test_feats.numpy())
    if labels is None:
        share = {name: float((pred == c).float().mean()) for c, name in enumerate(class_names)}
        return Judged(n=int(images.shape[0]), fd=fd, predicted_share=share)
    per_class = {}
    for c, name in enumerate(class_names):
        sel, ref = labels == c, test_labels == c
        if sel.sum() > 1 and ref.sum() > 1:
            per_class[name] = {"acc": accuracy(pred[sel], labels[sel]),
                               "fd": frechet_distance(feats[sel].numpy(), test_feats[ref].numpy())}
    return Judged(n=int(images.shape[0]), fd=fd, acc=accuracy(pred, labels), per_class=per_class)
