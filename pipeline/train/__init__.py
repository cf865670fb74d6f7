"""Training: the one training loop (`trainer`, with its config and schedule in `config` and what a
run keeps beside its checkpoint in `state`), the fit jobs (`fit_tokenizer`, `fit_prior`, sharing
`jobs`: presets, config layers, resume rules), and the held-out figures measured while training
and by `vq eval` alike (`scores`).

Imports: the pipeline's top-level modules, `data`, `codes`, `sketch` and `generate` (previews and
grids); never `evaluate`, `share` or `serve`."""
