"""`vq serve`: a web studio over one `Pipeline` — sample by class, draw a sketch, paint the region
of an image to redraw — in Gradio (as LlamaGen's demo), where every action is also a named API
endpoint with plain parameters: /sample, /sketch and /complete, each returning a gallery of PNGs.

The page is a thin layer: each handler turns widget values into the Pipeline's own requests
(`plan_samples`, `plan_completion`), so a seed gives the pixels `vq sample --seed` gives, and a bad
input is the one line the command line prints, shown in the page while the server serves on.
Safe to leave running: loopback unless told otherwise, uploads capped in size and read by vq's
own image reader, one generation at a time behind a bounded queue, n capped, no analytics, and the
page can read only files vq wrote for it (a private folder, removed when the server stops)."""

import base64
import functools
import io
import os
import re
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vq.pipeline.data import decode, open_image, to_uint8
from vq.pipeline.generate import DRAWING_CLASS_GUIDANCE, whole
from vq.pipeline.guard import RequestGuard, served_hosts
from vq.pipeline.images import save_png
from vq.pipeline.outputs import file_stem
from vq.pipeline.pipeline import Completions, Pipeline, Samples, fresh_seed, plan_completion, plan_samples, sampling_options, to_pil
from vq.pipeline.runs import VQError
from vq.pipeline.user_images import SIDES, read_image

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported and at launch
try:
    import gradio as gr
except ImportError:  # `vq serve` says how to install it
    gr = None

INSTALL = "the web studio needs Gradio: pip install 'vq[serve]'"
MAX_UPLOAD = "10mb"  # per file; larger uploads are refused before they reach vq
MAX_REQUEST = 11 * 2**20  # a request's whole body: one file of up to 10 MB and the form around it
QUEUE_SIZE = 16  # requests waiting beyond this are turned away ("the queue is full")
KEEP_FILES_S = 3600  # written images older than this are deleted
EVERY_CLASS, NO_CLASS = "every class", "no class"
CANVAS = 280  # px a side of the drawing and painting canvases
MODEL_LOCK = "model"  # the concurrency group of every generation: one at a time per model
CSS = """
.vq-pixels img, .vq-pixels canvas { image-rendering: pixelated; }
.vq-big img { width: 100%; height: 100%; object-fit: contain; }
#sketch-read img { padding-top: 28px; box-sizing: border-box; }  /* clear of the label: the lines reach the top */
div.vq-gallery .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(32px, 1fr));
  grid-template-rows: none; grid-auto-rows: auto; gap: 6px; }
div.vq-gallery .grid-wrap { max-height: 820px; height: auto; }
"""


class Studio:
    """The page's calls over one Pipeline: widget (or API) values in, the Pipeline's results out,
    and PNG files written for the gallery, named by class as `vq sample` names them. Request
    fields are values, never paths: a file reaches it only as an upload Gradio stored under
    `uploads`, and any other path is refused unread."""

    def __init__(self, pipe: Pipeline, max_n: int, folder: Path, uploads: Path):
        self.pipe, self.max_n, self.folder, self.uploads = pipe, max_n, folder, Path(uploads).resolve()

    # --- arguments -----------------------------------------------------------------------------

    def count(self, n) -> int:
        return whole(n, "n", 1, self.max_n)

    def upload(self, path, what: str) -> Path:
        """A file the request handed in: only Gradio's stored copy of an upload is read."""
        if not isinstance(path, (str, Path)) or not Path(path).resolve().is_relative_to(self.uploads):
            raise VQError(f"give the {what} as an uploaded file")
        return Path(path)

    @staticmethod
    def options(guidance, temperature, top_k, top_p, seed, class_guidance=None):
        """Blank seed: a fresh one; top-k 0 (or blank): no cut; top-p 1 (or blank): no cut; every
        number checked as the API checks it."""
        text = "" if seed is None else str(seed).strip()
        if text and not text.isdigit():
            raise VQError(f"a seed is a whole number from 0 to 2^64 - 1 (or blank for a fresh one), got {text[:40]!r}")
        return sampling_options(guidance, temperature, None if top_k in (None, 0) else top_k, top_p,
                                fresh_seed(int(text) if text else None), class_guidance=class_guidance)

    @staticmethod
    def classes(name):
        return None if name is None or str(name).strip().lower() in ("", EVERY_CLASS, NO_CLASS) else str(name)

    # --- calls ---------------------------------------------------------------------------------

    def sample(self, class_name, n, guidance=2.0, temperature=1.0, top_k=None, top_p=None, seed=None, drawing=None,
               class_guidance=None) -> Samples:
        """`class_guidance` counts only with a drawing and a class (elsewhere there is nothing to weigh
        it against). `drawing`: the canvas's pixels, or an upload's path."""
        if drawing is None or self.classes(class_name) is None:
            class_guidance = None
        if isinstance(drawing, (str, Path)):
            drawing = self.upload(drawing, "drawing")
        options = self.options(guidance, temperature, top_k, top_p, seed, class_guidance)
        request = plan_samples(self.pipe.tokenizer_info, self.pipe.prior_info, self.classes(class_name), self.count(n),
                               sketch=drawing, options=options)
        return self.pipe.run_samples(request)

    def complete(self, image, mask, keep="top", fraction=0.5, n=4, class_name=None, seed=None, guidance=2.0) -> Completions:
        """`image`: an upload; `mask`: a keep-mask (an uploaded image or the canvas's bool array; white
        / True = keep) or None for the side `keep` (one of SIDES) and `fraction`."""
        if image is None:
            raise VQError("upload an image to complete")
        image = self.upload(image, "image")
        if mask is None and keep not in SIDES:
            raise VQError(f"keep is one of {', '.join(SIDES)}, got {str(keep)[:40]!r}")
        if isinstance(mask, (str, Path)):
            mask = self.upload(mask, "mask")
        options = self.options(guidance, 1.0, None, None, seed)
        request = plan_completion(self.pipe.tokenizer_info, self.pipe.prior_info, image, keep if mask is None else mask,
                                  fraction=fraction, n=self.count(n), classes=self.classes(class_name), options=options)
        return self.pipe.run_completion(request)

    # --- files ---------------------------------------------------------------------------------

    def pngs(self, images: torch.Tensor, stems: list[str]) -> list[str]:
        """(b, c, H, W) uint8 -> PNG files in a fresh folder (the gallery's downloads keep these
        names); folders older than KEEP_FILES_S go first."""
        for old in self.folder.iterdir():
            if time.time() - old.stat().st_mtime > KEEP_FILES_S:
                shutil.rmtree(old, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(dir=self.folder))
        for img, stem in zip(images, stems):
            save_png(img, folder / f"{stem}.png")
        return [str(folder / f"{stem}.png") for stem in stems]

    def sample_files(self, samples: Samples) -> list[tuple[str, str]]:
        names = [self.pipe.class_names[c] if c >= 0 else "sketch" if samples.sketch is not None else "sample"
                 for c in samples.labels.tolist()]
        stems, seen = [], {}
        for name in names:  # <class>_<i>.png, i counting within the class, as `vq sample` names them
            stems.append(f"{file_stem(name)}_{seen.get(name, 0)}")
            seen[name] = seen.get(name, 0) + 1
        return list(zip(self.pngs(samples.images, stems), names))

    def completion_files(self, done: Completions) -> list[str]:
        return self.pngs(done.images, [f"completion_{i}" for i in range(len(done.images))])


def one_line_errors(fn: Callable) -> Callable:
    """A VQError (a bad upload, a value out of range) becomes Gradio's error toast with vq's one
    line, naming an upload by its own name rather than the server's copy; the server keeps serving."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VQError as e:
            from gradio.utils import get_upload_folder

            uploads = re.escape(get_upload_folder()) + r"/\w+/"
            raise gr.Error(re.sub(uploads, "", str(e)), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as e:  # a bug of vq's: a line for the page, the traceback for the server's log
            traceback.print_exc()
            raise gr.Error(f"vq could not finish this request (an internal error, {type(e).__name__}); the studio "
                           "serves on, and its log holds the details", print_exception=False) from None

    return wrapper


def sketch_image(lines: torch.Tensor) -> Image.Image:
    """(groups, 1, S, S) bool -> the first as a Pillow image: white lines on black, as `vq sample --sketch` saves it."""
    return to_pil(lines.to(torch.uint8) * 255)[0]


def blank_canvas() -> dict:
    """White paper to draw on (with it the brush is ready, no tool to pick first)."""
    return {"background": Image.new("RGB", (CANVAS, CANVAS), "white"), "layers": [], "composite": None}


def painted_keep_mask(editor: dict | None) -> np.ndarray | None:
    """The painting canvas's strokes -> a keep-mask (True = keep, what was not painted), or None
    when nothing is painted."""
    layers = [np.asarray(layer) for layer in (editor or {}).get("layers") or [] if layer is not None]
    painted = [layer[..., 3] > 0 if layer.ndim == 3 and layer.shape[-1] == 4 else layer.any(axis=-1) for layer in layers]
    if not painted or not any(p.any() for p in painted):
        return None
    return ~np.logical_or.reduce(painted)


def seed_line(count: int, what: str, seed: int) -> str:
    return f"{count} {what} · seed **{seed}** (enter it as the seed to repeat them)"


# --- the page ------------------------------------------------------------------------------------

def image_gallery(label: str, elem_id: str, **kwargs):
    return gr.Gallery(label=label, columns=8, height="auto", object_fit="contain", format="png", elem_id=elem_id,
                      elem_classes=["vq-pixels", "vq-gallery"], buttons=["download", "fullscreen"], **kwargs)


def shown(files: list, n) -> "gr.Gallery":
    """Images for a page's gallery: n a row (a class a row when every class is drawn), 4 to 16
    columns, without the captions the API gives (the file names carry the class)."""
    return gr.Gallery([f if isinstance(f, str) else f[0] for f in files], columns=min(max(int(n), 4), 16))

def sampling_controls(studio: Studio, tab: str, class_choices: list[str], default_class: str, n: int, full: bool,
                      class_guidance: bool = False) -> list:
    """Class, n, guidance, (when `class_guidance`) the class's own guidance beside a drawing, and
    (when `full`) temperature, top-k, top-p; then the seed. Returned in that order, the class
    guidance last."""
    class_box = gr.Dropdown(class_choices, value=default_class, label="class", elem_id=f"{tab}-class")
    n_box = gr.Slider(1, studio.max_n, value=n, step=1, label="images per class" if full else "images", elem_id=f"{tab}-n")
    guidance = gr.Slider(0, 8, value=2.0, step=0.1, label="guidance", info="classifier-free guidance; 1 = none")
    extra = [gr.Slider(0, 8, value=DRAWING_CLASS_GUIDANCE * guidance.value, step=0.1, label="class guidance", elem_id=f"{tab}-class-guidance",
                       info="with a class: how strongly it counts beside the drawing (guidance: the drawing; 4 is twice its default)")] if class_guidance else []
    more = []
    if full:
        with gr.Accordion("sampling", open=False):
            more = [gr.Slider(0, 2, value=1.0, step=0.05, label="temperature", info="0 = always the likeliest code"),
                    gr.Number(0, precision=0, minimum=0, label="top-k", info="0 = no cut"),
                    gr.Slider(0.05, 1, value=1.0, step=0.05, label="top-p", info="1 = no cut")]
    seed = gr.Textbox("", label="seed", placeholder="blank = a fresh one", max_lines=1, elem_id=f"{tab}-seed")
    return [class_box, n_box, guidance, *more, seed, *extra]


def sample_tab(studio: Studio) -> None:
    pipe = studio.pipe
    by_class = pipe.tokenizer_info.samples_by_class
    choices = [EVERY_CLASS, *pipe.class_names] if by_class else [NO_CLASS]
    with gr.Row():
        with gr.Column(scale=1):
            inputs = sampling_controls(studio, "sample", choices, pipe.class_names[0] if by_class else NO_CLASS, 8, full=True)
            go = gr.Button("Generate", variant="primary", elem_id="sample-go")
        with gr.Column(scale=2):
            gallery = image_gallery("samples", "sample-gallery")
            status = gr.Markdown(elem_id="sample-status")

    @one_line_errors
    def run(class_name, n, guidance, temperature, top_k, top_p, seed, progress=gr.Progress()):
        progress(None, desc="drawing codes")
        samples = studio.sample(class_name, n, guidance, temperature, top_k, top_p, seed)
        return shown(studio.sample_files(samples), n), seed_line(len(samples.images), "images", samples.seed)

    go.click(run, inputs, [gallery, status], api_visibility="private", concurrency_id=MODEL_LOCK)


def sketch_tab(studio: Studio) -> None:
    pipe = studio.pipe
    with gr.Row():
        with gr.Column(scale=1):
            canvas = gr.Sketchpad(blank_canvas(), label="draw here", type="numpy", image_mode="RGBA", canvas_size=(CANVAS, CANVAS),
                                  fixed_canvas=True, layers=False, transforms=(), elem_id="sketch-canvas",
                                  brush=gr.Brush(default_size=6, colors=["#000000"], color_mode="fixed"),
                                  eraser=gr.Eraser(default_size=24))
            class_box, n_box, guidance, seed, class_guidance = sampling_controls(
                studio, "sketch", [NO_CLASS, *pipe.class_names], NO_CLASS, 4, full=False, class_guidance=True)
            with gr.Row():
                clear = gr.Button("Clear")
                go = gr.Button("Generate", variant="primary", elem_id="sketch-go")
        with gr.Column(scale=2):
            with gr.Row():
                read = gr.Image(label="the prior reads", format="png", height=208, width=180,
                                elem_id="sketch-read", elem_classes=["vq-pixels", "vq-big"], interactive=False)
                gallery = image_gallery("samples", "sketch-gallery", scale=3)
            status = gr.Markdown(elem_id="sketch-status")

    @one_line_errors
    def run(drawing, class_name, n, guidance, seed, class_guidance, progress=gr.Progress()):
        composite = (drawing or {}).get("composite")
        if composite is None:
            raise VQError("draw a sketch first")
        progress(None, desc="drawing codes")
        samples = studio.sample(class_name, n, guidance, seed=seed, drawing=composite, class_guidance=class_guidance)
        line = seed_line(len(samples.images), "images", samples.seed) + f"  \nsketch: {samples.sketch_note}"
        return sketch_image(samples.sketch), shown(studio.sample_files(samples), n), line

    clear.click(lambda: blank_canvas(), None, canvas, api_visibility="private")
    go.click(run, [canvas, class_box, n_box, guidance, seed, class_guidance], [read, gallery, status], api_visibility="private",
             concurrency_id=MODEL_LOCK)


def complete_tab(studio: Studio) -> None:
    pipe = studio.pipe
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label="image to complete (PNG, JPEG, ...)", file_types=["image"], type="filepath",
                             elem_id="complete-upload")
            editor = gr.ImageEditor(label="paint what to redraw", type="numpy", image_mode="RGBA", sources=(),
                                    canvas_size=(CANVAS, CANVAS), fixed_canvas=True, layers=False, transforms=(),
                                    brush=gr.Brush(default_size=28, colors=[("#ff3030", 0.6)], color_mode="fixed"),
                                    eraser=gr.Eraser(default_size=28), elem_id="complete-editor", elem_classes=["vq-pixels"])
            keep = gr.Radio(list(SIDES), value="top", label="nothing painted? keep this side")
            fraction = gr.Slider(0.1, 0.9, value=0.5, step=0.05, label="fraction kept")
            class_box, n_box, guidance, seed = sampling_controls(studio, "complete", [NO_CLASS, *pipe.class_names], NO_CLASS, 8, full=False)
            go = gr.Button("Complete", variant="primary", elem_id="complete-go")
        with gr.Column(scale=2):
            with gr.Row():
                original = gr.Image(label="original", format="png", height=180, width=180, interactive=False,
                                    elem_id="complete-original", elem_classes=["vq-pixels", "vq-big"])
                masked = gr.Image(label="what the prior sees", format="png", height=180, width=180, interactive=False,
                                  elem_id="complete-masked", elem_classes=["vq-pixels", "vq-big"])
            gallery = image_gallery("completions", "complete-gallery")
            status = gr.Markdown(elem_id="complete-status")

    @one_line_errors
    def show(path):
        """An upload, read as the tokenizer reads it, becomes the canvas to paint on."""
        if path is None:
            return None, ""
        x, note = read_image(studio.upload(path, "image"), pipe.channels, pipe.image_size)
        big = to_pil(to_uint8(x))[0].convert("RGB").resize((CANVAS, CANVAS), resample=0)
        return {"background": big, "layers": [], "composite": None}, f"read {note}; paint over what to redraw"

    @one_line_errors
    def run(path, painting, keep_side, fraction_kept, class_name, n, guidance, seed, progress=gr.Progress()):
        progress(None, desc="drawing codes")
        done = studio.complete(path, painted_keep_mask(painting), keep_side, fraction_kept, n, class_name, seed, guidance)
        line = seed_line(len(done.images), "completions", done.seed) + f"  \n{done.known_codes}/{done.codes} codes kept"
        return to_pil(done.original)[0], to_pil(done.masked)[0], shown(studio.completion_files(done), n), line

    upload.upload(show, upload, [editor, status], api_visibility="private")
    upload.clear(lambda: (None, ""), None, [editor, status], api_visibility="private")
    go.click(run, [upload, editor, keep, fraction, class_box, n_box, guidance, seed], [original, masked, gallery, status],
             api_visibility="private", concurrency_id=MODEL_LOCK)


def eval_rows(r: dict) -> list[tuple[str, str, str]]:
    """eval.json (`vq eval`) -> (stage, figure, value) rows, as `vq eval` prints them."""
    rows = [("classifier", "test accuracy", f"{r['classifier']['test_acc']:.4f}")] if "classifier" in r else []
    rows += [("tokenizer", f"test {k}", f"{v:.4g}") for k, v in r.get("tokenizer", {}).items()]
    prior = r.get("prior", {})
    if "test_bits_per_token" in prior:
        rows.append(("prior", "test bits / code token", f"{prior['test_bits_per_token']:.4f}"))
    elif "test_masked_bits_per_code" in prior:
        rows.append(("prior", "test masked-code cross-entropy, bits", f"{prior['test_masked_bits_per_code']:.4f}"))
    if "completion" in r:
        c = r["completion"]
        rows.append(("completion", f"true class kept, with class (n={c['n']})", f"{c['acc_with_class']:.4f}"))
    for name, key in (("real train images (floor)", "real_train"), ("reconstructions", "reconstructions"), ("samples", "samples")):
        if key in r:
            j = r[key]
            acc = f"class acc {j['acc']:.4f}, " if "acc" in j else ""
            guided = f", guidance {r['sampling']['cfg']}" if key == "samples" and "sampling" in r else ""
            rows.append(("sampling" if key == "samples" else "reference", f"{name} (n={j['n']}{guided})",
                         f"{acc}Fréchet dist. {j['fd']:.3f}"))
    if "fid" in r.get("fid", {}):
        rows.append(("sampling", f"FID, Inception-v3 (n={r['fid']['n_samples']})", f"{r['fid']['fid']:.3f}"))
    if r.get("sketch"):
        rows.append(("sketch", "edge F1, sketch + class", f"{r['sketch']['sketch_and_class']['edge_f1']:.4f}"))
    return rows


def report_rows(report: dict) -> list[tuple[str, str, str]]:
    """The eval table, or one row saying the report could not be read (a saved folder is someone
    else's: its eval.json may hold anything)."""
    try:
        return eval_rows(report)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return [("report", "eval.json", "not in the form `vq eval` writes: not shown")]


RECON_PIXELS = 4 * 2**20  # the largest reconstruction grid the Model tab shows


def reconstructions_html(path: Path) -> str | None:
    """The tokenizer's reconstruction grid, read as vq reads every image (decompression bombs
    refused) and inlined as a data URI, so the page names no file of the machine; None when there
    is none, or it is no image or too large an image."""
    if not path.is_file():
        return None
    try:
        img = open_image(path)
        if img.width * img.height > RECON_PIXELS:
            return None
        img = decode(img)
    except VQError:
        return None
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<figure style="margin:0"><img src="data:image/png;base64,{data}" style="width:100%; max-height:300px; '
            'object-fit:contain; image-rendering:pixelated" alt="reconstructions">'
            "<figcaption>reconstructions: rows of test images, each above the tokenizer's</figcaption></figure>")


def model_tab(studio: Studio) -> None:
    """What is loaded; the tokenizer's reconstructions; the `vq eval` table (else the tokenizer's
    own test figures, from its training). No path of the machine is shown: the runs by their
    folders' names."""
    pipe = studio.pipe
    tok, prior = pipe.tokenizer_info, pipe.prior_info
    report = pipe.eval_report()
    facts = [("tokenizer", f"{tok.model} ({tok.run_dir.name})"),
             ("prior", f"{prior.model}, conditions: {', '.join(sorted(prior.conditions))} ({prior.run_dir.name})" if prior else "none"),
             ("images", f"{pipe.image_size}x{pipe.image_size}, {'grey' if pipe.channels == 1 else 'RGB'}"),
             ("code grid", f"{pipe.grid[0]}x{pipe.grid[1]}" if pipe.grid else "none (a continuous latent)"),
             ("codebook size", str(pipe.codebook_size or "-")),
             ("classes", ", ".join(pipe.class_names)),
             ("device", str(pipe.device)),
             *([] if report else [(f"tokenizer test {k}", f"{v:.4g}") for k, v in tok.metrics.items()])]
    with gr.Row():
        gr.Markdown("| loaded | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in facts), elem_id="model-facts")
        recon = reconstructions_html(tok.run_dir / "reconstructions.png")
        if recon is not None:
            gr.HTML(recon, label="reconstructions", elem_id="model-recon", elem_classes=["vq-pixels"])
    if report is not None:
        gr.Markdown("**vq eval**\n\n| stage | figure | value |\n|---|---|---|\n"
                    + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in report_rows(report)), elem_id="model-eval")


def api_endpoints(studio: Studio) -> None:
    """/sample, /sketch, /complete: plain parameters in, a gallery of PNGs out. Hidden inputs: they
    exist for the API, not the page (whose own events are private)."""
    pipe = studio.pipe
    with gr.Column(visible=False):
        class_name = gr.Textbox(EVERY_CLASS, label="class_name", info=f"a class name or index; '{EVERY_CLASS}' or blank: all")
        n = gr.Number(1, precision=0, label="n")
        guidance = gr.Number(2.0, label="guidance")
        class_guidance = gr.Number(None, label="class_guidance", info="with a drawing and a class: the class's own scale (blank: twice guidance above 1)")
        temperature = gr.Number(1.0, label="temperature")
        top_k = gr.Number(0, precision=0, label="top_k")
        top_p = gr.Number(1.0, label="top_p")
        seed = gr.Number(None, precision=0, label="seed")
        image = gr.File(label="image", file_types=["image"], type="filepath")
        mask = gr.File(label="mask", file_types=["image"], type="filepath")
        keep = gr.Dropdown(list(SIDES), value="top", label="keep", info="without a mask: the side kept")
        fraction = gr.Number(0.5, label="fraction")
        drawing = gr.File(label="drawing", file_types=["image"], type="filepath")
        out = gr.Gallery(label="images", format="png")
        trigger = gr.Button()

    @one_line_errors
    def sample(class_name=EVERY_CLASS, n=1, guidance=2.0, temperature=1.0, top_k=0, top_p=1.0, seed=None):
        """n images of each class asked for (blank or 'every class': all); seed blank: fresh."""
        return studio.sample_files(studio.sample(class_name, n, guidance, temperature, top_k, top_p, seed))

    @one_line_errors
    def complete(image, mask=None, n=1, seed=None, keep="top", fraction=0.5):
        """n completions of `image`: the mask image's white is kept (else `keep` side, `fraction`)."""
        return studio.completion_files(studio.complete(image, mask, keep, fraction, n, None, seed))

    @one_line_errors
    def sketch(drawing, class_name=NO_CLASS, n=1, guidance=2.0, seed=None, class_guidance=None):
        """n images that follow `drawing` (any size and mode), of `class_name` if given, its class
        guided at `class_guidance` (blank: twice `guidance`, the drawing's, above 1)."""
        if drawing is None:
            raise VQError("give a drawing")
        return studio.sample_files(studio.sample(class_name, n, guidance, seed=seed, drawing=drawing,
                                                 class_guidance=class_guidance))

    trigger.click(sample, [class_name, n, guidance, temperature, top_k, top_p, seed], out, api_name="sample",
                  concurrency_id=MODEL_LOCK)
    if pipe.prior_info is not None:
        trigger.click(complete, [image, mask, n, seed, keep, fraction], out, api_name="complete", concurrency_id=MODEL_LOCK)
    if "sketch" in pipe.conditions:
        trigger.click(sketch, [drawing, class_name, n, guidance, seed, class_guidance], out, api_name="sketch",
                      concurrency_id=MODEL_LOCK)


def build_app(pipe: Pipeline, private: Path, *, max_n: int = 64):
    """The studio's Blocks over `pipe`, writing its images under `private`/images and reading only
    uploads under `private`/gradio (`private_files`); tabs as the models allow."""
    if gr is None:
        raise VQError(INSTALL)
    studio = Studio(pipe, max_n, private / "images", private / "gradio")
    with gr.Blocks(title="vq studio", analytics_enabled=False, delete_cache=(600, KEEP_FILES_S)) as app:
        gr.Markdown(f"## vq studio\n{pipe.tokenizer_info.model} + "
                    f"{pipe.prior_info.model if pipe.prior_info else 'its latent prior'}, {pipe.image_size} px, "
                    f"{len(pipe.class_names)} classes")
        with gr.Tab("Sample", id="sample"):
            sample_tab(studio)
        if "sketch" in pipe.conditions:
            with gr.Tab("Sketch", id="sketch"):
                sketch_tab(studio)
        if pipe.prior_info is not None:
            with gr.Tab("Complete", id="complete"):
                complete_tab(studio)
        with gr.Tab("Model", id="model"):
            model_tab(studio)
        api_endpoints(studio)
    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return app


@contextmanager
def private_files():
    """A folder of this server's own for everything the page can read (Gradio's uploads and
    outputs too, through GRADIO_TEMP_DIR), removed when the server stops."""
    folder = Path(tempfile.mkdtemp(prefix="vq-serve-"))
    saved = {k: os.environ.get(k) for k in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE")}
    os.environ["GRADIO_TEMP_DIR"] = str(folder / "gradio")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(folder / "examples")
    (folder / "images").mkdir()
    try:
        yield folder
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(folder, ignore_errors=True)


def launch(app, host: str, port: int, hosts: frozenset[str]):
    """Start serving, answering only requests addressed to `hosts` (`guard.RequestGuard`); -> the
    local URL. No share link, no server-side rendering, no MCP."""
    from starlette.middleware import Middleware

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    guard = Middleware(RequestGuard, hosts=hosts, max_body=MAX_REQUEST)
    try:
        _, url, _ = app.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True,
                               max_file_size=MAX_UPLOAD, allowed_paths=[], show_error=False, quiet=True, ssr_mode=False,
                               mcp_server=False, pwa=False, footer_links=["api"], theme=theme, css=CSS,
                               app_kwargs={"middleware": [guard]})
    except OSError:  # Gradio's own message speaks of its environment variables and launch()
        raise VQError(f"cannot serve on {host}:{port}: the port is taken, or the address is not this machine's; "
                      "pass another --port or --host") from None
    return url


def serve(tokenizer: Path, prior: Path | None, *, pipeline: str | None = None, revision: str | None = None,
          host: str = "127.0.0.1", port: int = 7860, device: str = "auto", max_n: int = 64,
          allowed_hosts: tuple[str, ...] = (), on_ready: Callable[[str], None] | None = None) -> None:
    """`vq serve`: load the runs (or a saved pipeline, or a Hub id) once, refusing missing or
    mismatched ones in one line; serve the studio until Ctrl-C or SIGTERM."""
    if gr is None:
        raise VQError(INSTALL)
    pipe = (Pipeline.from_pretrained(pipeline, revision=revision, device=device) if pipeline is not None
            else Pipeline.from_pretrained(tokenizer, prior, device=device))

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with private_files() as folder:
        app = build_app(pipe, folder, max_n=max_n)
        url = launch(app, host, port, served_hosts(host, allowed_hosts))
        if on_ready is not None:
            on_ready(url)
        try:
            while app.is_running:
                time.sleep(0.2)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the normal way to stop a server
            pass
        finally:
            app.close()
