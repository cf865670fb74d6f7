"""A training run's progress as its user sees it: rich's bar in a terminal, and in a log (a file, a
pipe, a scheduler's output, where a bar shows nothing until the end) a plain line every
`LOG_EVERY` seconds: the step, the share done, the time so far and left, the loss."""

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

LOG_EVERY = 60.0  # seconds between progress lines in a log


def progress_bar(console: Console, show: bool) -> Progress:
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    return Progress(*columns, console=console, transient=False, disable=not show)


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class LogLines:
    """The plain progress lines of a run whose console is not a terminal (none where it is: the bar
    shows it there)."""

    def __init__(self, console: Console, show: bool, first_step: int):
        self.console, self.on = console, show and not console.is_terminal
        self.start, self.first_step, self.last = time.time(), first_step, time.time()

    def tick(self, step: int, total: int | None, info: str) -> None:
        now = time.time()
        if not self.on or now - self.last < LOG_EVERY:
            return
        self.last = now
        spent = now - self.start
        done = step - self.first_step
        parts = [f"step {step:,}" + (f"/{total:,} ({step / total:.0%})" if total else ""), f"{clock(spent)} so far"]
        if total and done > 0:
            parts.append(f"about {clock(spent / done * (total - step))} left")
        self.console.print(", ".join(parts + ([info] if info else [])), highlight=False)
