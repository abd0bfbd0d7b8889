"""Option callbacks shared by the sub-commands: outputs are checked while the command line is read, before any
work starts (a run that could not be written is refused in a second, not after an hour of scoring)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from ranker.errors import RankerError
from ranker.io.artifact import META_FILE
from ranker.io.atomic import check_writable
from ranker.models.config import DEFAULT_QUERY_BACKEND, QUERY_BACKENDS


def use_threads(threads: int | None) -> None:
    """torch's CPU threads for this command (``None``: torch's default, every core). Only the command line sets
    them: the library never changes a process-wide setting."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def output_file(path: Path | None) -> Path | None:
    """A file the command will write (``--output``, ``--per-query``…); its JSON sidecar, if any, beside it. Never
    inside an artifact's folder (a store, an index, a model): the file would replace or corrupt one of its own."""
    if path is not None:
        check_writable(path)
        check_writable(path.with_name(path.name + ".json"))
        for folder in path.resolve().parents:
            if (folder / META_FILE).is_file() or any(folder.glob("segments_*")):  # ranker's artifact, or Lucene's
                raise RankerError(f"{path}: is inside {folder}, the folder of a store, an index or a model: write "
                                  "the output elsewhere")
    return path


def output_folder(path: Path | None) -> Path | None:
    """A folder the command will create or fill (``--index``, ``--store``, a training run)."""
    if path is not None:
        check_writable(path, folder=True)
    return path


def query_backend(name: str) -> str:
    """``--query-backend``: one of :data:`ranker.models.config.QUERY_BACKENDS`."""
    if name not in QUERY_BACKENDS:
        raise typer.BadParameter(f"{name!r} is not one of {', '.join(QUERY_BACKENDS)}")
    return name


QUERY_BACKEND_HELP = (f"What runs the twinbert query tower: {', '.join(QUERY_BACKENDS)} (default "
                      f"{DEFAULT_QUERY_BACKEND}, the fastest that keeps quality; torch is the float32 reference; "
                      "torch-bf16 falls back to float32 on a CPU without native bfloat16). An ONNX graph is exported "
                      "on first use and cached next to the model.")


def positive(param: typer.CallbackParam, value: float | None) -> float | None:
    """A hyperparameter that must be a finite number above 0 (a learning rate, a temperature, minutes): NaN, 0 or
    less would train to NaN or not at all, and write an untrained model."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise RankerError(f"{param.opts[0]} must be a finite number above 0, got {value}")
    return value


def non_negative(param: typer.CallbackParam, value: float) -> float:
    """A weight that must be a finite number of 0 or more."""
    if not (math.isfinite(value) and value >= 0):
        raise RankerError(f"{param.opts[0]} must be a finite number of 0 or more, got {value}")
    return value


def finite(param: typer.CallbackParam, value: float) -> float:
    """A number that must be finite (a bias, which may be negative)."""
    if not math.isfinite(value):
        raise RankerError(f"{param.opts[0]} must be a finite number, got {value}")
    return value


def split_spec(spec: str, option: str) -> tuple[str, str]:
    """``KEY=VALUE`` of a repeatable option, or a one-line error naming the option."""
    key, sep, value = spec.partition("=")
    if not sep or not key or not value:
        raise RankerError(f"{option} takes KEY=VALUE, got {spec!r}")
    return key, value


def not_an_input(output: Path | None, inputs: list[Path | None], option: str = "--output") -> None:
    """Refuse an output that is one of the command's inputs (or its sidecar), or lies inside an input folder (a store,
    an index): writing it would destroy the input."""
    if output is None:
        return
    written = {output.resolve(), output.with_name(output.name + ".json").resolve()}
    for path in inputs:
        if path is None or str(path) == "-":
            continue
        if any(file == path.resolve() or file.is_relative_to(path.resolve()) for file in written):
            raise RankerError(f"{option} {output} is also an input or inside one ({path}): write the output "
                              "elsewhere")


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """``--shard I/N``: ``(I, N)`` with ``0 <= I < N``, or ``None``."""
    if value is None:
        return None
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise typer.BadParameter(f"expected I/N with 0 <= I < N, got {value!r}")
    return int(index), int(count)
