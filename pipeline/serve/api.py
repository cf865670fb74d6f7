"""The studio's API: /sample, /sketch and /complete, each with plain parameters in and a gallery of
PNGs out, for gradio_client. Request fields are values, never paths: `keep` is one of the sides,
and files arrive only as uploads."""

import functools

from vq.pipeline.errors import VQError
from vq.pipeline.generate.inputs import SIDES
from vq.pipeline.serve.studio import EVERY_CLASS, FROM_DRAWING, NO_CLASS, Studio, gr, one_line_errors
from vq.pipeline.serve.tabs import MODEL_LOCK

api_errors = functools.partial(one_line_errors, page=False)  # an API caller reads the line as text


def api_endpoints(studio: Studio) -> None:
    """/sample, /sketch, /complete: plain parameters in, a gallery of PNGs out. Hidden inputs: they
    exist for the API, not the page (whose own events are private)."""
    pipe = studio.pipe
    with gr.Column(visible=False):
        class_name = gr.Textbox(EVERY_CLASS, label="class_name", info=f"a class name or index; '{EVERY_CLASS}' or blank: all "
                                f"(/sketch: the class the drawing reads as; '{NO_CLASS}': none)")
        # Numbers arrive as given (precision None: no rounding, no conversion that could fail in
        # Gradio) and are checked by vq, with the rule and message of the command line and the API.
        n = gr.Number(1, precision=None, label="n")
        guidance = gr.Number(2.0, label="guidance")
        class_guidance = gr.Number(None, label="class_guidance", info="with a drawing and a class: the class's own scale (blank: twice guidance above 1)")
        temperature = gr.Number(1.0, label="temperature")
        top_k = gr.Number(None, precision=None, label="top_k", info="blank: the prior's own; 0: no cut")
        top_p = gr.Number(None, label="top_p", info="blank: the prior's own; 1: no cut")
        seed = gr.Number(None, precision=None, label="seed", info="blank: a fresh one")
        image = gr.File(label="image", file_types=["image"], type="filepath")
        mask = gr.File(label="mask", file_types=["image"], type="filepath")
        keep = gr.Dropdown(list(SIDES), value="top", label="keep", info="without a mask: the side kept")
        fraction = gr.Number(0.5, label="fraction")
        drawing = gr.File(label="drawing", file_types=["image"], type="filepath")
        out = gr.Gallery(label="images", format="png")
        trigger = gr.Button()

    @api_errors
    def sample(class_name=EVERY_CLASS, n=1, guidance=2.0, temperature=1.0, top_k=None, top_p=None, seed=None):
        """n images of each class asked for (blank or 'every class': all); seed blank: fresh."""
        return studio.sample_files(studio.sample(class_name, n, guidance, temperature, top_k, top_p, seed))

    @api_errors
    def complete(image, mask=None, n=1, seed=None, keep="top", fraction=0.5):
        """n completions of `image`: the mask image's white is kept (else `keep` side, `fraction`)."""
        return studio.completion_files(studio.complete(image, mask, keep, fraction, n, None, seed))

    @api_errors
    def sketch(drawing, class_name=FROM_DRAWING, n=1, guidance=2.0, seed=None, class_guidance=None):
        """n images that follow `drawing` (any size and mode), of `class_name` if given (blank or
        'as the drawing reads': the class the prior reads in it; 'no class': none), its class
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


