"""Evaluation: `vq eval` (`run`, with the measurements beyond judging samples in `tasks`), the judge
classifier and its figures (`judge`), free-hand drawings (`drawings`), the field's FID (`fid`),
and the report, typed, which finds and renders itself for the command line, the model card and
the studio (`report`).

Imports: the pipeline's top-level modules, `data`, `codes`, `sketch`, `generate`, `share` (saved
folders) and `train` (the judge is trained by the one training loop; held-out figures are
measured as training measures them). `report` imports none of them: `generate` and `share` read it."""
