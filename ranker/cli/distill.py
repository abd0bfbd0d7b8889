"""``rank distill``: teacher scores over every unlabeled candidate (cached), then the TwinBERT student."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import non_negative, output_folder, positive, split_spec, use_threads
from ranker.io.datasets import DATA_DIR, RUNS_DIR
from ranker.rerank.registry import RerankerConfig
from ranker.train.config import DistillConfig

RECIPE = DistillConfig(output="", scores="")


def distill(
    output: Annotated[Path, typer.Option(
        help="Run folder: log, checkpoint/, best/, model/ (fp16).", callback=output_folder)],
    scores: Annotated[Path, typer.Option(
        help="Teacher-score cache (Parquet parts; resumable).", callback=output_folder)],
    teacher: Annotated[str | None, typer.Option(
        help="Teacher: a cross-encoder folder or an ensemble file, its kind read from it "
             "(default: the shipped ensemble-msmarco.json).")] = None,
    scifact_teacher: Annotated[str | None, typer.Option(
        help="Teacher of the SciFact train queries (default: --teacher if given, else the shipped "
             "ensemble-scifact.json).")] = None,
    data: Annotated[Path, typer.Option(help="Shared data folder.")] = DATA_DIR,
    runs: Annotated[Path, typer.Option(help="The project's runs (BM25 over SciFact train queries).")] = RUNS_DIR,
    sets: Annotated[list[str], typer.Option(
        help="Query sets scored and trained on; validation covers their collections.")] = list(RECIPE.sets),
    score_only: Annotated[bool, typer.Option(help="Only compute the teacher scores.")] = False,
    score_queries: Annotated[int | None, typer.Option(
        min=1, help="Score only the first N distillation queries (their order is fixed).")] = None,
    cached_only: Annotated[bool, typer.Option(
        help="Train on the scores already cached; queries not yet scored are left out.")] = False,
    init: Annotated[Path | None, typer.Option(
        help="Start from this TwinBERT folder (its architecture; of the options below only "
             "--doc-max-length applies).")] = None,
    loss: Annotated[str, typer.Option(
        help="margin-mse, kl, bce, or none (labels alone: with --label-weight).")] = RECIPE.loss,
    temperature: Annotated[float, typer.Option(
        callback=positive, help="Temperature of kl and bce.")] = RECIPE.temperature,
    label_weight: Annotated[float, typer.Option(
        callback=non_negative, help="Weight of the label term (0: distillation only).")] = RECIPE.label_weight,
    num_layers: Annotated[int, typer.Option(min=1, help="Student encoder layers.")] = RECIPE.student.num_layers,
    pooling: Annotated[str, typer.Option(help="weighted or cls.")] = RECIPE.student.pooling,
    crossing: Annotated[str, typer.Option(help="res or cos.")] = RECIPE.student.crossing,
    cos_scale: Annotated[float, typer.Option(
        callback=positive, help="Starting scale of the cos crossing.")] = RECIPE.student.cos_scale,
    proj_dim: Annotated[int | None, typer.Option(help="tanh down-projection size.")] = RECIPE.student.proj_dim,
    shared_encoder: Annotated[bool, typer.Option(
        help="One encoder for queries and passages.")] = RECIPE.student.shared_encoder,
    doc_max_length: Annotated[int | None, typer.Option(
        min=16, help=f"Passage tokens the student reads (default: {RECIPE.student.doc_max_length}, or as the "
                     "--init model).")] = None,
    lr: Annotated[float, typer.Option(callback=positive, help="Encoder learning rate.")] = RECIPE.lr,
    head_lr: Annotated[float, typer.Option(
        callback=positive, help="Learning rate of pooling, projection and crossing.")] = RECIPE.head_lr,
    head_warmup_steps: Annotated[int, typer.Option(
        min=0, help="First steps train only pooling and crossing (encoders frozen).")] = RECIPE.head_warmup_steps,
    max_steps: Annotated[int, typer.Option(min=1)] = RECIPE.loop.max_steps,
    max_minutes: Annotated[float | None, typer.Option(callback=positive, help="Stop training after this long.")] = None,
    eval_every: Annotated[int, typer.Option(min=1)] = RECIPE.loop.eval_every,
    group_size: Annotated[int, typer.Option(min=2)] = RECIPE.group_size,
    queries_per_step: Annotated[int, typer.Option(min=1)] = RECIPE.queries_per_step,
    seed: Annotated[int, typer.Option()] = RECIPE.loop.seed,
    val_depth: Annotated[int, typer.Option(
        min=1, help="BM25 candidates reranked per validation query.")] = RECIPE.val_depth,
    batch_size: Annotated[int, typer.Option(min=1, help="Teacher scoring batch size.")] = RerankerConfig.batch_size,
    teacher_run: Annotated[list[str] | None, typer.Option(
        help="COLLECTION=RUN (repeatable): the teacher's scores read from its run over the candidates 'rank "
             "datasets distill' wrote, instead of scoring with --teacher.")] = None,
    doc_store: Annotated[list[Path] | None, typer.Option(
        help="A frozen passage side (repeatable): passage vectors read from these stores of the student's "
             "document side; only the query side trains.")] = None,
    doc_encoder: Annotated[str | None, typer.Option(
        help="An asymmetric student: this bi-encoder (mpnet, minilm, a folder) is the passage side, read from "
             "--doc-store; the other student options set the query tower.")] = None,
    encoder: Annotated[str | None, typer.Option(
        help="The query tower's (or both towers') start (default: the bundled all-MiniLM-L6-v2; mpnet).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 2,
    reset_crossing: Annotated[bool, typer.Option(
        help="With --init: a fresh crossing of --crossing's kind on the towers of --init.")] = False,
    freeze_embeddings: Annotated[bool, typer.Option(
        help="Keep the query encoder's word embeddings as they start (student v3's are mpnet's own, kept by "
             "reference).")] = RECIPE.freeze_embeddings,
) -> None:
    """Distil the teacher into a TwinBERT student; rerun the same command to resume."""
    import dataclasses

    from ranker.models.twinbert import asymmetric_config
    from ranker.train.config import LoopConfig
    from ranker.train.distill import distill as train
    from ranker.train.scores import run_teacher_scores, teacher_scores

    use_threads(threads)
    tower = dict(encoder=encoder, num_layers=num_layers, pooling=pooling, crossing=crossing, cos_scale=cos_scale)
    student = (asymmetric_config(doc_encoder, **tower) if doc_encoder else
               dataclasses.replace(RECIPE.student, proj_dim=proj_dim, shared_encoder=shared_encoder, **tower))
    config = dataclasses.replace(
        RECIPE, output=str(output), scores=str(scores), student=student, doc_max_length=doc_max_length,
        init=str(init) if init else None, sets=tuple(sets), loss=loss, temperature=temperature,
        label_weight=label_weight, lr=lr, head_lr=head_lr, head_warmup_steps=head_warmup_steps, group_size=group_size,
        queries_per_step=queries_per_step, data_dir=str(data), val_depth=val_depth,
        loop=LoopConfig(max_steps=max_steps, max_minutes=max_minutes, eval_every=eval_every,
                        checkpoint_every=eval_every, seed=seed),
        doc_stores=tuple(str(p) for p in doc_store or ()), reset_crossing=reset_crossing,
        freeze_embeddings=freeze_embeddings)
    if teacher_run or not cached_only:
        frame = (run_teacher_scores(scores, dict(split_spec(spec, "--teacher-run") for spec in teacher_run),
                                    data, sets, seed, runs) if teacher_run else
                 teacher_scores(scores, teacher, scifact_teacher, data, sets, seed, batch_size, score_queries, runs))
        typer.echo(f"teacher scores: {len(frame)} pairs over {frame['qid'].nunique()} queries in {scores}")
    if not score_only:
        typer.echo(f"student -> {train(config)}")
