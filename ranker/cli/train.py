"""``rank train-teacher``: fine-tune the cross-encoder teacher; rerun the same command to resume."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import finite, output_folder, positive, use_threads
from ranker.io.datasets import DATA_DIR
from ranker.train.config import TeacherTrainingConfig

RECIPE = TeacherTrainingConfig(output="")


def train_teacher(
    output: Annotated[Path, typer.Option(
        help="Run folder: log.jsonl, checkpoint/, best/, model/ (fp16).", callback=output_folder)],
    init: Annotated[str | None, typer.Option(
        help="Start: HF encoder or cross-encoder (default: bundled MiniLM).")] = None,
    head: Annotated[str, typer.Option(help="span-cos or cls.")] = RECIPE.model.head,
    layout: Annotated[str, typer.Option(help="joint, or gated (starts as the bi-encoder).")] = RECIPE.model.layout,
    segment_bias: Annotated[float, typer.Option(
        callback=finite, help="Initial cross-segment attention bias (gated).")] = RECIPE.model.segment_bias,
    max_length: Annotated[int, typer.Option(min=16, help="Tokens per pair.")] = RECIPE.model.max_length,
    loss: Annotated[str, typer.Option(help="softmax (1 positive + negatives) or listwise (graded).")] = RECIPE.loss,
    lr: Annotated[float, typer.Option(callback=positive, help="Encoder learning rate.")] = RECIPE.lr,
    head_lr: Annotated[float, typer.Option(callback=positive, help="Head learning rate.")] = RECIPE.head_lr,
    max_steps: Annotated[int, typer.Option(min=1)] = RECIPE.loop.max_steps,
    warmup_steps: Annotated[int, typer.Option(min=0)] = RECIPE.loop.warmup_steps,
    max_minutes: Annotated[float | None, typer.Option(callback=positive, help="Stop training after this long.")] = None,
    eval_every: Annotated[int, typer.Option(
        min=1, help="Validate (and checkpoint) every N steps.")] = RECIPE.loop.eval_every,
    group_size: Annotated[int, typer.Option(min=2)] = RECIPE.group_size,
    queries_per_step: Annotated[int, typer.Option(min=1)] = RECIPE.queries_per_step,
    sets: Annotated[list[str], typer.Option(help="Labelled sets trained on.")] = list(RECIPE.sets),
    sparse: Annotated[list[str], typer.Option(
        help="Sets whose unjudged candidates are not negatives.")] = list(RECIPE.sparse),
    data: Annotated[Path, typer.Option(help="Shared data folder.")] = DATA_DIR,
    scifact_val: Annotated[int, typer.Option(
        help="SciFact train queries held out for validation.")] = RECIPE.scifact_val,
    seed: Annotated[int, typer.Option()] = RECIPE.loop.seed,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Fine-tune the teacher on every labelled set; held-out validation queries pick the checkpoint.

    Validation: a quarter of DL20/DL21 (and 50 SciFact train queries with scifact-train), written to OUTPUT/validation/.
    """
    import dataclasses

    from ranker.models.config import CrossEncoderConfig
    from ranker.train.config import LoopConfig
    from ranker.train.teacher import train_teacher as train

    use_threads(threads)
    model = CrossEncoderConfig(head=head, layout=layout, max_length=max_length, segment_bias=segment_bias)
    final = train(dataclasses.replace(
        RECIPE, output=str(output), init=init, model=model, loss=loss, lr=lr, head_lr=head_lr,
        loop=LoopConfig(max_steps=max_steps, warmup_steps=warmup_steps, max_minutes=max_minutes,
                        eval_every=eval_every, checkpoint_every=eval_every, seed=seed),
        group_size=group_size, queries_per_step=queries_per_step, sets=tuple(sets), sparse=tuple(sparse),
        data_dir=str(data), scifact_val=scifact_val))
    typer.echo(f"teacher -> {final}")
