"""Option callbacks shared by the sub-commands: outputs are checked while the command line is read, before any
work starts (a run that could not be written is refused in a second, not after an hour of scoring)."""

from __future__ import annotations

from pathlib import Path

from ranker.io.atomic import check_writable


def output_file(path: Path | None) -> Path | None:
    """A file the command will write (``--output``, ``--per-query``…); its JSON sidecar, if any, beside it."""
    if path is not None:
        check_writable(path)
        check_writable(path.with_name(path.name + ".json"))
    return path


def output_folder(path: Path | None) -> Path | None:
    """A folder the command will create or fill (``--index``, ``--store``, a training run)."""
    if path is not None:
        check_writable(path, folder=True)
    return path
