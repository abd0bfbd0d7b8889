"""``rank distill``: teacher scores over every unlabeled candidate (cached), then the TwinBERT student."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer
from typing_extensions import Annotated


def distill(
    output: Annotated[Path, typer.Option(help="Run folder: log, checkpoint/, best/, model/ (fp16).")],
    scores: Annotated[Path, typer.Option(help="Teacher-score cache (Parquet parts; resumable).")],
    teacher: Annotated[str | None, typer.Option(
        help="Teacher: cross-encoder folder or ensemble JSON (default: models/teacher).")] = None,
    scifact_teacher: Annotated[str | None, typer.Option(
        help="Teacher of the SciFact train queries (default: the same as --teacher).")] = None,
    data: Annotated[Path, typer.Option(help="Shared data folder.")] = Path("../shared/data"),
    sets: Annotated[list[str], typer.Option(
        help="Query sets scored and trained on; validation covers their collections.")] = [
        "dl20", "dl21", "dl22", "dl23", "dev600", "scifact-train"],
    scifact_candidates: Annotated[Path, typer.Option(help="BM25 run over SciFact train queries.")] = Path(
        "runs/bm25.scifact-train.trec"),
    score_only: Annotated[bool, typer.Option(help="Only compute the teacher scores.")] = False,
    score_queries: Annotated[int | None, typer.Option(
        min=1, help="Score only the first N distillation queries (their order is fixed).")] = None,
    cached_only: Annotated[bool, typer.Option(
        help="Train on the scores already cached; queries not yet scored are left out.")] = False,
    init: Annotated[Path | None, typer.Option(
        help="Start from this TwinBERT folder (its architecture; of the options below only "
             "--doc-max-length applies).")] = None,
    loss: Annotated[str, typer.Option(help="margin-mse, kl or bce.")] = "margin-mse",
    temperature: Annotated[float, typer.Option(help="Temperature of kl and bce.")] = 1.0,
    label_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the label term (0: distillation only).")] = 0.0,
    num_layers: Annotated[int, typer.Option(min=1, help="Student encoder layers.")] = 6,
    pooling: Annotated[str, typer.Option(help="weighted or cls.")] = "weighted",
    crossing: Annotated[str, typer.Option(help="res or cos.")] = "res",
    cos_scale: Annotated[float, typer.Option(help="Starting scale of the cos crossing.")] = 10.0,
    proj_dim: Annotated[int | None, typer.Option(help="tanh down-projection size.")] = None,
    shared_encoder: Annotated[bool, typer.Option(help="One encoder for queries and passages.")] = True,
    doc_max_length: Annotated[int | None, typer.Option(
        min=16, help="Passage tokens the student reads (default: 256, or as the --init model).")] = None,
    lr: Annotated[float, typer.Option(help="Encoder learning rate.")] = 5e-5,
    head_warmup_steps: Annotated[int, typer.Option(
        min=0, help="First steps train only pooling and crossing (encoders frozen).")] = 0,
    max_steps: Annotated[int, typer.Option(min=1)] = 2000,
    max_minutes: Annotated[float | None, typer.Option(help="Stop training after this long.")] = None,
    eval_every: Annotated[int, typer.Option(min=1)] = 200,
    group_size: Annotated[int, typer.Option(min=2)] = 8,
    queries_per_step: Annotated[int, typer.Option(min=1)] = 8,
    seed: Annotated[int, typer.Option()] = 13,
    val_depth: Annotated[int, typer.Option(min=1, help="BM25 candidates reranked per validation query.")] = 100,
    batch_size: Annotated[int, typer.Option(min=1, help="Teacher scoring batch size.")] = 32,
) -> None:
    """Distil the teacher into a TwinBERT student; rerun the same command to resume."""
    from ..distill import DistillConfig
    from ..distill import distill as train
    from ..training import LoopSettings

    student = {"num_layers": num_layers, "pooling": pooling, "crossing": crossing, "cos_scale": cos_scale,
               "proj_dim": proj_dim, "shared_encoder": shared_encoder}
    if doc_max_length is not None:
        student["doc_max_length"] = doc_max_length
    config = DistillConfig(
        output=str(output), scores=str(scores), student=student, init=str(init) if init else None,
        sets=tuple(sets), loss=loss, temperature=temperature,
        label_weight=label_weight, lr=lr, head_warmup_steps=head_warmup_steps,
        group_size=group_size, queries_per_step=queries_per_step, data=str(data), val_depth=val_depth,
        loop=LoopSettings(max_steps=max_steps, max_minutes=max_minutes, eval_every=eval_every,
                          checkpoint_every=eval_every, seed=seed))
    if not cached_only:
        _score(scores, teacher, scifact_teacher, data, sets, scifact_candidates, seed, batch_size, score_queries)
    if not score_only:
        typer.echo(f"student -> {train(config)}")


def _score(scores: Path, teacher: str | None, scifact_teacher: str | None, data: Path, sets: list[str],
           scifact_candidates: Path, seed: int, batch_size: int, limit: int | None) -> None:
    """Teacher scores for every distillation query still missing from the cache."""
    from ..distill import (
        PerCollection,
        distill_data,
        score_with_teacher,
        validation_split,
    )
    from ..rerankers import MODELS, RerankerOptions, make_reranker

    validation = set(validation_split(data, seed=seed, scifact="scifact-train" in sets).validation.queries)
    pairs = distill_data(data, sets, exclude=validation, scifact_candidates=scifact_candidates)
    teachers = {"msmarco": teacher or str(MODELS / "teacher")}
    teachers["scifact"] = scifact_teacher or teachers["msmarco"]
    kinds = {c: "ensemble" if t.endswith(".json") else "teacher" for c, t in teachers.items()}
    options = RerankerOptions(texts=pairs.texts, batch_size=batch_size)
    scorer = PerCollection({c: make_reranker(kinds[c], dataclasses.replace(options, model=t))
                            for c, t in teachers.items()})
    name = teachers["msmarco"] if teachers["scifact"] == teachers["msmarco"] else json.dumps(teachers)
    score_type = "fused-z" if "ensemble" in kinds.values() else "logit"
    frame = score_with_teacher(scorer, pairs, scores, name, score_type, limit=limit)
    typer.echo(f"teacher scores: {len(frame)} pairs over {frame['qid'].nunique()} queries in {scores}")
