"""``rank train-teacher``: fine-tune the cross-encoder teacher; rerun the same command to resume."""

from __future__ import annotations

from pathlib import Path

import typer
from typing_extensions import Annotated


def train_teacher(
    output: Annotated[Path, typer.Option(help="Run folder: log.jsonl, checkpoint/, best/, model/ (fp16).")],
    init: Annotated[str | None, typer.Option(help="Start: HF encoder or cross-encoder (default: bundled MiniLM).")] = None,
    head: Annotated[str, typer.Option(help="span-cos or cls.")] = "span-cos",
    layout: Annotated[str, typer.Option(help="gated (bi-encoder start) or joint.")] = "gated",
    segment_bias: Annotated[float, typer.Option(help="Initial cross-segment attention bias (gated).")] = -4.0,
    max_length: Annotated[int, typer.Option(min=16, help="Tokens per pair.")] = 160,
    loss: Annotated[str, typer.Option(help="softmax (1 positive + negatives) or listwise (graded).")] = "softmax",
    lr: Annotated[float, typer.Option(help="Encoder learning rate.")] = 2e-5,
    head_lr: Annotated[float, typer.Option(help="Head learning rate.")] = 1e-2,
    max_steps: Annotated[int, typer.Option(min=1)] = 300,
    warmup_steps: Annotated[int, typer.Option(min=0)] = 20,
    max_minutes: Annotated[float | None, typer.Option(help="Stop training after this long.")] = None,
    eval_every: Annotated[int, typer.Option(min=1, help="Validate (and checkpoint) every N steps.")] = 75,
    group_size: Annotated[int, typer.Option(min=2)] = 8,
    queries_per_step: Annotated[int, typer.Option(min=1)] = 4,
    sets: Annotated[list[str], typer.Option(help="Labelled sets: dl20, dl21, dl23, dev600, scifact-train.")] = [
        "dl20", "dl21", "dl23", "dev600"],
    sparse: Annotated[list[str], typer.Option(help="Sets whose unjudged candidates are not negatives.")] = ["dev600"],
    data: Annotated[Path, typer.Option(help="The msmarco-passage data folder.")] = Path("../shared/data/msmarco-passage"),
    scifact_val: Annotated[int, typer.Option(help="SciFact train queries held out for validation.")] = 50,
    seed: Annotated[int, typer.Option()] = 13,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
) -> None:
    """Fine-tune the teacher on every labelled set; held-out validation queries pick the checkpoint.

    Validation: a quarter of DL20/DL21 (and 50 SciFact train queries with scifact-train), written to OUTPUT/validation/.
    """
    from ..teacher import CrossEncoderSpec, TrainConfig
    from ..teacher import train_teacher as train
    from ..training import LoopSettings

    spec = CrossEncoderSpec(head=head, layout=layout, max_length=max_length, segment_bias=segment_bias)
    final = train(TrainConfig(
        output=str(output), init=init, spec=spec, loss=loss, lr=lr, head_lr=head_lr,
        loop=LoopSettings(max_steps=max_steps, warmup_steps=warmup_steps, max_minutes=max_minutes,
                          eval_every=eval_every, checkpoint_every=eval_every, seed=seed),
        group_size=group_size, queries_per_step=queries_per_step, sets=tuple(sets), sparse=tuple(sparse),
        data=str(data), scifact_val=scifact_val, threads=threads))
    typer.echo(f"teacher -> {final}")
