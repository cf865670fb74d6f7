"""The studio's page: a tab to sample by class, one to draw a sketch (for a sketch prior), one to
paint the region of an image to redraw, and one that shows what is loaded and its `vq eval`
figures. Each tab's events are private: the API endpoints (`api`) are the public interface."""

import base64
import io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vq.pipeline.data.images import decode, open_image, to_uint8
from vq.pipeline.errors import VQError
from vq.pipeline.evaluate.report import markdown_text
from vq.pipeline.generate.inputs import SIDES, read_image
from vq.pipeline.generate.options import DRAWING_CLASS_GUIDANCE
from vq.pipeline.generate.pipeline import to_pil
from vq.pipeline.records import SamplingDefaults
from vq.pipeline.serve.studio import EVERY_CLASS, FROM_DRAWING, NO_CLASS, Studio, gr, one_line_errors

CANVAS = 280  # px a side of the drawing and painting canvases
MODEL_LOCK = "model"  # the concurrency group of every generation: one at a time per model


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


ROW = 16  # the most images in a gallery row: beyond it a class's images run over several rows


def seed_line(count: int, what: str, seed: int, seconds: float) -> str:
    return f"{count} {what} in {seconds:.1f} s · seed **{seed}** (enter it as the seed to repeat them)"


def image_gallery(label: str, elem_id: str, **kwargs):
    # No label on the gallery itself (Gradio lays it over the first image): the tab says what it shows.
    return gr.Gallery(label=label, show_label=False, columns=8, height="auto", object_fit="contain", format="png",
                      elem_id=elem_id, elem_classes=["vq-pixels", "vq-gallery"], buttons=["download", "fullscreen"], **kwargs)


def download_button(elem_id: str):
    return gr.DownloadButton("Download all (zip)", visible=False, size="sm", elem_id=elem_id)


def row_labels(files: list) -> list[str | None]:
    """Per image, its class where a class's group of images starts, else None; all None when the
    images are of one class (or of none: completions)."""
    names = [None if isinstance(f, str) else f[1] for f in files]
    if len(set(names)) < 2:
        return [None] * len(names)
    return [name if i == 0 or name != names[i - 1] else None for i, name in enumerate(names)]


def shown(files: list, n) -> "gr.Gallery":
    """Images for a page's gallery. Of every class: a row per class (up to ROW images; more run
    over rows), its first image captioned with the class, so the rows are labelled. Else n a row
    (4 to ROW). The API's captions are the class of every image; the page labels rows only."""
    paths = [f if isinstance(f, str) else f[0] for f in files]
    labels = row_labels(files)
    if any(labels):
        return gr.Gallery(list(zip(paths, labels)), columns=min(int(n), ROW))
    return gr.Gallery(paths, columns=min(max(int(n), 4), ROW))


def rows_line(files: list) -> str:
    """The classes of the gallery's rows, top to bottom, when there are several (its row labels
    in words: a caption is cut short in a narrow page)."""
    groups = [markdown_text(label) for label in row_labels(files) if label]
    return f"  \nrows, top to bottom: {', '.join(groups)}" if groups else ""


def sample_results(studio: Studio, samples, n, started: float) -> tuple:
    """A sampling tab's outputs: the gallery, the status line (count, time, seed, rows) and "download all"."""
    files = studio.sample_files(samples)
    line = seed_line(len(samples.images), "images", samples.seed, time.time() - started) + rows_line(files)
    return shown(files, n), line, gr.update(value=studio.zipped([f for f, _ in files], "samples"), visible=True)


def on_click(button, run, inputs: list, outputs: list) -> None:
    """A tab's generation: its last results cleared first (so an error leaves none that look
    current), then `run`, one at a time per model."""
    button.click(lambda: cleared(*outputs), None, outputs, api_visibility="private", queue=False).then(
        run, inputs, outputs, api_visibility="private", concurrency_id=MODEL_LOCK)


def counting(progress):
    """The studio's progress bar as a count of the images drawn (Gradio's, from the Pipeline's chunks)."""
    return lambda done, total: progress((done, total), desc="drawing", unit="images")


def cleared(*outputs) -> list:
    """The results a new request makes stale (run before it: an error then leaves no old figures)."""
    return [gr.update(value=None, visible=False) if isinstance(o, gr.DownloadButton) else None for o in outputs]

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
    if full:  # the cuts start at the prior's own defaults (saved with it), which a blank box also means
        saved = studio.pipe.prior_info.sampling if studio.pipe.prior_info is not None else SamplingDefaults()
        top_k, top_p = saved.top_k, saved.top_p
        with gr.Accordion("sampling", open=False):
            more = [gr.Slider(0, 2, value=1.0, step=0.05, label="temperature", info="0 = always the likeliest code"),
                    gr.Number(top_k or 0, precision=None, minimum=0, label="top-k", elem_id=f"{tab}-top-k",
                              info="0 = no cut" + (f"; this prior's own: {top_k}" if top_k else "")),
                    gr.Slider(min(0.05, top_p or 1.0), 1, value=top_p or 1.0, step=0.01, label="top-p",
                              info="1 = no cut" + (f"; this prior's own: {top_p:g}" if top_p else ""))]
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
            if by_class:
                few = min(8, studio.max_n)
                gr.Examples([[name, few, 2.0] for name in pipe.class_names[:4]] + [[EVERY_CLASS, few, 3.0]], inputs[:3],
                            label="try", elem_id="sample-examples")
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="sample-status")
            gallery = image_gallery("samples", "sample-gallery")
            download = download_button("sample-download")

    @one_line_errors
    def run(class_name, n, guidance, temperature, top_k, top_p, seed, progress=gr.Progress()):
        t = time.time()
        samples = studio.sample(class_name, n, guidance, temperature, top_k, top_p, seed, progress=counting(progress))
        return sample_results(studio, samples, n, t)

    on_click(go, run, inputs, [gallery, status, download])


def sketch_tab(studio: Studio) -> None:
    pipe = studio.pipe
    with gr.Row():
        with gr.Column(scale=1):
            canvas = gr.Sketchpad(blank_canvas(), label="draw here", type="numpy", image_mode="RGBA", canvas_size=(CANVAS, CANVAS),
                                  fixed_canvas=True, layers=False, transforms=(), elem_id="sketch-canvas",
                                  brush=gr.Brush(default_size=6, colors=["#000000"], color_mode="fixed"),
                                  eraser=gr.Eraser(default_size=24))
            unnamed = [FROM_DRAWING, NO_CLASS] if pipe.prior_info.recognises else [NO_CLASS]
            class_box, n_box, guidance, seed, class_guidance = sampling_controls(
                studio, "sketch", [*unnamed, *pipe.class_names], unnamed[0], 4, full=False, class_guidance=True)
            with gr.Row():
                clear = gr.Button("Clear")
                go = gr.Button("Generate", variant="primary", elem_id="sketch-go")
        with gr.Column(scale=2):
            with gr.Row():
                read = gr.Image(label="the prior reads", format="png", height=208, width=180,
                                elem_id="sketch-read", elem_classes=["vq-pixels", "vq-big"], interactive=False)
                gallery = image_gallery("samples", "sketch-gallery", scale=3)
            status = gr.Markdown(elem_id="sketch-status")
            download = download_button("sketch-download")

    @one_line_errors
    def run(drawing, class_name, n, guidance, seed, class_guidance, progress=gr.Progress()):
        composite = (drawing or {}).get("composite")
        if composite is None:
            raise VQError("draw a sketch first")
        t = time.time()
        samples = studio.sample(class_name, n, guidance, seed=seed, drawing=composite, class_guidance=class_guidance,
                                progress=counting(progress))
        gallery_out, line, download_out = sample_results(studio, samples, n, t)
        return sketch_image(samples.sketch), gallery_out, line + f"  \nsketch: {samples.sketch_note}", download_out

    clear.click(lambda: blank_canvas(), None, canvas, api_visibility="private")
    on_click(go, run, [canvas, class_box, n_box, guidance, seed, class_guidance], [read, gallery, status, download])


def complete_tab(studio: Studio, examples: list[str]) -> None:
    """Upload an image (or pick an example): it becomes the canvas to paint the region to redraw
    on; without paint, a side is kept. `examples`: image files under the studio's upload folder."""
    pipe = studio.pipe
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label="image to complete (PNG, JPEG, ...)", file_types=["image"], type="filepath",
                             elem_id="complete-upload")
            if examples:
                gr.Examples([[path] for path in examples], [upload], label="or try one of these", elem_id="complete-examples")
            hint = gr.Markdown("Upload an image: it appears here to paint on.", elem_id="complete-hint")
            editor = gr.ImageEditor(label="paint what to redraw", type="numpy", image_mode="RGBA", sources=(),
                                    canvas_size=(CANVAS, CANVAS), fixed_canvas=True, layers=False, transforms=(),
                                    brush=gr.Brush(default_size=28, colors=[("#ff3030", 0.6)], color_mode="fixed"),
                                    eraser=gr.Eraser(default_size=28), elem_id="complete-editor", elem_classes=["vq-pixels"],
                                    visible=False)
            keep = gr.Radio(list(SIDES), value="top", label="nothing painted? keep this side")
            fraction = gr.Slider(0.1, 0.9, value=0.5, step=0.05, label="fraction kept")
            class_box, n_box, guidance, seed = sampling_controls(studio, "complete", [NO_CLASS, *pipe.class_names], NO_CLASS, 8, full=False)
            go = gr.Button("Complete", variant="primary", elem_id="complete-go")
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="complete-status")
            with gr.Row():
                original = gr.Image(label="original", format="png", height=180, width=180, interactive=False,
                                    elem_id="complete-original", elem_classes=["vq-pixels", "vq-big"])
                masked = gr.Image(label="what the prior sees", format="png", height=180, width=180, interactive=False,
                                  elem_id="complete-masked", elem_classes=["vq-pixels", "vq-big"])
            gallery = image_gallery("completions", "complete-gallery")
            download = download_button("complete-download")
    results = [original, masked, gallery, download]

    @one_line_errors
    def show(path):
        """A new upload (or none): the canvas shows it, read as the tokenizer reads it; the last
        results go, as they belong to another image."""
        if path is None:
            return gr.update(value=None, visible=False), gr.update(visible=True), "", *cleared(*results)
        x, note = read_image(studio.upload(path, "image"), pipe.channels, pipe.image_size)
        big = to_pil(to_uint8(x))[0].convert("RGB").resize((CANVAS, CANVAS), resample=0)
        canvas = gr.update(value={"background": big, "layers": [], "composite": None}, visible=True)
        return canvas, gr.update(visible=False), f"read {note}; paint over what to redraw", *cleared(*results)

    @one_line_errors
    def run(path, painting, keep_side, fraction_kept, class_name, n, guidance, seed, progress=gr.Progress()):
        t = time.time()
        progress(None, desc="completing")
        done = studio.complete(path, painted_keep_mask(painting), keep_side, fraction_kept, n, class_name, seed, guidance)
        files = studio.completion_files(done)
        line = (seed_line(len(done.images), "completions", done.seed, time.time() - t)
                + f"  \n{done.known_codes}/{done.codes} codes kept; the kept region shows your pixels")
        return (to_pil(done.original)[0], to_pil(done.masked)[0], shown(files, n), line,
                gr.update(value=studio.zipped(files, "completions"), visible=True))

    upload.change(show, upload, [editor, hint, status, *results], api_visibility="private")
    on_click(go, run, [upload, editor, keep, fraction, class_box, n_box, guidance, seed],
             [original, masked, gallery, status, download])


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
    facts = [("tokenizer", f"{tok.kind.name} ({tok.run_dir.name})"),
             ("prior", f"{prior.kind.name}, conditions: {', '.join(sorted(prior.conditions))} ({prior.run_dir.name})" if prior else "none"),
             ("images", f"{pipe.image_size}x{pipe.image_size}, {'grey' if pipe.channels == 1 else 'RGB'}"),
             ("codes", "x".join(map(str, pipe.code_shape)) if pipe.code_shape else "none (a continuous latent)"),
             ("codebook size", str(pipe.codebook_size or "-")),
             ("classes", ", ".join(pipe.class_names)),
             ("device", str(pipe.device)),
             *[("note", line) for line in pipe.training_notes],
             *([] if report else [(f"tokenizer test {k}", f"{v:.4g}") for k, v in tok.metrics.items()])]
    with gr.Row():
        gr.Markdown("| loaded | |\n|---|---|\n" + "\n".join(f"| {k} | {markdown_text(v)} |" for k, v in facts),
                    elem_id="model-facts")
        recon = reconstructions_html(tok.run_dir / "reconstructions.png")
        if recon is not None:
            gr.HTML(recon, label="reconstructions", elem_id="model-recon", elem_classes=["vq-pixels"])
    if report is not None:
        gr.Markdown("**vq eval**\n\n" + report.markdown(), elem_id="model-eval")


