"""Sharing: a pipeline saved as one folder the Hugging Face Hub understands (`folder`), its model
card (`card`), and the Hub itself (`hub`: fetch by id, push).

Imports: the pipeline's top-level modules, `data.sources` (dataset ids) and `evaluate.report`."""
