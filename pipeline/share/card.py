"""The model card of a saved pipeline (its README.md): the YAML block the Hub reads, as
huggingface_hub writes it (`library_name: vq`, tags from the kinds' capabilities, the dataset,
the license, the metrics), then what the model is, its evaluation (`EvalReport.markdown`), its
samples and how to load it."""

from huggingface_hub import ModelCard, ModelCardData

from vq.pipeline.data.sources import HUB_COPIES
from vq.pipeline.evaluate.report import EvalReport
from vq.pipeline.records import PriorRecord, TokenizerRecord

def card_metadata(tok: TokenizerRecord, prior: PriorRecord | None, report: EvalReport | None, license: str) -> ModelCardData:
    spec = tok.data.spec if tok.data and tok.data.spec else ""
    hub_id = HUB_COPIES.get(spec.lower(), spec)
    datasets = [hub_id] if hub_id.count("/") == 1 else None  # the Hub links only its own dataset ids
    tags = ["vq", "image-generation", tok.kind.name]
    if prior is not None:
        tags += [f"{prior.kind.name}-prior", "class-conditional"] + (["sketch-to-image"] if "sketch" in prior.conditions else [])
    return ModelCardData(library_name="vq", license=license, tags=tags, datasets=datasets,
                         metrics=report.measured if report else None)


def describe(tok: TokenizerRecord, prior: PriorRecord | None) -> str:
    c = tok.config
    shape = "x".join(map(str, tok.code_shape or ()))
    data = tok.data.spec if tok.data and tok.data.spec else "its dataset"
    codes = (f" -> {shape} codes from {tok.codebook_size}) and a transformer prior ({prior.kind.name}) over its codes, "
             f"conditioned on {' and '.join(sorted(prior.conditions))}" if prior is not None else ")")
    return (f"A {tok.kind.name} tokenizer ({c.channels}x{c.image_size}x{c.image_size} images{codes}, trained with vq on "
            f"{data} ({len(tok.class_names)} classes: {', '.join(tok.class_names)}).")


def model_card(tok: TokenizerRecord, prior: PriorRecord | None, report: EvalReport | None, *, license: str, grid_note: str,
               name: str) -> str:
    evaluation = ("Not evaluated yet: run `vq eval` on the runs before saving." if report is None else
                  "Measured by `vq eval` (its judge is a classifier trained on the dataset):\n\n" + report.markdown()
                  + (f"\nFID protocol: {report.fid_protocol}.\n" if report.fid_protocol else "")) + "\n"
    example = tok.class_names[min(7, len(tok.class_names) - 1)]
    body = f"""
# A vq pipeline

{describe(tok, prior)}

![samples](samples.png)

{grid_note}

## Use

```python
from vq.pipeline import Pipeline

pipe = Pipeline.from_pretrained("{name}")  # a Hub id (user/name) or a saved folder
images = pipe.sample("{example}", n=8, seed=0)  # PIL images
```

```bash
vq sample --pipeline {name} --class "{example}" -n 8
```

## Evaluation

{evaluation}
## Files

`tokenizer/` and `prior/` hold each part's `config.json` and `model.safetensors`; `model_index.json`
names the parts. vq loads weights from safetensors only.
"""
    return str(ModelCard(f"---\n{card_metadata(tok, prior, report, license).to_yaml()}\n---\n{body}"))
