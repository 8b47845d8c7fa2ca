"""Errors a user can act on.

`InputError` is raised for anything wrong with what the user handed in: it names the file and the line
where there is one, or the parameter (`budget`, `n_clusters`), and the problem. Library code names
parameters as the Python API spells them; the CLI shows the matching flag (`--budget`, `--clusters`),
prints one line on stderr and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad user input: a file, a parameter or a directory that cannot be used as given."""

    exit_code = 2

    def __init__(self, problem: str, path: str | Path | None = None, line: int | None = None, *,
                 parameter: str | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.line = line
        self.parameter = parameter
        super().__init__(self.where() + problem)

    def where(self, parameter_name: str | None = None) -> str:
        """`FILE:LINE: `, `FILE: `, or `PARAMETER: ` (as `parameter_name` when given: the CLI's flag)."""
        if self.path is not None:
            return f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        if self.parameter is not None:
            return f"{parameter_name or self.parameter}: "
        return ""

    def describe(self, parameter_name: str | None = None) -> str:
        return self.where(parameter_name) + self.problem
