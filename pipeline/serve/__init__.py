"""The web studio (`vq serve`): its calls over a `Pipeline` (`studio`), the page's tabs (`tabs`),
its API endpoints (`api`), the app and server (`app`), and the guard in front of it (`guard`).

Imports: the pipeline's top-level modules, `data`, `generate` and `evaluate.report`."""
