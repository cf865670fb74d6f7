"""`Pipeline`: a tokenizer and its prior, loaded once, answering calls in memory — sample by
class or from a sketch, complete a partial image, encode, decode, reconstruct. It returns images
(Pillow, or uint8 tensors) and writes nothing; the command line, the web page and a notebook are
thin layers over the same calls, so one seed gives the same pixels from each.

    pipe = Pipeline.from_pretrained("runs/tokenizer", "runs/prior")
    images = pipe.sample("sneaker", n=8, seed=0)

Every call first turns its arguments into a request (`plans`), which needs only the runs'
records, not the models: the command line refuses a bad input that way before it loads anything. Calls on one Pipeline are serialised by a lock: the fast sampler's
static buffers belong to the model, so two threads may share one Pipeline."""

import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from vq.pipeline.checkpoint import load_model, unfinished_training
from vq.pipeline.data.images import to_uint8
from vq.pipeline.device import resolve_device
from vq.pipeline.errors import VQError
from vq.pipeline.evaluate.report import EvalReport
from vq.pipeline.generate.draw import complete_codes, decode_codes, generate_images, paste_known, to_prior, to_tokenizer
from vq.pipeline.generate.images import image_grid
from vq.pipeline.generate.inputs import read_images
from vq.pipeline.generate.options import check_numbers, drawing_class_guidance, fresh_seed
from vq.pipeline.generate.recognise import recognise, recognition_note
from vq.pipeline.generate.plans import CompletionRequest, SampleRequest, class_index, plan_completion, plan_samples, records
from vq.pipeline.records import PriorRecord, TokenizerRecord
from vq.pipeline.share import folder
from vq.pipeline.threads import Threads
from vq.pipeline.sketch.drawings import as_drawing
from vq.stage1_vqvae import Tokenizer
from vq.stage2_prior import Prior, SamplingOptions

OUTPUT_TYPES = ("pil", "pt")


def call_options(guidance, temperature, top_k, top_p, seed, steps=None, settings=None, class_guidance=None) -> SamplingOptions:
    """The options of a call under their API names, each number checked before anything else is
    read; `steps` is a masked prior's setting, checked against the prior by the plan."""
    settings = {**(settings or {}), **({"steps": steps} if steps is not None else {})}
    return check_numbers(SamplingOptions(guidance=guidance, temperature=temperature, top_k=top_k, top_p=top_p,
                                         seed=fresh_seed(seed), class_guidance=class_guidance, settings=settings))


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
    code_maps: torch.Tensor  # (n, *code_shape) int64: the completed codes
    known: torch.Tensor  # (*code_shape) bool: the codes kept from the image
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

    def __init__(self, tokenizer: Tokenizer, tokenizer_info: TokenizerRecord, prior: Prior | None = None,
                 prior_info: PriorRecord | None = None):
        self.tokenizer, self.tokenizer_info = tokenizer.eval(), tokenizer_info
        self.prior, self.prior_info = (prior.eval() if prior is not None else None), prior_info
        self.last_seed: int | None = None  # the seed of the last call, given or drawn, to repeat it
        self._lock = threading.RLock()
        self._threads = Threads()  # each call's compute threads (`threads`)

    @classmethod
    def from_pretrained(cls, tokenizer: str | Path, prior: str | Path | None = None, *, revision: str | None = None,
                        device: str = "auto", cache_dir: str | Path | None = None) -> "Pipeline":
        """Load a saved pipeline (a folder written by `save_pretrained`, or a Hub repo id such as
        "user/name" at an optional `revision`, fetched into the Hugging Face cache), or a
        tokenizer run and, when it makes discrete codes, its prior run (a VAE samples from its own
        latent prior and takes none). A prior of another tokenizer is refused before any weights
        are read."""
        if prior is None and folder.is_pipeline_source(tokenizer):
            tokenizer, prior = folder.parts(tokenizer, revision, cache_dir)
        tok, prior_record = records(tokenizer, prior)
        dev = resolve_device(device)
        return cls(load_model(tok, dev), tok, load_model(prior_record, dev) if prior_record else None, prior_record)

    def save_pretrained(self, out: str | Path, *, license: str = "mit", name: str | None = None, force: bool = False) -> Path:
        """Write this pipeline as one folder the Hub understands (`share.folder`): each part's
        config and safetensors weights, an index, a sample grid, the runs' `vq eval` report when
        there is one, and a model card README.md. `name` is how the card tells readers to load it
        (the Hub id it will have; default: the folder). Never the training state."""
        per_class = 8
        by_class = self.conditions >= {"class"}
        grid = image_grid(self.sample(n=per_class, seed=0), rows=len(self.class_names) if by_class else None)
        note = (f"One row per class ({', '.join(self.class_names)}), {per_class} samples each" if by_class
                else f"{per_class} samples") + f" (guidance 2{self.prior_info.sampling.words() if self.prior_info else ''}, seed 0), drawn when the pipeline was saved."
        return folder.save(Path(out), self.tokenizer_info, self.prior_info, self.eval_report(), grid, note,
                           license=license, name=name, force=force)

    def eval_report(self) -> EvalReport | None:
        """The latest `vq eval` report of these runs (in the prior's run, or the tokenizer's for a
        VAE; in a saved pipeline, beside its parts), or None."""
        return EvalReport.find([(self.prior_info or self.tokenizer_info).run_dir])

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None, license: str = "mit",
                    dry_run: bool = False) -> dict:
        """Save this pipeline into a temporary folder and upload it to the Hub repo `repo_id`
        (created if missing) with `huggingface_hub`; with dry_run, only list what would go up."""
        from vq.pipeline.share import hub  # huggingface_hub's Hub client: imported when pushing

        with tempfile.TemporaryDirectory() as tmp:
            saved = self.save_pretrained(Path(tmp) / "pipeline", license=license, name=repo_id)
            return hub.push(saved, repo_id, private=private, token=token, dry_run=dry_run)

    def __repr__(self) -> str:
        prior = f", prior={self.prior_info.kind.name} {sorted(self.conditions)}" if self.prior_info else ""
        return (f"Pipeline(tokenizer={self.tokenizer_info.kind.name} {self.channels}x{self.image_size}x{self.image_size}"
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
    def code_shape(self) -> tuple[int, ...] | None:
        """The shape of one image's codes ((h, w) for a grid); None for a VAE, which has no codes."""
        return self.tokenizer_info.code_shape

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

    @property
    def training_notes(self) -> list[str]:
        """A line for each loaded run whose training stopped before its last step (its weights
        are those of its last evaluation); [] when both finished, or for a saved pipeline."""
        notes = []
        for what, record in (("tokenizer", self.tokenizer_info), ("prior", self.prior_info)):
            stopped = unfinished_training(record.run_dir) if record is not None else None
            if stopped:
                planned = record.train.get("steps") if not (record.train.get("epochs") or record.train.get("time_budget")) else None
                total = stopped[1] or planned
                notes.append(f"the {what} {record.run_dir.name} stopped at step {stopped[0]:,}" + (f" of {total:,}" if total else "")
                             + f" before its training ended; continue it with `vq fit-{what} ... --resume`")
        return notes

    # --- generation --------------------------------------------------------------------------

    def sample(self, classes=None, n: int = 1, *, sketch=None, guidance: float = 2.0, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None, steps: int | None = None,
               class_guidance: float | None = None, settings: dict | None = None, recognise: bool = True,
               output_type: str = "pil"):
        """n images of each class in `classes` (a name, an index, a list of them; None: every
        class, or for a sketch or an unconditional model, n images without a class), following
        `sketch` (a drawing: file, Pillow image or array) when the prior reads sketches.
        guidance: classifier-free guidance scale (1 = none); temperature, top_k, top_p: the
        draw (top_k / top_p None: the prior's saved defaults, `PriorRecord.sampling`; top_k 0:
        no cut); seed: the same seed gives the same images; steps: a masked prior's decoding
        iterations (`settings`: any prior kind's own sampling settings); class_guidance: with a
        sketch and a class, the class's own guidance scale on top of the sketch's (`guidance`;
        None: twice `guidance`, `drawing_class_guidance`); a sketch given with a class is framed
        to the class's proportions (`SketchRecord.frame_for`); a sketch without a class is drawn
        as the class it reads as where the prior has a recogniser (`recognise=False`: without a
        class; `generate.recognise`). -> Pillow images (or a uint8
        tensor (b, c, H, W) with output_type="pt"), grouped by class; the seed of the call (given
        or drawn) is `last_seed` afterwards."""
        options = call_options(guidance, temperature, top_k, top_p, seed, steps, settings, class_guidance)
        request = plan_samples(self.tokenizer_info, self.prior_info, classes, n, sketch=sketch, options=options,
                               recognise=recognise)
        return output(self.run_samples(request).images, output_type)

    def complete(self, image, mask="top", *, fraction: float = 0.5, n: int = 1, classes=None, seed: int | None = None,
                 guidance: float = 2.0, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 candidates: int = 8, steps: int | None = None, settings: dict | None = None, paste: bool = True,
                 output_type: str = "pil"):
        """n completions of `image` (file, Pillow image or array): `mask` keeps `fraction` of it on
        one side ("top", "bottom", "left", "right"), or is a mask image or bool array of the
        image's shape at any size (white / True = keep); the prior draws the rest, as `classes`
        (one class, or None). paste: the kept region shows the image's own pixels (a soft seam at
        its edge), not the tokenizer's redrawing of them."""
        options = call_options(guidance, temperature, top_k, top_p, seed, steps, settings)
        request = plan_completion(self.tokenizer_info, self.prior_info, image, mask, fraction=fraction, n=n,
                                  classes=classes, options=options, candidates=candidates, paste=paste)
        return output(self.run_completion(request).images, output_type)

    @torch.no_grad()
    def run_samples(self, request: SampleRequest, progress=None) -> Samples:
        """progress: called with (images done, images) as chunks of them are drawn (the studio's count)."""
        if request.reread is not None:
            request = self._recognised(request)
        labels = request.labels
        sketches = as_drawing(request.sketch).repeat_interleave(request.n, 0) if request.sketch is not None else None
        with self._busy(labels.shape[0]):
            images = generate_images(self.tokenizer, self.prior, labels, request.options, sketches, progress)
            self.last_seed = request.options.seed
        return Samples(to_uint8(images).cpu(), labels, request.options.seed, request.sketch, request.sketch_note)

    def _recognised(self, request: SampleRequest) -> SampleRequest:
        """A drawing without a class (a request with `reread`) -> the request for the class it reads
        as (`generate.recognise`): the drawing framed to that class, the class guided as for a
        drawing given with it."""
        with self._busy(1):
            classes, probs = recognise(self.prior, request.sketch)
        label = int(classes[0])
        lines, note = request.reread(self.prior_info.sketch.frame_for(label))  # the drawing read again, outside the lock
        return replace(request, groups=[label], sketch=lines, options=drawing_class_guidance(request.options), reread=None,
                       sketch_note=f"{recognition_note(probs[0], self.class_names)}; {note}")

    @torch.no_grad()
    def run_completion(self, request: CompletionRequest) -> Completions:
        x = request.image.to(self.device)
        with self._busy(request.n):
            codes = self.tokenizer.encode_indices(x)
            known = self.tokenizer.known_codes(request.pixel_mask).to(self.device)
            drawn = complete_codes(self.prior, to_prior(self.prior, codes), to_prior(self.prior, known[None])[0], request.label,
                                   request.n, request.options, request.candidates)
            drawn = to_tokenizer(self.tokenizer, drawn)
            images = decode_codes(self.tokenizer, drawn)
            if request.paste and known.any():  # with no code kept, the whole image was drawn anew
                images = paste_known(images, x, request.pixel_mask)
            self.last_seed = request.options.seed
        cells = self.tokenizer.known_pixels(known, x.shape[-2:])
        note = request.note + ("" if known.any() else "; no code lies mostly inside the kept region, so the whole image is drawn")
        return Completions(to_uint8(images).cpu(), to_uint8(x).cpu(), to_uint8(x * cells).cpu(), drawn.cpu(), known.cpu(),
                           request.options.seed, note)

    @contextmanager
    def _busy(self, images: int):
        """One computation at a time on this pipeline, on the threads chosen for `images` images."""
        with self._lock, self._threads.for_images(images):
            yield

    # --- codes -------------------------------------------------------------------------------

    def _needs_codes(self, what: str) -> None:
        if not self.tokenizer_info.discrete:
            raise VQError(f"{self.tokenizer_info.run_dir} holds a {self.tokenizer_info.kind.name}, which has no discrete "
                          f"codes to {what}; use a VQ-VAE tokenizer")

    @torch.no_grad()
    def encode(self, images) -> torch.Tensor:
        """Images (a file, Pillow image or array, a list of them, or a (b, c, H, W) tensor) ->
        (b, h, w) int64 codes, on the CPU."""
        self._needs_codes("encode")
        x = read_images(images, self.channels, self.image_size).to(self.device)
        with self._busy(x.shape[0]):
            return self.tokenizer.encode_indices(x).cpu()

    @torch.no_grad()
    def decode(self, codes, output_type: str = "pil"):
        """(b, *code_shape) or (*code_shape) codes in [0, codebook_size) -> images."""
        self._needs_codes("decode")
        codes = torch.as_tensor(codes)
        given, shape = f"{tuple(codes.shape)} {codes.dtype}", tuple(self.code_shape)
        codes = codes[None] if codes.ndim == len(shape) else codes
        if tuple(codes.shape[1:]) != shape or codes.is_floating_point():
            raise VQError(f"codes must be integers of shape (b, {', '.join(map(str, shape))}) or "
                          f"({', '.join(map(str, shape))}), got {given}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise VQError(f"codes must lie in [0, {self.codebook_size}), got {int(codes.min())}..{int(codes.max())}")
        with self._busy(codes.shape[0]):
            images = decode_codes(self.tokenizer, codes.long().to(self.device))
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
        with self._busy(x.shape[0]):
            recon = self.tokenizer.reconstruct(x, labels)
        return output(to_uint8(recon).cpu(), output_type)
