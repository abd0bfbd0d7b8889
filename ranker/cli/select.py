"""``rank pick-trained`` and ``rank pick-run``: the recipes' picks (a checkpoint, a weight) made by library code.

Each prints a table on stderr and only its pick on stdout, so a recipe reads it with ``$(...)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import split_spec


def pick_trained(
    runs: Annotated[list[Path], typer.Argument(help="Training run folders (each holds model/training.json).")],
    max_mb: Annotated[float, typer.Option(help="Largest model as shipped, in MB (its onnx/ cache aside).")] = math.inf,
    max_cost: Annotated[float, typer.Option(
        help="Largest query-tower cost a token (layers x width²), as a multiple of --reference's.")] = math.inf,
    reference: Annotated[Path | None, typer.Option(help="The model --max-cost compares with.")] = None,
) -> None:
    """Print the run whose recorded validation nDCG@10 is best among those within the budget (ties: the first)."""
    from ranker.train.select import pick_trained as pick

    chosen, table = pick(runs, max_mb, max_cost, reference)
    for run, row in table.items():
        cost = "" if row["cost"] is None else f"  {row['cost']:.2f}x cost"
        typer.echo(f"{run}: validation {row['val_ndcg10']:.4f}  {row['mb']:.1f} MB{cost}"
                   f"{'' if row['eligible'] else '  (over the budget)'}{'  <- picked' if run == chosen else ''}",
                   err=True)
    typer.echo(chosen)


def pick_run(
    candidates: Annotated[list[str], typer.Argument(
        help="NAME@SET=RUN: candidate NAME's validation run on SET; every candidate needs a run on every set.")],
    qrels: Annotated[list[str], typer.Option(help="SET=FILE: a validation set's judgements; repeatable.")],
    measure: Annotated[str, typer.Option(help="Measure whose mean over the sets decides.")] = "nDCG@10",
) -> None:
    """Print the candidate with the best mean MEASURE over the validation sets, and that mean (ties: the first)."""
    from ranker.errors import RankerError
    from ranker.io.formats import read_run
    from ranker.io.sources import load_qrels
    from ranker.train.select import pick_by_runs

    judged = dict(split_spec(q, "--qrels") for q in qrels)
    runs: dict[str, dict] = {}
    for spec in candidates:
        target, path = split_spec(spec, "a candidate (NAME@SET=RUN)")
        name, at, collection = target.rpartition("@")
        if not at or collection not in judged:
            raise RankerError(f"{spec!r}: give NAME@SET=RUN with SET one of {', '.join(judged)}")
        runs.setdefault(name, {})[collection] = read_run(path)
    chosen, table = pick_by_runs(runs, {s: load_qrels(f) for s, f in judged.items()}, measure)
    for name, row in table.items():
        typer.echo(f"{name}: " + "  ".join(f"{k} {v:.4f}" for k, v in row.items())
                   + ("  <- picked" if name == chosen else ""), err=True)
    typer.echo(f"{chosen} {table[chosen]['mean']:.4f}")

