"""``rank datasets``: the registered training and test sets, and the held-out validation queries as files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import output_folder
from ranker.io.datasets import DATA_DIR, RUNS_DIR

app = typer.Typer(help="The dataset registry: list the sets, write the validation queries as files.",
                  no_args_is_help=True)


@app.command("list")
def list_datasets() -> None:
    """Every registered set: its collection, what it is used for and its files."""
    from ranker.io import datasets

    for name in datasets.names():
        d = datasets.load(name)
        uses = ", ".join(sorted(d.uses))
        typer.echo(f"{name:<14} {d.collection:<8} {uses:<32} topics {d.topics}, qrels {d.qrels or '—'}")


@app.command("validation")
def validation(
    output: Annotated[Path, typer.Option(help="Folder for NAME.topics.tsv, NAME.qrels.txt, NAME.bm25.trec.",
                                         callback=output_folder)],
    data: Annotated[Path, typer.Option(help="Shared data folder.")] = DATA_DIR,
    runs: Annotated[Path, typer.Option(help="The project's runs (BM25 over SciFact train queries).")] = RUNS_DIR,
    seed: Annotated[int, typer.Option(help="The validation split's seed (the trainers' --seed).")] = 13,
) -> None:
    """The held-out validation queries the trainers select on (DL20/DL21, SciFact train), per collection, with
    their judgements and BM25 candidates: what 'rank ensemble' picks fusion weights on."""
    from ranker.train.examples import validation_split

    held = validation_split(data, seed=seed, runs_dir=runs).validation
    held.write(output)
    typer.echo(f"{len(held.queries)} validation queries -> {output}")


@app.command("distill")
def distill_candidates(
    output: Annotated[Path, typer.Option(help="Folder for COLLECTION.topics.tsv and COLLECTION.candidates.trec.",
                                         callback=output_folder)],
    sets: Annotated[list[str], typer.Option(help="Distillation sets (rank datasets list).")] = ["dev600"],
    depth: Annotated[int | None, typer.Option(min=1, help="Candidates kept per query (default: all).")] = None,
    data: Annotated[Path, typer.Option(help="Shared data folder.")] = DATA_DIR,
    runs: Annotated[Path, typer.Option(help="The project's runs (BM25 over SciFact train queries).")] = RUNS_DIR,
    seed: Annotated[int, typer.Option(help="The validation split's seed (its queries are left out).")] = 13,
) -> None:
    """The distillation queries and candidates as files (never DL19, SciFact test or the validation queries):
    score them with any reranker ('rank run', 'rank fuse'), then 'rank distill --teacher-run'."""
    from ranker.train.examples import distill_data_held_out

    pairs = distill_data_held_out(data, sets, seed, runs)
    pairs.write(output, depth)
    typer.echo(f"{len(pairs.queries)} distillation queries -> {output}")
