"""The recipes' picks as library code: a training run by its recorded validation within a size and query-cost
budget, a candidate by its mean over validation runs; ties go to the first given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ranker.errors import RankerError
from ranker.io.artifact import shipped_megabytes
from ranker.train.select import pick_by_runs, pick_trained, query_cost, recorded_validation
from ranker.types import Qrel, Ranking, ScoredDoc


def training_run(root: Path, name: str, score: float, megabytes: float, layers: int | None = None) -> Path:
    model = root / name / "model"
    model.mkdir(parents=True)
    (model / "training.json").write_text(json.dumps({"best": {"step": 10, "val_ndcg10": score}}))
    (model / "model.safetensors").write_bytes(b"\0" * int(megabytes * 1e6))
    (model / "onnx").mkdir()
    (model / "onnx" / "graph.onnx").write_bytes(b"\0" * 3_000_000)  # a cache: never counted
    if layers is not None:
        (model / "query_encoder").mkdir()
        (model / "query_encoder" / "config.json").write_text(json.dumps({"num_hidden_layers": layers,
                                                                       "hidden_size": 768}))
    return root / name


def test_the_best_recorded_run_within_the_budget(tmp_path):
    reference = tmp_path / "v1"
    (reference / "doc_encoder").mkdir(parents=True)
    (reference / "doc_encoder" / "config.json").write_text(json.dumps({"num_hidden_layers": 6, "hidden_size": 384}))
    k1 = training_run(tmp_path, "k1", 0.60, 30, layers=1)  # 768² = 4 x 384²: 0.67x v1's 6 layers
    k2 = training_run(tmp_path, "k2", 0.65, 38, layers=2)  # 1.33x
    k4 = training_run(tmp_path, "k4", 0.70, 58, layers=4)  # 2.67x, 58 MB
    assert shipped_megabytes(k4 / "model") == pytest.approx(58.0, abs=0.01)
    assert query_cost(k2 / "model") == 2 * 768 ** 2 and recorded_validation(k2) == 0.65
    assert pick_trained([k1, k2, k4])[0] == k4
    chosen, table = pick_trained([k1, k2, k4], max_mb=50, max_cost=1.5, reference=reference)
    assert chosen == k2 and not table[k4]["eligible"] and table[k2]["cost"] == pytest.approx(4 / 3)
    assert pick_trained([k1, k2], max_mb=35)[0] == k1
    tie = training_run(tmp_path, "tie", 0.65, 1, layers=2)
    assert pick_trained([tie, k2], max_mb=50)[0] == tie and pick_trained([k2, tie], max_mb=50)[0] == k2
    with pytest.raises(RankerError, match="no run within 10"):
        pick_trained([k1, k2], max_mb=10)
    with pytest.raises(RankerError, match="needs a reference"):
        pick_trained([k1], max_cost=1.5)
    (k1 / "model" / "training.json").write_text("{}")
    with pytest.raises(RankerError, match="no recorded validation"):
        pick_trained([k1])


def ranking(order: list[str]) -> Ranking:
    return {"q": [ScoredDoc("q", d, float(len(order) - i)) for i, d in enumerate(order)]}


def test_the_best_mean_over_validation_sets():
    qrels = {"a": [Qrel("q", "d1", 1)], "b": [Qrel("q", "d2", 1)]}
    first = {"a": ranking(["d1", "d2"]), "b": ranking(["d1", "d2"])}  # 1.0 on a, 0.63 on b
    second = {"a": ranking(["d2", "d1"]), "b": ranking(["d2", "d1"])}  # the mirror: the same mean
    third = {"a": ranking(["d2", "d1"]), "b": ranking(["d3", "d1", "d2"])}  # worse on both
    chosen, table = pick_by_runs({"first": first, "second": second, "third": third}, qrels)
    assert chosen == "first" and table["first"]["mean"] == pytest.approx(table["second"]["mean"])
    assert pick_by_runs({"second": second, "first": first}, qrels)[0] == "second"  # ties: the first given
    assert pick_by_runs({"third": third, "first": first}, qrels)[0] == "first"
    with pytest.raises(RankerError, match="has no run on b"):
        pick_by_runs({"first": {"a": first["a"]}}, qrels)


def test_the_pick_commands_print_only_the_pick_on_stdout(tmp_path):
    """A recipe reads the pick with $(...): the table goes to stderr."""
    from typer.testing import CliRunner

    from ranker.cli import app

    (tmp_path / "qrels.txt").write_text("q 0 d2 1\n")
    for name, order in (("w0.2", ["d1", "d2"]), ("w0.5", ["d2", "d1"])):
        (tmp_path / f"{name}.trec").write_text("".join(f"q Q0 {d} {i + 1} {2 - i} x\n" for i, d in enumerate(order)))
    result = CliRunner().invoke(app, ["pick-run", "--qrels", f"val={tmp_path / 'qrels.txt'}",
                                      f"0.2@val={tmp_path / 'w0.2.trec'}", f"0.5@val={tmp_path / 'w0.5.trec'}"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "0.5 1.0000\n" and "<- picked" in result.stderr
    run = training_run(tmp_path, "run", 0.6, 1)
    result = CliRunner().invoke(app, ["pick-trained", str(run)])
    assert result.exit_code == 0 and result.stdout == f"{run}\n", result.output
