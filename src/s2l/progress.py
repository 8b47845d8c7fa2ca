"""Rich progress bars for the long-running stages, and the console the CLI shows logs on.

Library code logs through `logging.getLogger("s2l")` (each module's child logger) and shows live bars with
`make_progress`; it prints nothing itself. The CLI calls `show_logs()` so that INFO and above reach the
terminal (warnings in yellow); a notebook or another program configures the "s2l" logger as it likes.
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def make_progress(disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable or not sys.stderr.isatty(),
        transient=False,
    )


class ConsoleHandler(logging.Handler):
    """Log records as plain lines on the console's stderr (above any live bars), warnings in yellow."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = escape(record.getMessage())
            if record.levelno >= logging.WARNING:
                text = f"[yellow]{text}[/]"
            console.print(text, soft_wrap=True, highlight=False)  # long paths stay whole and copyable
        except Exception:
            self.handleError(record)


def show_logs(level: int = logging.INFO) -> None:
    """Send the "s2l" logger's records at `level` and above to the console (once per process)."""
    logger = logging.getLogger("s2l")
    logger.setLevel(level)
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.addHandler(ConsoleHandler())
    logger.propagate = False
