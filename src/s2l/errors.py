"""Errors a user can act on.

`InputError` is raised for anything wrong with what the user handed in: it names the file, the line
where there is one, and the problem. The CLI turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad user input: a file, an option or a directory that cannot be used as given."""

    exit_code = 2

    def __init__(self, problem: str, path: str | Path | None = None, line: int | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(self.where() + problem)

    def where(self) -> str:
        if self.path is None:
            return ""
        return f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
