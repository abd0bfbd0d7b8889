"""``rank reproduce``: re-make the runs behind RESULTS.md from their recorded commands and check every figure."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ranker.io.datasets import DATA_DIR

WORK = Path("work/reproduce")


class Profile(str, Enum):
    quick = "quick"
    full = "full"


def reproduce(
    system: Annotated[list[str] | None, typer.Option(
        help="A system to reproduce: its name, run path or run stem (teacher.dl19); repeatable. Default: all.")] = None,
    all_systems: Annotated[bool, typer.Option("--all", help="Every system (the default when no --system).")] = False,
    profile: Annotated[Profile, typer.Option(
        help="quick: re-make the runs the shipped models make (the rest are checked as committed); "
             "full: first every training recipe, then the same.")] = Profile.quick,
    dry_run: Annotated[bool, typer.Option(
        help="Print the commands, in order, and how each system's run is made; run nothing.")] = False,
    no_run: Annotated[bool, typer.Option(help="Check the runs as they are; run nothing.")] = False,
    bench: Annotated[bool, typer.Option(help="Also re-run the benchmarks (measured, never checked).")] = False,
    spec: Annotated[Path | None, typer.Option(
        help="Reproduction spec (default: scripts/reproduce.toml here, else the clone's).")] = None,
    results: Annotated[Path | None, typer.Option(
        help="Results spec: each collection's qrels (default: results.toml beside the spec).")] = None,
    data: Annotated[Path | None, typer.Option(
        help=f"Data folder that {{data}} stands for (default: {DATA_DIR} here, else beside the clone).")] = None,
    work: Annotated[Path, typer.Option(help="Work folder ({work}): indexes, stores, the recipes' training runs, "
                                            "reproduce.json (what finished: rerun to resume).")] = WORK,
) -> None:
    """Re-run what the profile makes for the chosen systems, then print OK / close / FAIL for each of their
    figures against the spec; exit 1 on any FAIL."""
    from ranker.errors import RankerError
    from ranker.eval.reproduce import (
        check,
        execute,
        fill,
        made_how,
        placeholders,
        plan,
        read_spec_file,
        select,
        spec_paths,
        summary,
    )

    if all_systems and system:
        raise RankerError("--all and --system: give one")
    spec, results, data = spec_paths(spec, results, data)
    reproduction = read_spec_file(spec, results, data)
    chosen = select(reproduction, system or ())
    values = placeholders(reproduction, data, work, profile.value)
    steps = [] if no_run else plan(reproduction, chosen, profile.value, bench)
    if dry_run:
        for i, step in enumerate(steps, 1):
            for command in step.commands:
                typer.echo(f"[{i}/{len(steps)}] {step.name}: {fill(command, values)}")
        for s in chosen:
            typer.echo(f"{s.collection} | {s.name} | {s.run} | {made_how(s, profile.value, no_run)}")
        return
    execute(reproduction, steps, values, log=typer.echo)
    figures = check(reproduction, chosen, values)
    for f in figures:
        got = "missing" if f.got is None else f"{f.got:.4f}"
        typer.echo(f"{f.verdict:5} {f.system.collection:19} {f.measure:13} {got:>8} (expected {f.expected:.4f})  "
                   f"{f.system.name}")
    widened = sorted({f.system.name for f in figures if f.close > reproduction.close})
    if widened:
        typer.echo(f"this CPU's int8 graphs take 7-bit weights (no VNNI): {len(widened)} systems on int8 query graphs "
                   f"are close within {reproduction.int8_7bit} (docs/reproduce.md)")
    counts = summary(figures)
    typer.echo(f"{counts['OK']} OK, {counts['close']} close, {counts['FAIL']} FAIL of {len(figures)} figures "
               f"({len(chosen)} systems)")
    if counts["FAIL"]:
        raise typer.Exit(1)
