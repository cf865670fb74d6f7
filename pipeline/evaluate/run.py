"""`vq eval`: one report of how good each stage is (`report.EvalReport`), written to eval.json.

- tokenizer: test MSE, PSNR, SSIM, codebook usage and perplexity;
- prior: its held-out figure in bits (the test NLL per code token and per pixel dimension for an
  exact likelihood);
- samples, per class and overall: the share the judge (`judge`) assigns to the asked-for class,
  and the Fréchet distance between judge features of the samples and of the test split, with the
  same two numbers for real train images (the floor) and for the tokenizer's reconstructions;
- completion, sketches and FID (`tasks`); drawings (`drawings`, `--drawings DIR`).
Every Fréchet distance is computed at the stated n against the whole test split."""

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from vq.pipeline.codes.maps import codes_of_run, load_codes
from vq.pipeline.data.images import to_float
from vq.pipeline.data.loader import EvalImages, Skipped, real_images
from vq.pipeline.data.sources import HUB_ID, load_data
from vq.pipeline.device import resolve_device
from vq.pipeline.errors import VQError
from vq.pipeline.evaluate.drawings import drawing_agreement, read_drawing_set
from vq.pipeline.evaluate.fid import inception_weights
from vq.pipeline.evaluate.judge import classifier_cache, ensure_classifier, judge, predict
from vq.pipeline.evaluate.report import REPORT, EvalReport
from vq.pipeline.evaluate.tasks import completion_accuracy, inception_fid, prior_figure, sketch_agreement
from vq.pipeline.generate.draw import generate_images
from vq.pipeline.generate.options import check_numbers, check_options, with_defaults
from vq.pipeline.generate.pipeline import Pipeline
from vq.pipeline.metrics import accuracy
from vq.pipeline.share import folder
from vq.pipeline.sketch.drawings import check_detector
from vq.pipeline.threads import Threads
from vq.pipeline.train.scores import evaluate_tokenizer
from vq.stage2_prior import SamplingOptions


@dataclass
class EvalJob:
    """An evaluation as the command line asks for it."""

    tokenizer: Path = Path("runs/tokenizer")
    prior: Path | None = Path("runs/prior")
    pipeline: str | None = None  # a saved folder or a Hub id, standing for both runs
    per_class: int = 1000  # samples (and real images) of each class
    options: SamplingOptions = field(default_factory=SamplingOptions)
    completions: int = 500
    sketch_images: int = 1000
    sweep: list[tuple[float, float]] = field(default_factory=list)  # (guidance, temperature) pairs
    fid: bool = False
    inception_weights: Path | None = None
    drawings: Path | None = None
    drawing_samples: int = 8
    device: str = "auto"
    classifier_root: Path | None = None  # the judges' cache (None: `judge.classifier_cache()`)
    out: Path | None = None


@dataclass
class Subject:
    """What is evaluated, loaded and checked before any work: the pipeline, its exported codes
    (when they are there) and, with --drawings, the drawings read."""

    pipe: Pipeline
    tokenizer_dir: Path
    prior_dir: Path | None
    codes: object = None  # a CodeSet
    drawings: list | None = None


def evaluate_run(job: EvalJob, console: Console | None = None) -> tuple[EvalReport, Path]:
    """`vq eval` of two runs, or of a saved pipeline (folder or Hub id) given as `job.pipeline`;
    with `job.fid`, also the field's FID and Inception Score of the samples against the test split,
    when Inception-v3 weights can be had (else the report says it was skipped, and why)."""
    console = console or Console(stderr=True)
    t0 = time.time()
    options = check_numbers(job.options)  # the settings are checked once the prior's kind is known
    weights = inception_weights(job.inception_weights) if job.fid else None  # a bad path is refused before any work
    for path, what in ((job.out, "--out"), (job.classifier_root, "--classifier")):
        if path is not None and Path(path).exists() and Path(path).is_dir() == (what == "--out"):
            raise VQError(f"{what} {path} is a {'folder' if what == '--out' else 'file'}; give a "
                          f"{'file name for eval.json' if what == '--out' else 'folder'}")
    subject = load_subject(job, options)
    console.print(Threads(follow=False).start())
    for line in subject.pipe.training_notes:
        console.print(f"[yellow]note: {escape(line)}[/yellow]", highlight=False)
    options = with_defaults(replace(options, settings=check_options(options, subject.pipe.prior).settings),
                            subject.pipe.prior_info)
    report = measure(job, subject, options, weights, console)
    report.seconds = time.time() - t0
    out = Path(job.out) if job.out else default_report_path(job.pipeline, subject.prior_dir or subject.tokenizer_dir)
    report.write(out)
    return report, out


def load_subject(job: EvalJob, options: SamplingOptions) -> Subject:
    """The pipeline, its codes and drawings, each refused in one line before any work."""
    tokenizer_dir, prior_dir = folder.parts(job.pipeline) if job.pipeline is not None else (job.tokenizer, job.prior)
    pipe = Pipeline.from_pretrained(tokenizer_dir, prior_dir, device=job.device)
    tok, prior = pipe.tokenizer_info, pipe.prior_info
    subject = Subject(pipe, tokenizer_dir, prior_dir if prior is not None else None)
    sketched = prior is not None and "sketch" in prior.conditions
    # The prior's figure means something only on this tokenizer's codes: checked before any work. A
    # saved pipeline has no codes (and names no folder vq reads them from): its figure is measured
    # on the test images encoded here.
    if prior is not None and job.pipeline is None:
        codes_dir = codes_of_run(prior.codes_path, tokenizer_dir)
        subject.codes = load_codes(codes_dir)
        subject.codes.record.check_tokenizer(tok, codes_dir)
        if sketched and not subject.codes.record.has_sketches:
            raise VQError(f"{codes_dir} holds no sketches for the sketch prior {prior_dir}; add them with "
                          f"`vq export-codes --tokenizer {tokenizer_dir} --out {codes_dir} --sketches`")
    if sketched:
        check_detector(prior)
    if options.class_guidance is not None and not sketched:
        raise VQError("class_guidance weighs a class against a sketch: it needs a sketch prior")
    if options.class_guidance is not None and not job.sketch_images and job.drawings is None:
        raise VQError("class_guidance counts for test sketches or --drawings; with --sketch-images 0 give --drawings")
    if job.drawings is not None:  # read before any work: a bad folder or name is refused at once
        if not sketched:
            raise VQError("--drawings needs a sketch prior (`vq fit-prior --condition sketch`)")
        subject.drawings = read_drawing_set(job.drawings, list(tok.class_names), tok.image_size, prior.sketch)
    if job.pipeline is not None:
        check_named_data(tok.data_options().spec, job.pipeline)
    return subject


def check_named_data(spec: str | None, pipeline: str) -> None:
    """A saved pipeline (someone else's folder) names the data it is evaluated on: only a dataset
    name or a Hub id is read, never a path on this machine it names."""
    if not isinstance(spec, str) or not HUB_ID.fullmatch(spec) or Path(spec).expanduser().exists():
        raise VQError(f"{pipeline} names its dataset as {str(spec)[:60]!r}, which is no dataset name or Hub id; a saved "
                      "pipeline is evaluated only on such data: evaluate the runs it was saved from instead")


@torch.no_grad()
def reconstructions(tokenizer, images: torch.Tensor, labels: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """(b, C, H, W) images in [-1, 1] and their (b,) labels through the tokenizer, in chunks on its
    device, -> reconstructions on the CPU, clamped to [-1, 1]."""
    dev = next(tokenizer.parameters()).device
    return torch.cat([tokenizer.reconstruct(images[i : i + chunk].to(dev), labels[i : i + chunk].to(dev)).float().cpu()
                      for i in range(0, images.shape[0], chunk)]).clamp(-1, 1)


@torch.no_grad()
def measure(job: EvalJob, subject: Subject, options: SamplingOptions, weights: Path | None, console: Console) -> EvalReport:
    """Every figure of the report, in order: the judge, the references, the prior, the samples, then
    what the job asks beyond them."""
    pipe, dev = subject.pipe, resolve_device(job.device)
    tokenizer, prior, names = pipe.tokenizer, pipe.prior, list(pipe.class_names)
    data = load_data(pipe.tokenizer_info.data_options())
    test = EvalImages(data.test, None, Skipped()).split
    classifier = ensure_classifier(data, test, job.classifier_root, job.device, console).to(dev).eval()
    test_pred, test_feats = predict(classifier, to_float(test.images))
    judged = lambda images, labels: judge(classifier, images, labels, test_feats, test.labels, names)  # noqa: E731
    console.print(f"classifier test accuracy: {accuracy(test_pred, test.labels):.4f}")
    real_split = real_images(data.train, job.per_class, len(names), options.seed)
    real, real_labels = to_float(real_split.images), real_split.labels
    recon = reconstructions(tokenizer, real, real_labels)
    labels = torch.arange(len(names)).repeat_interleave(job.per_class)
    conditional = pipe.tokenizer_info.samples_by_class
    ts = time.time()
    samples = generate_images(tokenizer, prior, labels if conditional else torch.full_like(labels, -1), options).cpu()
    report = EvalReport(
        tokenizer_model=pipe.tokenizer_info.kind.name, dataset=data.describe(), tokenizer_dir=str(subject.tokenizer_dir),
        sampling={**{k: v for k, v in asdict(options).items() if v is not None and v != {}}, "per_class": job.per_class},
        classifier={"test_acc": accuracy(test_pred, test.labels), "dir": str(job.classifier_root or classifier_cache())},
        tokenizer=evaluate_tokenizer(tokenizer, test), real_train=judged(real, real_labels).to_json(),
        reconstructions=judged(recon, real_labels).to_json(),
        samples={**judged(samples, labels if conditional else None).to_json(), "seconds": time.time() - ts}, device=str(dev))
    if prior is not None:
        report.prior = {**prior_figure(tokenizer, prior, subject.codes, test, dev), "dir": str(subject.prior_dir)}
    if job.fid:
        report.fid = inception_fid(samples, test, weights, dev, console)
    if prior is not None:
        measure_prior_tasks(job, report, subject, options, classifier, test, test_feats, judged, console)
    return report


def measure_prior_tasks(job: EvalJob, report: EvalReport, subject: Subject, options: SamplingOptions, classifier, test,
                        test_feats, judged, console: Console) -> None:
    """The figures only a prior has: the guidance sweep, completion, sketches, drawings."""
    pipe, dev = subject.pipe, resolve_device(job.device)
    tokenizer, prior, names = pipe.tokenizer, pipe.prior, list(pipe.class_names)
    labels = torch.arange(len(names)).repeat_interleave(job.per_class)
    for guidance, temperature in job.sweep:
        swept = replace(options, guidance=guidance, temperature=temperature, class_guidance=None)
        j = judged(generate_images(tokenizer, prior, labels, swept).cpu(), labels)
        report.sweep.append({"guidance": guidance, "temperature": temperature, "acc": j.acc, "fd": j.fd, "n": j.n})
        console.print(f"sweep guidance={guidance} T={temperature}: acc={j.acc:.4f} fd={j.fd:.3f}")
    if job.completions > 0:
        report.completion = completion_accuracy(tokenizer, prior, classifier, test, job.completions, options, dev)
    if "sketch" in prior.conditions and job.sketch_images > 0:
        report.sketch = sketch_agreement(tokenizer, prior, classifier, test, job.sketch_images, options, dev, test_feats, names)
    if subject.drawings is not None:
        box = pipe.prior_info.sketch.frame_for() if pipe.prior_info.sketch else None
        report.drawings = {**drawing_agreement(tokenizer, prior, classifier, subject.drawings, job.drawing_samples, options,
                                               names, box, sketch=pipe.prior_info.sketch), "dir": str(job.drawings)}


def default_report_path(pipeline: str | None, run_dir: Path) -> Path:
    """eval.json in the run evaluated; for a saved pipeline, beside its parts (where its model card
    reads it); for a Hub id, whose files live in the Hub cache, runs/eval/<user>--<name>.json."""
    if pipeline is None:
        return Path(run_dir) / REPORT
    if Path(pipeline).is_dir():
        return Path(pipeline) / REPORT
    return Path("runs/eval") / f"{str(pipeline).replace('/', '--')}.json"
