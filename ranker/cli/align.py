"""``rank align``: an asymmetric TwinBERT's query tower trained to reproduce its bi-encoder's vectors."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import output_folder, positive, use_threads
from ranker.io.datasets import DATA_DIR
from ranker.train.config import AlignConfig

RECIPE = AlignConfig(output="", doc_stores=())
Loss = Enum("Loss", {name: name for name in ("mse", "cosine")}, type=str)


def align(
    output: Annotated[Path, typer.Option(
        help="Run folder: log, targets/, checkpoint/, best/, model/ (fp16).", callback=output_folder)],
    doc_store: Annotated[list[Path], typer.Option(
        help="Store of the bi-encoder holding the validation candidates (repeatable; rank encode --encoder "
             "biencoder).")],
    doc_encoder: Annotated[str, typer.Option(
        help="The passage side: a bi-encoder (mpnet, minilm or a folder).")] = RECIPE.doc_encoder,
    encoder: Annotated[str | None, typer.Option(
        help="Query tower start (default: the bundled all-MiniLM-L6-v2).")] = RECIPE.student.encoder,
    num_layers: Annotated[int, typer.Option(min=1, help="Query tower layers.")] = RECIPE.student.num_layers,
    crossing: Annotated[str, typer.Option(help="res or cos.")] = RECIPE.student.crossing,
    proj_dim: Annotated[int | None, typer.Option(
        min=1, help="A query projection of this size even at the bi-encoder's width (started at the ridge map); "
                    "default: only where the widths differ.")] = RECIPE.proj_dim,
    query_max_length: Annotated[int, typer.Option(
        min=4, help="Query tokens kept.")] = RECIPE.student.query_max_length,
    sets: Annotated[list[str], typer.Option(
        help="Sets whose queries and passage sentences are the training texts.")] = list(RECIPE.sets),
    freeze_embeddings: Annotated[bool, typer.Option(
        help="Keep the query encoder's word embeddings as the checkpoint has them.")] = RECIPE.freeze_embeddings,
    query_set: Annotated[list[str], typer.Option(
        help="Text-only sets whose queries are training texts too (msmarco-train).")] = list(RECIPE.query_sets),
    targets: Annotated[Path | None, typer.Option(
        help="Cache of the bi-encoder's target vectors, keyed by text hash (default OUTPUT/targets).")] = None,
    sentences: Annotated[int, typer.Option(min=0, help="Passage sentences drawn.")] = RECIPE.sentences,
    batch_size: Annotated[int, typer.Option(min=1)] = RECIPE.batch_size,
    loss: Annotated[Loss, typer.Option(
        help="mse (vector to vector) or cosine (direction alone, for the cos crossing).")] = Loss(RECIPE.loss),
    lr: Annotated[float, typer.Option(callback=positive, help="Query encoder learning rate.")] = RECIPE.lr,
    max_steps: Annotated[int, typer.Option(min=1)] = RECIPE.loop.max_steps,
    eval_every: Annotated[int, typer.Option(min=1)] = RECIPE.loop.eval_every,
    seed: Annotated[int, typer.Option()] = RECIPE.loop.seed,
    val_depth: Annotated[int, typer.Option(
        min=1, help="BM25 candidates reranked per validation query.")] = RECIPE.val_depth,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 2,
    data: Annotated[Path, typer.Option(help="Shared data folder.")] = DATA_DIR,
    targets_only: Annotated[bool, typer.Option(
        help="Encode the bi-encoder's target vectors into --targets, then stop (no training).")] = False,
    shard: Annotated[str | None, typer.Option(
        help="With --targets-only: I/N, only the texts whose hash is I modulo N (N machines, one shared "
             "--targets folder).")] = None,
) -> None:
    """Align a small query tower to a bi-encoder (its passages frozen in stores); rerun the same command to resume."""
    import dataclasses

    from ranker.cli.options import parse_shard
    from ranker.errors import RankerError
    from ranker.train.align import align as train
    from ranker.train.align import alignment_targets

    use_threads(threads)
    student = dataclasses.replace(RECIPE.student, encoder=encoder, num_layers=num_layers, crossing=crossing,
                                  query_max_length=query_max_length)
    config = dataclasses.replace(
        RECIPE, output=str(output), doc_stores=tuple(str(p) for p in doc_store), doc_encoder=doc_encoder,
        proj_dim=proj_dim, freeze_embeddings=freeze_embeddings, student=student, sets=tuple(sets),
        query_sets=tuple(query_set), targets=str(targets) if targets else None, sentences=sentences,
        batch_size=batch_size, loss=loss.value, lr=lr, data_dir=str(data), val_depth=val_depth,
        loop=dataclasses.replace(RECIPE.loop, max_steps=max_steps, eval_every=eval_every, checkpoint_every=eval_every,
                                 seed=seed, warmup_steps=min(RECIPE.loop.warmup_steps, max_steps)))
    if shard is not None and not targets_only:
        raise RankerError("--shard splits the target encoding: it goes with --targets-only")
    if targets_only:
        typer.echo(f"targets -> {alignment_targets(config, parse_shard(shard))}")
    else:
        typer.echo(f"student -> {train(config)}")


def agreement(
    model: Annotated[Path, typer.Option(help="An asymmetric TwinBERT folder (rank align, rank distill --doc-store).")],
    topics: Annotated[list[str], typer.Option(help="Topics whose query texts are compared (repeatable).")],
    query_max_length: Annotated[int | None, typer.Option(
        min=4, help="Query tokens kept (default: the model's own cap).")] = None,
    judged_only: Annotated[list[str] | None, typer.Option(
        help="Qrels files, one per --topics in order: only the queries each judges (DL19's 43, SciFact test's "
             "300).")] = None,
) -> None:
    """Mean (5th percentile, minimum) cosine between the student's query vectors and its bi-encoder's, per topics
    file: how closely the query tower copies the bi-encoder."""
    import dataclasses

    from ranker.errors import RankerError
    from ranker.io.sources import load_qrels, load_topics
    from ranker.models.twinbert import TwinBert
    from ranker.train.align import agreement as measure

    if judged_only and len(judged_only) != len(topics):
        raise RankerError(f"--judged-only gives {len(judged_only)} qrels files for {len(topics)} --topics files: "
                          "one each, in order")
    student = TwinBert.load(model, device="cpu")
    if query_max_length:
        student.config = dataclasses.replace(student.config, query_max_length=query_max_length)
    for n, path in enumerate(topics):
        judged = {q.qid for q in load_qrels(judged_only[n])} if judged_only else None
        figures = measure(student, [q.text for q in load_topics(path).values() if judged is None or q.qid in judged])
        typer.echo(f"{path}: {figures['texts']} queries, cosine to {student.config.doc_encoder}: mean "
                   f"{figures['mean']:.4f}, p5 {figures['p5']:.4f}, min {figures['min']:.4f}")
