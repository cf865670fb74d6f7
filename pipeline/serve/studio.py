"""`vq serve`: a web studio over one `Pipeline` — sample by class, draw a sketch, paint the region
of an image to redraw — in Gradio (as LlamaGen's demo), where every action is also a named API
endpoint with plain parameters: /sample, /sketch and /complete, each returning a gallery of PNGs.

The page is a thin layer: each handler turns widget values into the Pipeline's own requests
(`plan_samples`, `plan_completion`), so a seed gives the pixels `vq sample --seed` gives, and a bad
input is the one line the command line prints, shown in the page while the server serves on.
Safe to leave running: loopback unless told otherwise, uploads capped in size and read by vq's
own image reader, one generation at a time behind a bounded queue, n capped, no analytics, and the
page can read only files vq wrote for it (a private folder, removed when the server stops)."""

import functools
import html
import os
import re
import shutil
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from vq.pipeline.errors import VQError
from vq.pipeline.generate.folders import file_stem
from vq.pipeline.generate.images import save_png
from vq.pipeline.generate.inputs import SIDES
from vq.pipeline.generate.options import whole
from vq.pipeline.generate.pipeline import Completions, Pipeline, Samples, call_options
from vq.pipeline.generate.plans import plan_completion, plan_samples

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported and at launch
try:
    import gradio as gr
except ImportError:  # `vq serve` says how to install it
    gr = None

EVERY_CLASS, NO_CLASS = "every class", "no class"
FROM_DRAWING = "as the drawing reads"  # a drawing's class told by the prior's recogniser (`generate.recognise`)
KEEP_FILES_S = 3600  # written images older than this are deleted


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
        """Blank seed: a fresh one; top-k / top-p blank: the prior's own (`plans` fills them in),
        top-k 0 or top-p 1: no cut; every number checked as the API checks it."""
        if isinstance(seed, str):  # the page's box: digits, or blank
            if seed.strip() and not re.fullmatch(r"[0-9]{1,20}", seed.strip()):
                raise VQError(f"a seed is a whole number from 0 to 2^64 - 1 (or blank for a fresh one), got {seed.strip()[:40]!r}")
            seed = int(seed) if seed.strip() else None
        return call_options(guidance, temperature, top_k, top_p, seed, class_guidance=class_guidance)

    @staticmethod
    def classes(name):
        return None if name is None or str(name).strip().lower() in ("", EVERY_CLASS, NO_CLASS, FROM_DRAWING) else str(name)

    # --- calls ---------------------------------------------------------------------------------

    def sample(self, class_name, n, guidance=2.0, temperature=1.0, top_k=None, top_p=None, seed=None, drawing=None,
               class_guidance=None, progress=None) -> Samples:
        """`class_guidance` counts only with a drawing and a class, given or read from the drawing
        (elsewhere there is nothing to weigh it against). `drawing`: the canvas's pixels, or an
        upload's path; without a class it is drawn as the class it reads as ('no class': none).
        progress: (done, images)."""
        recognise = str(class_name).strip().lower() != NO_CLASS and self.pipe.prior_info is not None \
            and self.pipe.prior_info.recognises
        if drawing is None or (self.classes(class_name) is None and not recognise):
            class_guidance = None
        if isinstance(drawing, (str, Path)):
            drawing = self.upload(drawing, "drawing")
        options = self.options(guidance, temperature, top_k, top_p, seed, class_guidance)
        request = plan_samples(self.pipe.tokenizer_info, self.pipe.prior_info, self.classes(class_name), self.count(n),
                               sketch=drawing, options=options, recognise=recognise)
        return self.pipe.run_samples(request, progress)

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

    @staticmethod
    def zipped(files: list[str], name: str) -> str:
        """The PNGs of one result as one zip beside them (the page's "download all")."""
        folder = Path(files[0]).parent
        with zipfile.ZipFile(folder / f"{name}.zip", "w", compression=zipfile.ZIP_STORED) as z:  # PNGs are compressed
            for f in files:
                z.write(f, Path(f).name)
        return str(folder / f"{name}.zip")


def one_line_errors(fn: Callable, *, page: bool = True) -> Callable:
    """A VQError (a bad upload, a value out of range) becomes Gradio's error toast with vq's one
    line, naming an upload by its own name rather than the server's copy; the server keeps serving.
    Gradio renders a toast's message as HTML: for the page (`page`), the line's markup characters
    are escaped, so a class name or a value quoted in it stays text; an API caller gets it as is."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VQError as e:
            uploads = re.escape(gr.utils.get_upload_folder()) + r"/\w+/"
            line = re.sub(uploads, "", str(e))
            raise gr.Error(html.escape(line, quote=False) if page else line, print_exception=False) from None
        except gr.Error:
            raise
        except Exception as e:  # a bug of vq's: a line for the page, the traceback for the server's log
            traceback.print_exc()
            raise gr.Error(f"vq could not finish this request (an internal error, {type(e).__name__}); the studio "
                           "serves on, and its log holds the details", print_exception=False) from None

    return wrapper


