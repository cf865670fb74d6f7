"""The Typer app every command module adds its commands to, and what they share: one-line
refusals (`friendly`), help read as prose, and the short rich summary a command ends with."""

import functools
import inspect
import os
import sys

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

app = typer.Typer(
    help="vq: train an image tokenizer, a transformer prior over its codes, and sample or complete images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def print_error(message: str) -> None:
    """Every refusal of vq, from the pipeline or from the command line, is one line: `error: ...`."""
    err.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True, highlight=False)


def prose(doc: str | None) -> str | None:
    """A docstring as --help shows it: each paragraph one line, which rich wraps at the terminal's
    width (the docstring's own line breaks would otherwise break sentences mid-line)."""
    if doc is None:
        return None
    paragraphs = [" ".join(line.strip() for line in p.splitlines()) for p in inspect.cleandoc(doc).split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


def friendly(fn):
    """Turn a VQError into one line on stderr and its exit code, never a traceback; and give the
    command its help as prose."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from vq.pipeline.errors import VQError  # the pipeline's error type (no torch): imported as a command starts

        try:
            if "threads" in kwargs:  # a command that computes: a bad VQ_THREADS is refused before any work
                from vq.pipeline.threads import ENV, pinned_threads  # loads torch, as the command would

                if kwargs["threads"] is not None:  # --threads N is VQ_THREADS=N for all the command runs
                    os.environ[ENV] = str(kwargs["threads"])
                pinned_threads()
            return fn(*args, **kwargs)
        except VQError as e:
            print_error(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/red]")
            raise typer.Exit(130) from None
        except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
            # A path given for output that is a file where a folder belongs, or the reverse.
            print_error(f"cannot use {e.filename}: {e.strerror.lower()}; choose another path")
            raise typer.Exit(1) from None
        finally:
            if "vq.pipeline.distributed" in sys.modules:  # leave torchrun's process group cleanly
                sys.modules["vq.pipeline.distributed"].teardown()

    wrapper.__doc__ = prose(fn.__doc__)
    return wrapper


def summary(title: str, rows: dict) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    for k, v in rows.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)


def print_tables(tables) -> None:
    """The library's plain tables (`title`, `columns`, `rows` of strings, the first `left` columns
    words, the rest figures), as rich prints them."""
    for t in tables:
        table = Table(title=t.title, title_justify="left")
        for i, column in enumerate(t.columns):
            table.add_column(column, justify="left" if i < t.left else "right")
        for row in t.rows:
            table.add_row(*row)
        console.print(table)
