"""Exceptions the toolkit raises; the CLI maps each to an exit code."""

from __future__ import annotations

from pathlib import Path


class RankerError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, wrong option)."""


class FormatError(RankerError):
    """A malformed line in an input file, reported as ``path:line: message``."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path, self.line, self.message = str(path), line, message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class MissingInputError(RankerError):
    """A file or folder the command needs does not exist."""
