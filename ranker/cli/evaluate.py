"""``rank evaluate``: a table of measures for several runs, with significance against a baseline."""

from __future__ import annotations

import json
import re
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import not_an_input, output_file

DEFAULT_MEASURES = ["nDCG@10", "RR@10", "R@100"]  # kept here so `rank --help` need not import pandas and scipy


class Missing(str, Enum):
    zero = "zero"
    skip = "skip"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def evaluate(
    runs: Annotated[list[Path], typer.Argument(help="TREC run files.")],
    qrels: Annotated[str, typer.Option(help="Qrels: TREC or BEIR TSV file, or irds:<id>.")],
    measures: Annotated[list[str], typer.Option(
        help="ir-measures names, e.g. 'nDCG@10 RR@10 R@100'.")] = DEFAULT_MEASURES,
    rel_level: Annotated[int | None, typer.Option(
        help="Minimum grade counted relevant by RR, R, P, AP (DL: 2).")] = None,
    baseline: Annotated[Path | None, typer.Option(help="Run to test against (paired t-test, Holm-corrected).")] = None,
    per_query: Annotated[Path | None, typer.Option(
        help="Write per-query values to this CSV.", callback=output_file)] = None,
    format: Annotated[Format, typer.Option(help="Output format.")] = Format.table,
    missing: Annotated[Missing, typer.Option(
        help="A judged query a run lacks: zero (counts 0 in the mean, trec_eval -c) or skip (the run's own "
             "queries only, trec_eval's default).")] = Missing.zero,
    sort: Annotated[str | None, typer.Option(
        help="Order the rows by this measure, best first (default: the runs in the order given).")] = None,
) -> None:
    """Evaluate runs with ir-measures; '†' marks a significant difference from --baseline (p < 0.05, Holm)."""
    from ranker.errors import RankerError
    from ranker.eval import evaluate as ev
    from ranker.io.atomic import atomic_open
    from ranker.io.formats import read_run
    from ranker.io.sources import load_qrels
    from ranker.measures import parse_measures, providers

    not_an_input(per_query, [*runs, baseline, Path(qrels)], "--per-query")
    parsed = parse_measures([m for spec in measures for m in re.split(r"[\s,]+", spec) if m], rel_level)
    judged = load_qrels(qrels)
    paths = list(dict.fromkeys([*runs, *([baseline] if baseline else [])]))
    names = _names(paths)
    read = {names[p]: read_run(p) for p in paths}
    judged_qids = {q.qid for q in judged}
    result = ev.evaluate(judged, read, parsed, baseline=names[baseline] if baseline else None,
                         missing=missing.value)
    for p in paths:
        lacking = result.missing[names[p]]
        if lacking == len(judged_qids):  # every figure would be 0: most likely the wrong qrels
            typer.echo(f"rank: warning: {p} shares no query with {qrels}: all its figures are 0", err=True)
        elif lacking:
            counted = ("count 0 in its figures (--missing skip scores only its own queries)" if missing is Missing.zero
                       else "are left out of its figures (--missing skip)")
            typer.echo(f"rank: warning: {p} lacks {lacking} of the {len(judged_qids)} judged queries: they "
                       f"{counted}", err=True)
    if sort is not None:
        if sort not in result.means.columns:
            raise RankerError(f"--sort {sort}: not one of the measures evaluated ({', '.join(result.means.columns)})")
        result.means = result.means.sort_values(sort, ascending=False, kind="stable")
    if per_query is not None:
        with atomic_open(per_query) as f:
            result.long_per_query().to_csv(f, index=False, float_format="%.4f")
    counts = {name: len(t) for name, t in result.queries.items()}
    if format is Format.json:
        typer.echo(json.dumps({
            "qrels": qrels, "providers": providers(parsed), "baseline": result.baseline, "alpha": ev.ALPHA,
            "systems": {name: {"queries": counts[name], **row} for name, row in result.means.to_dict("index").items()},
            "pvalues_holm": None if result.pvalues is None else result.pvalues.to_dict("index"),
        }, indent=2))
    elif format is Format.csv:
        table = result.means.copy()
        table.insert(0, "queries", [counts[n] for n in table.index])
        if result.pvalues is not None:
            table = table.join(result.pvalues.add_prefix("p_holm:"))
        typer.echo(table.to_csv(index_label="system", float_format="%.4f"), nl=False)
    else:
        _print_table(result, counts)


def _names(paths: list[Path]) -> dict[Path, str]:
    """Short names for runs: the file name without .trec, or the whole path where two names collide."""
    stems = {p: p.name.removesuffix(".trec").removesuffix(".txt") for p in paths}
    clash = {s for s in stems.values() if list(stems.values()).count(s) > 1}
    return {p: str(p) if s in clash else s for p, s in stems.items()}


def _print_table(result, counts: dict[str, int]) -> None:
    from rich.console import Console
    from rich.table import Table

    from ranker.eval.evaluate import ALPHA

    table = Table(show_edge=False, header_style="bold")
    table.add_column("system")
    table.add_column("queries", justify="right")
    for m in result.means.columns:
        table.add_column(m, justify="right")
    for name, row in result.means.iterrows():
        cells = [f"{v:.4f}{'†' if result.significant(name, m) else ' '}" for m, v in row.items()]
        label = f"{name} (baseline)" if name == result.baseline else name
        table.add_row(label, str(counts[name]), *cells)
    console = Console(width=200)
    console.print(table)
    if result.baseline:
        console.print(f"† p < {ALPHA} against {result.baseline} (paired t-test, Holm-corrected per measure)")
