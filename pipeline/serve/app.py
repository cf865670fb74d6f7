"""`vq serve`: the studio's app over one `Pipeline`, served on loopback unless told otherwise,
behind the request guard (`guard`), with a private folder for everything the page can read."""

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from vq.pipeline.errors import VQError
from vq.pipeline.generate.folders import file_stem
from vq.pipeline.generate.pipeline import Pipeline
from vq.pipeline.serve.api import api_endpoints
from vq.pipeline.serve.guard import RequestGuard, served_hosts
from vq.pipeline.serve.studio import KEEP_FILES_S, Studio, gr
from vq.pipeline.serve.tabs import complete_tab, model_tab, sample_tab, sketch_tab

INSTALL = "the web studio needs Gradio: pip install 'vq[serve]'"
MAX_UPLOAD = "10mb"  # per file; larger uploads are refused before they reach vq
MAX_REQUEST = 11 * 2**20  # a request's whole body: one file of up to 10 MB and the form around it
QUEUE_SIZE = 16  # requests waiting beyond this are turned away ("the queue is full")
STUDIO_PIXELS = 2048 * 2048  # the largest image the studio decodes (its canvases are 280 px a side)
CSS = """
.vq-pixels img, .vq-pixels canvas { image-rendering: pixelated; }
.vq-big img { width: 100%; height: 100%; object-fit: contain; }
#sketch-read img { padding-top: 28px; box-sizing: border-box; }  /* clear of the label: the lines reach the top */
div.vq-gallery .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(0, 160px));
  grid-template-rows: none; grid-auto-rows: auto; gap: 6px; }  /* shrinks to any width: no column runs off */
div.vq-gallery .grid-wrap { max-height: 820px; height: auto; min-height: 0; }
div.vq-gallery .caption-label { white-space: normal; overflow: visible; max-width: 100%; font-size: 11px;
  line-height: 1.15; padding: 1px 3px; }  /* a row's class, whole, wrapped within its first image */
@media (max-width: 640px) { div.vq-gallery .caption-label { display: none; } }  /* too small to read: the status lists the rows */
"""
EXAMPLES = 3  # images the Complete tab offers to try: the pipeline's own samples, drawn at start-up


def landing(pipe: Pipeline) -> str:
    """What the page is and what each tab does, as the models loaded allow."""
    prior = pipe.prior_info
    what = (f"a **{pipe.tokenizer_info.kind.name}** tokenizer ({'x'.join(map(str, pipe.code_shape))} codes of "
            f"{pipe.codebook_size}) and a **{prior.kind.name}** prior over them" if prior else
            f"a **{pipe.tokenizer_info.kind.name}** and its latent prior")
    colour = "grey" if pipe.channels == 1 else "colour"
    lines = [f"## vq studio\nImages drawn by {what}: {pipe.image_size} px {colour}, "
             f"{len(pipe.class_names)} classes. The same seed gives the same images, here, in `vq sample` and in the API.",
             "- **Sample**: pick a class, or every class for a row each, and Generate."]
    if "sketch" in pipe.conditions:
        lines.append("- **Sketch**: draw an outline; the prior fills it in, as the class it reads in the drawing (or pick one)."
                     if prior.recognises else "- **Sketch**: draw an outline; the prior fills it in (give a class too, to say what it is).")
    elif prior is not None:
        lines.append("- *No Sketch tab*: this prior reads no drawings (train one with `vq fit-prior --condition sketch`).")
    if prior is not None:
        lines.append("- **Complete**: upload an image, paint what to redraw (or keep a side), and it is redrawn N ways.")
    lines.append("- **Model**: what is loaded, and how it scores in `vq eval`. Every action is also an API "
                 "endpoint: *Use via API* at the foot of the page.")
    return "\n".join(lines)


def example_images(pipe: Pipeline, folder: Path) -> list[str]:
    """A few of the pipeline's own samples (seeded) as PNG files to try completing, in the upload
    folder, where the studio reads files from."""
    if pipe.prior_info is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    names = pipe.class_names if "class" in pipe.conditions else []
    classes = names[:: max(1, len(names) // EXAMPLES)][:EXAMPLES] or [None] * EXAMPLES
    paths = []
    for i, name in enumerate(classes):
        path = folder / f"{file_stem(name) if name else f'example_{i}'}.png"  # the example's button reads its class
        pipe.sample(name, n=1, seed=i)[0].save(path)
        paths.append(str(path))
    return paths



def build_app(pipe: Pipeline, private: Path, *, max_n: int = 64):
    """The studio's Blocks over `pipe`, writing its images under `private`/images and reading only
    uploads under `private`/gradio (`private_files`); tabs as the models allow."""
    if gr is None:
        raise VQError(INSTALL)
    studio = Studio(pipe, max_n, private / "images", private / "gradio")
    with gr.Blocks(title="vq studio", analytics_enabled=False, delete_cache=(600, KEEP_FILES_S)) as app:
        gr.Markdown(landing(pipe), elem_id="landing")
        with gr.Tab("Sample", id="sample"):
            sample_tab(studio)
        if "sketch" in pipe.conditions:
            with gr.Tab("Sketch", id="sketch"):
                sketch_tab(studio)
        if pipe.prior_info is not None:
            with gr.Tab("Complete", id="complete"):
                complete_tab(studio, example_images(pipe, private / "gradio" / "vq-examples"))
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
                               max_file_size=MAX_UPLOAD, allowed_paths=[], show_error=True, quiet=True, ssr_mode=False,
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
    hosts = served_hosts(host, allowed_hosts)  # a bad --allowed-host is refused before anything loads
    pipe = (Pipeline.from_pretrained(pipeline, revision=revision, device=device) if pipeline is not None
            else Pipeline.from_pretrained(tokenizer, prior, device=device))
    # Every image this server decodes, Gradio's canvases included, has at most STUDIO_PIXELS pixels
    # (Pillow refuses twice as many outright, and vq's reader refuses more than this): a small
    # upload cannot decode into gigabytes.
    Image.MAX_IMAGE_PIXELS = STUDIO_PIXELS

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with private_files() as folder:
        app = build_app(pipe, folder, max_n=max_n)
        url = launch(app, host, port, hosts)
        if on_ready is not None:
            on_ready(url)
        try:
            while app.is_running:
                time.sleep(0.2)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the normal way to stop a server
            pass
        finally:
            app.close()
