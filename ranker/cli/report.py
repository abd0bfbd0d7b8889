"""``rank report``: RESULTS.md and its plot from a results spec (runs, benchmark JSON, models, stores)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import output_file
from ranker.io.datasets import DATA_DIR


def report(
    spec: Annotated[Path, typer.Option(help="Results spec (TOML), e.g. scripts/results.toml.")],
    data: Annotated[Path, typer.Option(help="Data folder that {data} in the spec stands for.")] = DATA_DIR,
    stores: Annotated[Path, typer.Option(help="Folder that {stores} in the spec stands for.")] = Path("work/stores"),
    output: Annotated[Path, typer.Option(help="Markdown file to write.", callback=output_file)] = Path("RESULTS.md"),
    plot: Annotated[Path | None, typer.Option(
        help="PNG of nDCG@10 against ms per query.", callback=output_file)] = Path("results.png"),
) -> None:
    """Evaluate every run the spec names, write OUTPUT (and the plot), and print the tables."""
    from ranker.eval.report import build_report, read_spec
    from ranker.io.atomic import atomic_open
    from ranker.io.runs import command_line

    text, _ = build_report(read_spec(spec, data, stores), output, plot, command=command_line())
    with atomic_open(output) as f:
        f.write(text)
    typer.echo(text.split("\n## Models")[0])
    typer.echo(f"-> {output}" + (f", {plot}" if plot else ""))
