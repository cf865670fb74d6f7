"""`vq serve`, the web studio, and `vq kinds`, the kinds of tokenizer and prior vq knows."""

from pathlib import Path
from typing import Optional

import typer

from vq.cli.app import app, console, err, friendly
from vq.cli.options import DeviceOpt, PipelineOpt, PriorDirOpt, RevisionOpt, ThreadsOpt, TokenizerDirOpt


@app.command("serve")
@friendly
def serve(
    tokenizer: Path = TokenizerDirOpt,
    prior: Path = PriorDirOpt,
    pipeline: Optional[str] = PipelineOpt,
    revision: Optional[str] = RevisionOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on: loopback by default, so only this machine can reach the page; 0.0.0.0 opens it to the network."),
    port: int = typer.Option(7860, "--port", min=1, max=65535, help="Port to listen on."),
    max_n: int = typer.Option(64, "--max-n", min=1, max=1024, help="Most images one request may ask for of each class (or completions of one image)."),
    allowed_host: Optional[list[str]] = typer.Option(None, "--allowed-host", help="Another host name the page may be opened under (a proxy's, or this machine's name on the network); repeat for more. Requests to any other name are refused (against DNS rebinding)."),
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
):
    """Open the web studio in a browser: sample by class, draw a sketch (for a sketch prior), paint
    the region of an image to redraw, and see what is loaded. Each action is also an API endpoint
    (/sample, /sketch, /complete) for gradio_client. Needs `pip install 'vq\\[serve]'`."""
    from vq.pipeline.serve.app import serve as run

    def ready(url: str) -> None:
        from vq.pipeline.threads import Threads  # loaded with the models by now

        err.print(Threads().generation_line(), highlight=False)
        err.print(f"vq studio on {url} (Ctrl-C to stop)", highlight=False)

    run(tokenizer, prior, pipeline=pipeline, revision=revision, host=host, port=port, device=device or "auto", max_n=max_n,
        allowed_hosts=tuple(allowed_host or ()), on_ready=ready)
    err.print("vq studio stopped", highlight=False)


@app.command("kinds")
@friendly
def kinds():
    """List the kinds of tokenizer (`vq fit-tokenizer --model`) and prior (`vq fit-prior --kind`)
    vq knows, its own and those packages add, with what each can do."""
    from rich.table import Table

    from vq.pipeline.kinds import described_kinds

    for title, rows in described_kinds().items():
        table = Table(title=title, title_justify="left")
        for column in ("kind", "what it is", "can"):
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        console.print(table)
