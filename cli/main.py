"""`vq`: options -> a job or a call -> one library call -> a short rich summary. No torch here: each
command imports the library when it runs. The commands live in `fit`, `generate`, `share`,
`evaluate` and `serve`; their shared options in `options`; the app and its one-line refusals in
`app`."""

import os
import sys
import warnings

import typer

# The command modules, imported in the order --help lists their commands.
from vq.cli import fit  # isort: skip
from vq.cli import generate  # isort: skip
from vq.cli import share  # isort: skip
from vq.cli import evaluate  # isort: skip
from vq.cli import serve  # isort: skip
from vq.cli.app import app, print_error

COMMANDS = (fit, generate, share, evaluate, serve)  # importing each adds its commands to the app, in --help's order

warnings.filterwarnings("ignore", category=FutureWarning, module="x_transformers")
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)


@app.callback()
def _root() -> None:
    """vq: train an image tokenizer, a transformer prior over its codes, and sample or complete images."""


def main() -> None:
    """`vq`: a mistyped flag or a value out of range is one line on stderr (exit 2), like every other
    refusal; a command's exit code (typer.Exit, or an int it returns) is the process's. Kinds that
    packages add (`VQ_PLUGINS`, entry points `vq.kinds`) are known to every command."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        code = app(prog_name="vq", standalone_mode=False)
    except typer.Exit as e:
        code = e.exit_code
    except typer.Abort:
        code = 130
    except typer.TyperException as e:  # click's UsageError, BadParameter, NoSuchOption, ...
        code = e.exit_code
        if type(e).__name__ != "NoArgsIsHelpError":  # plain `vq` has printed its help already
            ctx = getattr(e, "ctx", None)
            message = e.format_message().replace("Value error, ", "")  # pydantic's prefix to a refused choice
            print_error(f"{message} (see {ctx.command_path if ctx else 'vq'} --help)")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
