"""The ``rank`` command: a thin layer over the library, one module per sub-command."""

from __future__ import annotations

import sys

import typer

from ..errors import RankerError
from . import bench, distill, encode, ensemble, evaluate, index, report, run, train

EXIT_CODES = {"ok": 0, "bad_input": 2}
"""Exit codes: 2 for anything the user can fix (bad file, missing index, wrong option), as click does."""

app = typer.Typer(help="Neural reranking made cheap: BM25, cross-encoder teacher, TwinBERT student.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.command("index")(index.index)
app.command("run")(run.run)
app.command("evaluate")(evaluate.evaluate)
app.command("train-teacher")(train.train_teacher)
app.command("encode")(encode.encode)
app.command("distill")(distill.distill)
app.command("ensemble")(ensemble.ensemble)
app.command("fuse")(ensemble.fuse)
app.command("bench")(bench.bench)
app.command("report")(report.report)


def main() -> None:
    """Entry point: a :class:`RankerError` becomes one line on stderr and exit code 2."""
    try:
        app()
    except RankerError as e:
        print(f"rank: error: {e}", file=sys.stderr)
        sys.exit(EXIT_CODES["bad_input"])
