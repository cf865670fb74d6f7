"""Data: sources -> splits of (uint8 image, label) with class names, and batches of them.

- `sources`: a spec (fashion-mnist, cifar10, a folder, a saved or hub Hugging Face dataset) ->
  `ImageData`, through `idx` (Fashion-MNIST's files), `folders`, `hf`;
- `splits`: the split types (in memory, lazy files or Arrow rows, streams) and the dataset's
  geometry; `images`: Pillow images -> uint8 arrays, with one-line refusals;
- `loader`: batches for training (deterministic over steps and processes), evaluation, export.

Imports: the pipeline's top-level modules (errors, files, configs, records, distributed) only."""
