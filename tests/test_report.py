"""RESULTS.md generation: figures recomputed from the runs, significance marks, latency from benchmark JSON,
model sizes from safetensors headers, the plot, and one-line errors for a bad spec."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from ranker.errors import RankerError
from ranker.eval.evaluate import evaluate
from ranker.eval.report import build_report, parameters, read_spec
from ranker.io.formats import read_qrels, read_run
from ranker.measures import parse_measures

from .conftest import assert_input_error, rank

QUERIES = [f"q{i}" for i in range(12)]


def _write_run(path, order_of):
    path.write_text("".join(f"{q} Q0 {d} {r + 1} {10 - r} tag\n" for q in QUERIES
                            for r, d in enumerate(order_of(q))))
    return path


@pytest.fixture
def bundle(tmp_path):
    """Qrels where d0 is relevant: 'good' ranks it first, 'bad' last, 'mixed' first for half the queries."""
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 d0 1\n{q} 0 d1 0\n" for q in QUERIES))
    _write_run(tmp_path / "bad.trec", lambda q: ["d3", "d2", "d1", "d0"])
    _write_run(tmp_path / "good.trec",
               lambda q: ["d0", "d1", "d2", "d3"] if int(q[1:]) > 2 else ["d1", "d0", "d2", "d3"])
    _write_run(tmp_path / "mixed.trec",
               lambda q: ["d0", "d1", "d2", "d3"] if int(q[1:]) % 2 else ["d3", "d2", "d1", "d0"])
    (tmp_path / "bench.json").write_text(json.dumps({"threads": 1, "k": 4, "results": [
        {"name": "identity", "p50_ms": 0.002, "p95_ms": 0.003, "mean_ms": 0.002, "queries": 12, "repeats": 1,
         "candidates_per_query": 4.0},
        {"name": "good", "p50_ms": 12.5, "p95_ms": 20.0, "mean_ms": 13.0, "queries": 12, "repeats": 1,
         "candidates_per_query": 4.0}]}))
    model = tmp_path / "model"
    model.mkdir()
    save_file({"a": np.zeros((3, 4), dtype=np.float16), "b": np.zeros(5, dtype=np.float16)},
              str(model / "model.safetensors"))
    (model / "training.json").write_text(json.dumps({"pairs_seen": 1200, "wall_seconds": 600, "training_queries": 40,
                                                     "best": {"step": 30, "val_ndcg10": 0.61234}}))
    spec = tmp_path / "results.toml"
    spec.write_text("""
[models]
tiny = "{data}/model"

[[collection]]
key = "toy"
title = "Toy collection"
qrels = "{data}/qrels.txt"
baseline = "bad"
bench = "{data}/bench.json"

[[collection.system]]
name = "bad"
run = "{data}/bad.trec"
bench = "identity"

[[collection.system]]
name = "good"
run = "{data}/good.trec"
bench = "good"

[[collection.system]]
name = "mixed"
run = "{data}/mixed.trec"
external = true
""")
    return tmp_path, spec


def test_report_recomputes_every_figure_from_the_runs(bundle):
    root, spec = bundle
    text, results = build_report(read_spec(spec, root), root / "RESULTS.md", root / "plot.png")
    measures = parse_measures(["nDCG@10", "RR@10", "R@100"])
    runs = {n: read_run(root / f"{n}.trec") for n in ("bad", "good", "mixed")}
    expected = evaluate(read_qrels(root / "qrels.txt"), runs, measures, baseline="bad").means
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert f"{expected.loc['good', 'nDCG@10']:.4f} †" in rows["good"]  # better on all 12 queries: significant
    assert f"{expected.loc['mixed', 'nDCG@10']:.4f}" in rows["mixed (external run)"]
    assert "†" not in rows["bad — baseline"]
    assert "12.5" in rows["good"] and "20.0" in rows["good"] and rows["mixed (external run)"].endswith("| — | — |")
    assert "0.0 M" in rows["tiny"] and "1,200 pairs" in rows["tiny"] and "0.6123" in rows["tiny"]
    assert "![nDCG@10 against ms per query](plot.png)" in text
    assert (root / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results[0].table.loc["good", "p50_ms"] == 12.5


def test_parameters_are_counted_from_the_headers(bundle):
    root, _ = bundle
    assert parameters(root / "model") == 17


def test_baseline_must_be_a_system(bundle):
    root, spec = bundle
    spec.write_text(spec.read_text().replace('baseline = "bad"', 'baseline = "nope"'))
    with pytest.raises(RankerError, match="baseline 'nope'"):
        read_spec(spec, root)


def test_unknown_bench_entry_is_named(bundle):
    root, spec = bundle
    spec.write_text(spec.read_text().replace('bench = "good"', 'bench = "twinbert"'))
    with pytest.raises(RankerError, match="no entry 'twinbert'"):
        build_report(read_spec(spec, root), root / "RESULTS.md")


def test_cli_writes_results_and_refuses_a_missing_run(bundle):
    root, spec = bundle
    out = root / "out" / "RESULTS.md"
    printed = rank("report", "--spec", spec, "--data", root, "--output", out, "--plot", root / "out" / "p.png").stdout
    assert "| good |" in printed and out.read_text().startswith("# Results")
    (root / "mixed.trec").unlink()
    result = rank("report", "--spec", spec, "--data", root, "--output", root / "again.md", "--plot", root / "a.png",
                  check=False)
    assert_input_error(result, "mixed.trec")
    assert not (root / "again.md").exists()


def test_the_projects_results_spec_names_committed_files(data, monkeypatch):
    """Every run, benchmark and model that RESULTS.md is built from is in the repository (or the data)."""
    from .conftest import ROOT

    spec = read_spec(ROOT / "scripts" / "results.toml", data.resolve())
    monkeypatch.chdir(ROOT)  # the spec's own paths are relative to the repository, as scripts/reproduce.sh runs it
    for collection in spec.collections:
        for system in collection.systems:
            assert system.run.is_file(), f"{collection.key}: {system.name}: {system.run}"
            assert system.bench_file is None or system.bench_file.is_file()
        assert collection.bench is None or collection.bench.is_file()
    assert all(path.exists() for path in spec.models.values())
