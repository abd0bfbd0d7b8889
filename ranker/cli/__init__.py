"""The ``rank`` command: a thin layer over the library, one module per sub-command."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from ranker.cli import (
    align,
    bench,
    bench_encode,
    bench_serve,
    bench_store,
    datasets,
    distill,
    encode,
    ensemble,
    evaluate,
    index,
    models,
    report,
    reproduce,
    run,
    select,
    serve,
    store,
    train,
)
from ranker.errors import RankerError
from ranker.interrupt import Interrupted
from ranker.interrupt import install as install_interrupts
from ranker.models.loading import MODELS_ENV, use_models

EXIT_CODES = {"ok": 0, "bad_input": 2}
"""Exit codes: 2 for anything the user can fix (bad file, missing index, wrong option), as click does."""

app = typer.Typer(help="Neural reranking made cheap: BM25, cross-encoder teacher, TwinBERT student.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def options(models: Annotated[Path | None, typer.Option(
        help=f"Folder of the shipped models (default: ${MODELS_ENV}, else ./models, else the clone's models/); "
             "a shipped model is named alone (--model twinbert-v2).")] = None) -> None:
    """Neural reranking made cheap: BM25, cross-encoder teacher, TwinBERT student."""
    use_models(models)


app.command("index")(index.index)
app.command("run")(run.run)
app.command("evaluate")(evaluate.evaluate)
app.command("train-teacher")(train.train_teacher)
app.command("encode")(encode.encode)
app.command("distill")(distill.distill)
app.command("align")(align.align)
app.command("agreement")(align.agreement)
app.command("ensemble")(ensemble.ensemble)
app.command("fusion-weight")(ensemble.fusion_weight)
app.command("pick-student")(ensemble.pick_student)
app.command("pick-trained")(select.pick_trained)
app.command("pick-run")(select.pick_run)
app.command("fuse")(ensemble.fuse)
app.command("bench")(bench.bench)
app.command("report")(report.report)
app.command("reproduce")(reproduce.reproduce)
app.command("serve")(serve.serve)
app.command("bench-encode")(bench_encode.bench_encode)
app.command("bench-serve")(bench_serve.bench_serve)
app.command("bench-store")(bench_store.bench_store)
app.add_typer(models.app, name="models")
app.add_typer(store.app, name="store")
app.add_typer(datasets.app, name="datasets")


class _Lines(logging.Formatter):
    """The library's messages as a command shows them: progress as it is, a warning as ``rank: warning: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"rank: {record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


def show_library_logs() -> None:
    """The ``ranker`` loggers' records at INFO and above on stderr (the library itself only logs)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Lines("%(message)s"))
    root = logging.getLogger("ranker")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def finished() -> None:
    """Ignore SIGINT and SIGTERM from here on: the command's work is done, its exit is on its way."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _close_bars() -> None:
    """End the progress bars an error cut short, so that its line starts a line of its own."""
    if "tqdm" in sys.modules:
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()


def main() -> None:
    """Entry point: a :class:`RankerError` or an OS error becomes one line on stderr and exit code 2; SIGINT or
    SIGTERM one line and 128 + the signal number, after every temporary file has been removed."""
    install_interrupts()
    show_library_logs()
    # the command line finds its checkpoints on disk (bundled, fetched, shipped): no hub lookups, no waiting on a
    # network this may not have; HF_HUB_OFFLINE=0 lets a hub name download. The library leaves the environment be.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # a "Loading weights" bar per model read from disk reads as noise in a log; the command's own bars stay
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        app()
    except SystemExit:  # the command has finished: a signal now would only turn its exit into a traceback
        finished()
        raise
    except RankerError as e:
        _close_bars()
        print(f"rank: error: {e}", file=sys.stderr)
        sys.exit(EXIT_CODES["bad_input"])
    except OSError as e:  # the file system refused (permissions, a full disk, a path that changed meanwhile)
        _close_bars()
        print(f"rank: error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        sys.exit(EXIT_CODES["bad_input"])
    except Interrupted as e:
        # what was printed comes first, and the message starts a line of its own even when the signal cut a
        # print short before its newline (stdout and stderr often share a terminal or a log)
        sys.stdout.flush()
        print(f"\nrank: interrupted by {e}: nothing half-written was published (each output appears whole or "
              "not at all); rerun the same command to go on (encode, align, train-teacher and distill resume where "
              "they stopped)", file=sys.stderr)
        sys.exit(e.exit_code)
