"""Sketches: the edge detector and outlines every training image's sketch is made of (`edges`),
the free-hand styles a sketch prior trains on (`styles`), the typical object boxes of a dataset
and its classes (`boxes`), and drawings read as the prior reads sketches (`drawings`).

Imports: the pipeline's top-level modules (errors, records) and `data.images` only."""
