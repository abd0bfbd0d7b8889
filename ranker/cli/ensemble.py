"""``rank ensemble``: pick fusion weights on validation runs and write the ensemble reranker's JSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import not_an_input, output_file


def ensemble(
    runs: Annotated[list[Path], typer.Argument(help="One run per component, all over the same validation queries.")],
    qrels: Annotated[str, typer.Option(help="Judgements of the validation queries.")],
    component: Annotated[list[str], typer.Option(
        help="NAME or NAME=MODEL per run, in order (e.g. cross-encoder=teacher).")],
    output: Annotated[Path, typer.Option(
        help="Ensemble JSON to write (use it as --model FILE).", callback=output_file)],
    step: Annotated[float, typer.Option(min=0.01, max=0.5, help="Weight grid step.")] = 0.05,
    measure: Annotated[str, typer.Option(help="Measure the weights maximise.")] = "nDCG@10",
) -> None:
    """Weights maximising MEASURE on the validation RUNS (z-normalised score fusion), written as an ensemble."""
    from ranker.errors import RankerError
    from ranker.io.artifact import write_metadata
    from ranker.io.formats import read_run
    from ranker.io.sources import load_qrels
    from ranker.train.fusion_weights import ensemble_spec

    if len(component) != len(runs):
        raise RankerError(f"{len(runs)} runs but {len(component)} --component options")
    spec = ensemble_spec(component, [read_run(r) for r in runs], load_qrels(qrels), step, measure)
    spec["validation"] |= {"qrels": qrels, "runs": [str(r) for r in runs]}
    write_metadata(output, "ensemble", **spec)
    typer.echo(f"weights {spec['weights']}: {measure} {spec['validation']['fused']} "
               f"(components alone {spec['validation']['components']}) -> {output}")


def fuse(
    runs: Annotated[list[Path], typer.Argument(
        help="One run per component of the ensemble, in its order ('-' for a component of weight 0).")],
    ensemble: Annotated[Path, typer.Option(help="Ensemble JSON (from 'rank ensemble').")],
    output: Annotated[Path, typer.Option(
        help="Fused TREC run to write (with a .json sidecar).", callback=output_file)],
    tag: Annotated[str | None, typer.Option(help="Run tag (default: the output file's stem).")] = None,
) -> None:
    """Fuse existing component runs with an ensemble's weights: what '--reranker ensemble' computes, without
    scoring again. The sidecar's ms/query is the sum of the components' (their sidecars)."""
    import json

    from ranker.errors import RankerError
    from ranker.fusion import fuse as fuse_rankings
    from ranker.io.formats import read_run
    from ranker.io.runs import save_run, sidecar_path
    from ranker.rerank.ensemble import read_ensemble

    not_an_input(output, [*runs, ensemble])
    weights = read_ensemble(ensemble)["weights"]
    if len(weights) != len(runs):
        raise RankerError(f"{ensemble} has {len(weights)} components but {len(runs)} runs were given")
    skipped = [r for r, w in zip(runs, weights) if str(r) == "-" and w != 0]
    if skipped:
        raise RankerError(f"'-' stands only for a component of weight 0 in {ensemble}")
    runs, weights = zip(*[(r, w) for r, w in zip(runs, weights) if str(r) != "-"])
    ranking = fuse_rankings([read_run(r) for r in runs], weights, [str(r) for r in runs])
    component_ms = []
    for r in runs:
        side = sidecar_path(r)
        component_ms.append(json.loads(side.read_text())["timing"]["ms_per_query"] if side.is_file() else None)
    timing = {"ms_per_query": sum(component_ms) if None not in component_ms else None,
              "components_ms_per_query": component_ms}
    save_run(ranking, output, tag or output.stem,
             {"pipeline": {"stage": "fuse", "ensemble": str(ensemble), "weights": list(weights),
                           "runs": [str(r) for r in runs]}, "timing": timing})
    typer.echo(f"fused {len(runs)} runs, {len(ranking)} queries -> {output}")


def fusion_weight(
    student: Annotated[list[Path], typer.Option(help="The student's run (--fusion none) on a validation set; "
                                                     "repeat once per set.")],
    bm25: Annotated[list[Path], typer.Option(help="BM25's run over the same queries, one per --student.")],
    qrels: Annotated[list[str], typer.Option(help="The validation set's judgements, one per --student.")],
    name: Annotated[list[str], typer.Option(help="The validation set's name, one per --student.")],
    record: Annotated[Path | None, typer.Option(
        help="Student folder whose ranker.json records the picked weight (what rank run reads).")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Write the picked weight and the curve as JSON (what rank pick-student compares).")] = None,
    step: Annotated[float, typer.Option(min=0.01, max=0.5, help="Weight grid step.")] = 0.05,
    measure: Annotated[str, typer.Option(help="Measure the weight maximises (mean over the sets).")] = "nDCG@10",
) -> None:
    """The student's weight against BM25 (w * z(student) + (1 - w) * z(bm25)) with the best mean MEASURE over
    validation sets from different domains; prints the whole curve."""
    from ranker.errors import RankerError
    from ranker.io.atomic import write_json
    from ranker.io.formats import read_run
    from ranker.io.sources import load_qrels
    from ranker.train.fusion_weights import Domain, pick_student_weight, record_fusion

    if not len(student) == len(bm25) == len(qrels) == len(name):
        raise RankerError("give one --bm25, --qrels and --name per --student")
    domains = {n: Domain(read_run(s), read_run(b), load_qrels(q)) for n, s, b, q in zip(name, student, bm25, qrels)}
    best, curve = pick_student_weight(domains, step, measure)
    typer.echo(f"{'weight':>6}  " + "  ".join(f"{n:>9}" for n in [*name, "mean"]))
    for w, scores in curve.items():
        typer.echo(f"{w:6.2f}  " + "  ".join(f"{scores[n]:9.4f}" for n in [*name, "mean"])
                   + ("  <- picked" if w == best else ""))
    if output is not None:
        write_json(output, {"weight": best, "measure": measure, "curve": {str(w): v for w, v in curve.items()}})
    if record is not None:
        record_fusion(record, best, curve, measure, {n: f"{s} + {b} ({q})" for n, s, b, q in
                                                    zip(name, student, bm25, qrels)})
        typer.echo(f"student weight {best} recorded in {record}")


def pick_student(
    curves: Annotated[list[str], typer.Argument(help="NAME=FILE.json per candidate student (rank fusion-weight "
                                                     "--output), the zero-shot start among them.")],
    start: Annotated[str, typer.Option(help="The NAME of the zero-shot start no default may fall below.")],
) -> None:
    """The default student: the best mean validation at its own fusion weight, among the candidates not below the
    zero-shot start on any validation set."""
    import json

    from ranker.errors import RankerError
    from ranker.train.fusion_weights import pick_student as pick

    parsed = {}
    for spec in curves:
        name, sep, path = spec.partition("=")
        if not sep:
            raise RankerError(f"{spec!r}: give NAME=FILE.json")
        parsed[name] = {float(w): v for w, v in json.loads(Path(path).read_text())["curve"].items()}
    chosen, table = pick(parsed, start)
    sets = [k for k in next(iter(table.values())) if k not in ("weight", "mean", "eligible")]
    typer.echo(f"{'student':<16} weight  " + "  ".join(f"{k:>9}" for k in [*sets, "mean"]) + "  eligible")
    for name, row in table.items():
        typer.echo(f"{name:<16} {row['weight']:6.2f}  " + "  ".join(f"{row[k]:9.4f}" for k in [*sets, "mean"])
                   + f"  {'yes' if row['eligible'] else 'no (below the start)'}" + ("  <- picked" if name == chosen
                                                                                   else ""))
