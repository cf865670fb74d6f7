"""Code maps: a tokenizer's dataset exported as memory-mapped shards (`export`, the work on each
shard in `shards`), its record (`record`), and the exported maps read back as a prior's training
data and inputs (`maps`).

Imports: the pipeline's top-level modules, `data` and `sketch`."""
