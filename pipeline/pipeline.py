"""`Pipeline`: a tokenizer and its prior, loaded once, answering calls in memory — sample by
class or from a sketch, complete a partial image, encode, decode, reconstruct. It returns images
(Pillow, or uint8 tensors) and writes nothing; the command line, the web page and a notebook are
thin layers over the same calls, so one seed gives the same pixels from each.

    pipe = Pipeline.from_pretrained("runs/tokenizer", "runs/prior")
    images = pipe.sample("sneaker", n=8, seed=0)

Every call first turns its arguments into a request (`plan_samples`, `plan_completion`), which
needs only the runs' records, not the models: the command line refuses a bad input that way
before it loads anything. Calls on one Pipeline are serialised by a lock: the fast sampler's
static buffers belong to the model, so two threads may share one Pipeline."""

import numbers
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from vq.pipeline import hub
from vq.pipeline.checkpoint import load_checkpoint
from vq.pipeline.data import to_uint8
from vq.pipeline.device import resolve_device
from vq.pipeline.generate import SEED_RANGE, SamplingOptions, complete_codes, generate_images, resolve_class, whole
from vq.pipeline.records import PriorInfo, TokenizerInfo
from vq.pipeline.images import image_grid
from vq.pipeline.runs import VQError, atomic_write_json, read_json
from vq.pipeline.sketch import as_drawing
from vq.pipeline.user_images import code_mask, keep_mask, read_drawing, read_image, read_images
from vq.stage1_vqvae import TOKENIZERS
from vq.stage2_prior import PRIORS

OUTPUT_TYPES = ("pil", "pt")


MAX_IMAGES = 100_000  # images one call may ask for (n per class times the classes); call again for more
MAX_CANDIDATES = 256  # draws per completion ranked by the prior


def fresh_seed(seed: int | None) -> int:
    """The seed of a call: the one given (checked: a whole number within 64 bits), or a new one
    (which the caller may print to repeat it)."""
    return secrets.randbelow(2**31) if seed is None else whole(seed, "seed", *SEED_RANGE)


def sampling_options(guidance: float, temperature: float, top_k: int | None, top_p: float | None, seed: int,
                     steps: int | None = None, class_guidance: float | None = None) -> SamplingOptions:
    """The options of a call, each checked for type and range (`SamplingOptions.validate`)."""
    opts = SamplingOptions(guidance, temperature, top_k, top_p, seed, steps, class_guidance)
    opts.validate()
    return opts


def check_n(n: int, name: str = "n", high: int = MAX_IMAGES) -> int:
    return whole(n, name, 1, high)


def class_index(value, class_names: list[str]) -> int:
    """A class given by name (as `vq sample --class` reads names) or by index."""
    if isinstance(value, str):
        return resolve_class(value, class_names)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) and not (isinstance(value, torch.Tensor) and value.numel() == 1):
        raise VQError(f"a class is a name or an index, not {value!r}; valid classes: {', '.join(class_names)}")
    index = int(value)
    if not 0 <= index < len(class_names):
        raise VQError(f"class index {index} is out of range; there are {len(class_names)} classes: {', '.join(class_names)}")
    return index


# --- requests: arguments checked and resolved against the runs' records, before any model ----

@dataclass
class SampleRequest:
    groups: list[int]  # one class index per group of n images; -1: no class
    n: int
    options: SamplingOptions
    sketch: torch.Tensor | None = None  # (groups, 1, S, S) bool lines, as the sketch prior reads them for each
    # group (framed to its class's box; beside the drawing flag)
    sketch_note: str | None = None  # how the drawing was read (for the first group)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([c for c in self.groups for _ in range(self.n)])


@dataclass
class CompletionRequest:
    image: torch.Tensor  # (1, c, H, W) in [-1, 1]
    pixel_mask: torch.Tensor  # (H, W) bool, True = keep
    label: int | None
    n: int
    options: SamplingOptions
    candidates: int
    note: str  # how the image was converted


def plan_samples(tokenizer: TokenizerInfo, prior: PriorInfo | None, classes=None, n: int = 1, *, sketch=None,
                 options: SamplingOptions) -> SampleRequest:
    """Check and resolve a sampling call: `classes` is a name, an index, a list of them, or None
    (one group per class; with a sketch, or for an unconditional model, one group without a class)."""
    options.validate()
    n = check_n(n)
    names = tokenizer.class_names
    if sketch is not None and (prior is None or "sketch" not in prior.conditions):
        where = (f"{prior.run_dir} was trained without sketches (conditions: {', '.join(sorted(prior.conditions))}); "
                 "train one with `vq fit-prior --condition sketch`" if prior is not None else
                 f"{tokenizer.run_dir} holds a {tokenizer.model}, which has no codes; sketches need a VQ-VAE and a "
                 "prior trained with `vq fit-prior --condition sketch`")
        raise VQError(f"{where} to sample from a sketch")
    if options.class_cfg is not None and (sketch is None or classes is None):
        raise VQError("--class-guidance weighs a class against a sketch: give both a sketch and a class "
                      "(--guidance alone guides a class or a sketch)")
    if classes is None:
        groups = list(range(len(names))) if tokenizer.samples_by_class and sketch is None else [-1]
    else:
        if not tokenizer.samples_by_class:
            raise VQError(f"{tokenizer.run_dir} is an unconditional {tokenizer.model.upper()}: it cannot sample a given class; "
                          "drop --class")
        items = list(classes) if isinstance(classes, (list, tuple)) else [classes]
        if not items:
            raise VQError(f"no class given; valid classes: {', '.join(names)}")
        groups = [class_index(c, names) for c in items]
    if n * len(groups) > MAX_IMAGES:
        raise VQError(f"{n} images of each of {len(groups)} classes is more than the {MAX_IMAGES:,} one call makes; "
                      "ask for fewer, or call again")
    if sketch is None:
        return SampleRequest(groups, n, options)
    from vq.pipeline.generate import drawing_class_guidance
    from vq.pipeline.sketch import check_detector, drawing_box

    check_detector(prior.stored, prior.run_dir)
    boxes = [drawing_box(prior.stored, c if c >= 0 else None) for c in groups]  # each class's, the dataset's without
    read = {box: read_drawing(sketch, tokenizer.image_size, box) for box in dict.fromkeys(boxes)}  # once per box
    lines = torch.cat([read[box][0] for box in boxes])
    return SampleRequest(groups, n, drawing_class_guidance(options) if classes is not None else options, lines,
                         read[boxes[0]][1])


def plan_completion(tokenizer: TokenizerInfo, prior: PriorInfo | None, image, mask="top", *, fraction: float = 0.5,
                    n: int = 1, classes=None, options: SamplingOptions, candidates: int = 8) -> CompletionRequest:
    """Check and read a completion call: the image (file, Pillow image or array), the mask (a side
    with `fraction`, or a mask image: white / True = keep) and at most one class."""
    options.validate()
    n = check_n(n)
    candidates = check_n(candidates, "candidates", MAX_CANDIDATES)
    if prior is None:
        raise VQError(f"{tokenizer.run_dir} holds a {tokenizer.model}, which has no codes; completion needs a "
                      "VQ-VAE tokenizer and its prior")
    items = list(classes) if isinstance(classes, (list, tuple)) else ([] if classes is None else [classes])
    if len(items) > 1:
        raise VQError("a completion takes one class (or none)")
    label = class_index(items[0], tokenizer.class_names) if items else None
    x, note = read_image(image, tokenizer.channels, tokenizer.image_size)
    pixels = keep_mask(mask, tokenizer.image_size, fraction, image)
    return CompletionRequest(x, pixels, label, n, options, candidates, note)


# --- results ------------------------------------------------------------------------------------

@dataclass
class Samples:
    images: torch.Tensor  # (b, c, H, W) uint8, groups in order, n each
    labels: torch.Tensor  # (b,) class index per image, -1 without one
    seed: int
    sketch: torch.Tensor | None = None  # (groups, 1, S, S) bool: the sketch's lines as the prior read them per group
    sketch_note: str | None = None


@dataclass
class Completions:
    images: torch.Tensor  # (n, c, H, W) uint8
    original: torch.Tensor  # (1, c, H, W) uint8: the image as the tokenizer reads it
    masked: torch.Tensor  # (1, c, H, W) uint8: what the prior is given: the known codes' cells, grey elsewhere
    code_maps: torch.Tensor  # (n, h, w) int64: the completed codes
    known: torch.Tensor  # (h, w) bool: the codes kept from the image
    seed: int
    note: str

    @property
    def known_codes(self) -> int:
        return int(self.known.sum())

    @property
    def codes(self) -> int:
        return self.known.numel()


def to_pil(images: torch.Tensor) -> list:
    """(b, c, H, W) uint8 -> Pillow images (L or RGB)."""
    from PIL import Image

    arr = images.cpu().numpy()
    return [Image.fromarray(a[0], "L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0).copy(), "RGB") for a in arr]


def output(images: torch.Tensor, output_type: str):
    if output_type == "pt":
        return images
    if output_type == "pil":
        return to_pil(images)
    raise VQError(f"unknown output_type '{output_type}'; use one of {', '.join(OUTPUT_TYPES)}")


class Pipeline:
    """A tokenizer and (for a discrete one) its prior, on one device. Build with `from_pretrained`."""

    def __init__(self, tokenizer: torch.nn.Module, tokenizer_info: TokenizerInfo, prior: torch.nn.Module | None = None,
                 prior_info: PriorInfo | None = None):
        self.tokenizer, self.tokenizer_info = tokenizer.eval(), tokenizer_info
        self.prior, self.prior_info = (prior.eval() if prior is not None else None), prior_info
        self._lock = threading.RLock()

    @classmethod
    def from_pretrained(cls, tokenizer: str | Path, prior: str | Path | None = None, *, revision: str | None = None,
                        device: str = "auto", cache_dir: str | Path | None = None) -> "Pipeline":
        """Load a saved pipeline (a folder written by `save_pretrained`, or a Hub repo id such as
        "user/name" at an optional `revision`, fetched into the Hugging Face cache), or a
        tokenizer run and, when it makes discrete codes, its prior run (a VAE samples from its own
        latent prior and takes none). A prior of another tokenizer is refused before any weights
        are read."""
        if prior is None and hub.is_pipeline_source(tokenizer):
            tokenizer, prior = hub.parts(tokenizer, revision, cache_dir)
        tok = TokenizerInfo.read(tokenizer)
        prior_info = None
        if tok.discrete:
            if prior is None:
                raise VQError(f"{tokenizer} holds a {tok.model}, which samples through a prior over its codes; "
                              "pass the prior's run directory too")
            prior_info = PriorInfo.read(prior)
            prior_info.check_tokenizer(tok)
        dev = str(resolve_device(device))
        tok_model, _ = load_checkpoint(tok.run_dir, "tokenizer", TOKENIZERS, dev)
        prior_model = load_checkpoint(prior_info.run_dir, "prior", PRIORS, dev)[0] if prior_info else None
        return cls(tok_model, tok, prior_model, prior_info)

    def save_pretrained(self, out: str | Path, *, license: str = "mit", name: str | None = None, force: bool = False) -> Path:
        """Write this pipeline as one folder the Hub understands (see `hub`): each part's config
        and safetensors weights, an index, a sample grid, the runs' `vq eval` report when there is
        one, and a model card README.md. `name` is how the card tells readers to load it (the Hub
        id it will have; default: the folder). Never the training state."""
        out = Path(out)
        tok, prior = self.tokenizer_info, self.prior_info
        hub.check_out(out, force, [info.run_dir for info in (tok, prior) if info is not None])
        with hub.replacing(out) as folder:
            hub.save_part(tok.run_dir, tok.stored, folder / "tokenizer")
            if prior is not None:
                hub.save_part(prior.run_dir, prior.stored, folder / "prior")
            hub.write_index(folder, prior is not None, self.class_names)
            report = self.eval_report()
            if report is not None:
                atomic_write_json(folder / "eval.json", report)
            per_class = 8
            by_class = self.conditions >= {"class"}
            images = self.sample(n=per_class, seed=0)  # every class, or unconditional draws
            image_grid(images, rows=len(self.class_names) if by_class else None).save(folder / "samples.png")
            note = (f"One row per class ({', '.join(self.class_names)}), {per_class} samples each" if by_class
                    else f"{per_class} samples") + " (guidance 2, seed 0), drawn when the pipeline was saved."
            (folder / "README.md").write_text(hub.model_card(hub.portable(tok.stored), prior and hub.portable(prior.stored),
                                                             report, license=license, grid_note=note, name=name or out.name))
        return out

    def eval_report(self) -> dict | None:
        """The latest `vq eval` report of these runs (eval.json in the prior's run, or in the
        tokenizer's for a VAE; in a saved pipeline, beside its parts), or None."""
        run = (self.prior_info or self.tokenizer_info).run_dir
        saved = (run.parent / hub.INDEX).is_file()
        for path in [run / "eval.json"] + ([run.parent / "eval.json"] if saved else []):
            if path.is_file():
                try:
                    report = read_json(path)
                except VQError:
                    return None
                return report if isinstance(report, dict) else None
        return None

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None, license: str = "mit",
                    dry_run: bool = False) -> dict:
        """Save this pipeline into a temporary folder and upload it to the Hub repo `repo_id`
        (created if missing) with `huggingface_hub`; with dry_run, only list what would go up."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "pipeline", license=license, name=repo_id)
            return hub.push(folder, repo_id, private=private, token=token, dry_run=dry_run)

    def __repr__(self) -> str:
        prior = f", prior={self.prior_info.model} {sorted(self.conditions)}" if self.prior_info else ""
        return (f"Pipeline(tokenizer={self.tokenizer_info.model} {self.channels}x{self.image_size}x{self.image_size}"
                f"{prior}, classes={len(self.class_names)}, device={self.device})")

    # --- what is loaded ----------------------------------------------------------------------

    @property
    def class_names(self) -> list[str]:
        return list(self.tokenizer_info.class_names)

    @property
    def image_size(self) -> int:
        return self.tokenizer_info.image_size

    @property
    def channels(self) -> int:
        return self.tokenizer_info.channels

    @property
    def grid(self) -> tuple[int, int] | None:
        """The code grid (h, w); None for a VAE, which has no codes."""
        return self.tokenizer_info.grid

    @property
    def codebook_size(self) -> int | None:
        return self.tokenizer_info.codebook_size

    @property
    def conditions(self) -> frozenset[str]:
        """What a sample can be conditioned on: the prior's, or a conditional VAE's class."""
        if self.prior_info is not None:
            return self.prior_info.conditions
        return frozenset({"class"}) if self.tokenizer_info.conditional else frozenset()

    @property
    def device(self) -> torch.device:
        return next(self.tokenizer.parameters()).device

    # --- generation --------------------------------------------------------------------------

    def sample(self, classes=None, n: int = 1, *, sketch=None, guidance: float = 2.0, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None, steps: int | None = None,
               class_guidance: float | None = None, output_type: str = "pil"):
        """n images of each class in `classes` (a name, an index, a list of them; None: every
        class, or for a sketch or an unconditional model, n images without a class), following
        `sketch` (a drawing: file, Pillow image or array) when the prior reads sketches.
        guidance: classifier-free guidance scale (1 = none); temperature, top_k, top_p: the
        draw; seed: the same seed gives the same images; steps: a masked prior's decoding
        iterations; class_guidance: with a sketch and a class, the class's own guidance scale on
        top of the sketch's (`guidance`; None: twice `guidance`, `drawing_class_guidance`); a
        sketch given with a class is framed to the class's proportions (`sketch.drawing_box`). -> Pillow
        images (or a uint8 tensor (b, c, H, W) with output_type="pt"), grouped by class."""
        options = sampling_options(guidance, temperature, top_k, top_p, fresh_seed(seed), steps, class_guidance)
        request = plan_samples(self.tokenizer_info, self.prior_info, classes, n, sketch=sketch, options=options)
        return output(self.run_samples(request).images, output_type)

    def complete(self, image, mask="top", *, fraction: float = 0.5, n: int = 1, classes=None, seed: int | None = None,
                 guidance: float = 2.0, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 candidates: int = 8, steps: int | None = None, output_type: str = "pil"):
        """n completions of `image` (file, Pillow image or array): `mask` keeps `fraction` of it on
        one side ("top", "bottom", "left", "right"), or is a mask image or bool array of any size
        (white / True = keep); the prior draws the rest, as `classes` (one class, or None)."""
        options = sampling_options(guidance, temperature, top_k, top_p, fresh_seed(seed), steps)
        request = plan_completion(self.tokenizer_info, self.prior_info, image, mask, fraction=fraction, n=n,
                                  classes=classes, options=options, candidates=candidates)
        return output(self.run_completion(request).images, output_type)

    @torch.no_grad()
    def run_samples(self, request: SampleRequest) -> Samples:
        labels = request.labels
        sketches = as_drawing(request.sketch).repeat_interleave(request.n, 0) if request.sketch is not None else None
        with self._lock:
            images = generate_images(self.tokenizer, self.prior, labels, request.options, sketches)
        return Samples(to_uint8(images).cpu(), labels, request.options.seed, request.sketch, request.sketch_note)

    @torch.no_grad()
    def run_completion(self, request: CompletionRequest) -> Completions:
        x = request.image.to(self.device)
        with self._lock:
            codes = self.tokenizer.encode_indices(x)
            known = code_mask(request.pixel_mask, self.grid).to(self.device)
            drawn = complete_codes(self.prior, codes, known, request.label, request.n, request.options, request.candidates)
            images = self.tokenizer.decode_indices(drawn)
        cells = torch.nn.functional.interpolate(known[None, None].float(), size=x.shape[-2:], mode="nearest")[0]
        note = request.note + ("" if known.any() else "; no code lies mostly inside the kept region, so the whole image is drawn")
        return Completions(to_uint8(images).cpu(), to_uint8(x).cpu(), to_uint8(x * cells).cpu(), drawn.cpu(), known.cpu(),
                           request.options.seed, note)

    # --- codes -------------------------------------------------------------------------------

    def _needs_codes(self, what: str) -> None:
        if not self.tokenizer_info.discrete:
            raise VQError(f"{self.tokenizer_info.run_dir} holds a {self.tokenizer_info.model}, which has no discrete "
                          f"codes to {what}; use a VQ-VAE tokenizer")

    @torch.no_grad()
    def encode(self, images) -> torch.Tensor:
        """Images (a file, Pillow image or array, a list of them, or a (b, c, H, W) tensor) ->
        (b, h, w) int64 codes, on the CPU."""
        self._needs_codes("encode")
        x = read_images(images, self.channels, self.image_size).to(self.device)
        with self._lock:
            return self.tokenizer.encode_indices(x).cpu()

    @torch.no_grad()
    def decode(self, codes, output_type: str = "pil"):
        """(b, h, w) or (h, w) codes in [0, codebook_size) -> images."""
        self._needs_codes("decode")
        codes = torch.as_tensor(codes)
        given = f"{tuple(codes.shape)} {codes.dtype}"
        codes = codes[None] if codes.ndim == 2 else codes
        if codes.ndim != 3 or tuple(codes.shape[1:]) != tuple(self.grid) or codes.is_floating_point():
            raise VQError(f"codes must be integers of shape (b, {self.grid[0]}, {self.grid[1]}) or "
                          f"({self.grid[0]}, {self.grid[1]}), got {given}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise VQError(f"codes must lie in [0, {self.codebook_size}), got {int(codes.min())}..{int(codes.max())}")
        with self._lock:
            images = self.tokenizer.decode_indices(codes.long().to(self.device))
        return output(to_uint8(images).cpu(), output_type)

    @torch.no_grad()
    def reconstruct(self, images, classes=None, output_type: str = "pil"):
        """Images -> the tokenizer's reconstructions (a conditional VAE needs their classes: one,
        or one per image)."""
        x = read_images(images, self.channels, self.image_size).to(self.device)
        labels = None
        if self.tokenizer_info.conditional:
            if classes is None:
                raise VQError("a conditional VAE reconstructs an image given its class: pass classes")
            items = list(classes) if isinstance(classes, (list, tuple)) else [classes] * x.shape[0]
            if len(items) != x.shape[0]:
                raise VQError(f"{len(items)} classes for {x.shape[0]} images; give one class, or one per image")
            labels = torch.tensor([class_index(c, self.class_names) for c in items], device=self.device)
        with self._lock:
            recon = self.tokenizer.reconstruct(x, labels)
        return output(to_uint8(recon).cpu(), output_type)
