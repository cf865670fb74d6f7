"""Generation: the `Pipeline` (`pipeline`), loaded once, answering calls in memory; the requests
each call is first checked into (`plans`, with its options: `options`), the pure functions that
draw (`draw`), what users hand in (`inputs`: images, masks, drawings), and for the command line
the folders of PNGs it writes (`folders`, with `images`: PNGs and grids).

Imports: the pipeline's top-level modules, `data`, `sketch`, `share` (saved folders) and
`evaluate.report` (the report a pipeline carries); never `train` or `serve`."""
