from __future__ import annotations

import math

import numpy as np
import pytest
import pytrec_eval

from ranker.errors import RankerError
from ranker.eval.evaluate import evaluate, holm
from ranker.io import formats
from ranker.measures import parse_measures, providers
from ranker.types import Qrel, ScoredDoc

QRELS = [Qrel("q1", "d1", 2), Qrel("q1", "d2", 0), Qrel("q1", "d3", 1), Qrel("q2", "d5", 1)]
RUN = {"q1": [ScoredDoc("q1", "d2", 3.0), ScoredDoc("q1", "d1", 2.0), ScoredDoc("q1", "d3", 1.0)],
       "q2": [ScoredDoc("q2", "d6", 2.0), ScoredDoc("q2", "d7", 1.0)]}


def test_golden_values_by_hand():
    result = evaluate(QRELS, {"sys": RUN}, parse_measures(["nDCG@10", "RR@10", "R@100"]))
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 + 1 / math.log2(3)
    q1 = result.queries["sys"].loc["q1"]
    assert q1["nDCG@10"] == pytest.approx(dcg / idcg)
    assert q1["RR@10"] == pytest.approx(0.5)
    assert q1["R@100"] == pytest.approx(1.0)
    assert result.means.loc["sys", "nDCG@10"] == pytest.approx(dcg / idcg / 2)


def test_rel_level_applies_to_binary_measures_only():
    measures = parse_measures(["nDCG@10", "RR@10", "R@100"], rel_level=2)
    assert [str(m) for m in measures] == ["nDCG@10", "RR(rel=2)@10", "R(rel=2)@100"]
    result = evaluate(QRELS, {"sys": RUN}, measures)
    assert result.queries["sys"].loc["q1", "R(rel=2)@100"] == pytest.approx(1.0)  # d3 (grade 1) not counted


def test_bad_measure_is_an_input_error():
    with pytest.raises(RankerError, match="bad measure"):
        parse_measures(["nDCG@@10"])


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == pytest.approx([0.5])


def test_dl19_bm25_reference_figures(data):
    msmarco = data / "msmarco-passage"
    qrels = formats.read_qrels(msmarco / "qrels" / "dl19.txt")
    run = formats.read_run(msmarco / "runs" / "bm25.dl19.top100.trec")
    measures = parse_measures(["nDCG@10", "RR@10", "R@100"])
    means = evaluate(qrels, {"bm25": run}, measures).means.loc["bm25"]
    assert round(means["nDCG@10"], 4) == 0.5058
    assert round(means["RR@10"], 4) == 0.8233
    assert round(means["R@100"], 4) == 0.4531
    assert providers(measures) == {"nDCG@10": "pytrec_eval", "RR@10": "msmarco", "R@100": "pytrec_eval"}


def test_ndcg_and_recall_agree_with_trec_eval_per_query(data):
    msmarco = data / "msmarco-passage"
    qrels = formats.read_qrels(msmarco / "qrels" / "dl19.txt")
    run = formats.read_run(msmarco / "runs" / "tasb.dl19.top100.trec")
    ours = evaluate(qrels, {"tasb": run}, parse_measures(["nDCG@10", "R@100"])).queries["tasb"]
    judged: dict = {}
    for q in qrels:
        judged.setdefault(q.qid, {})[q.docno] = q.relevance
    scored = {qid: {d.docno: d.score for d in docs} for qid, docs in run.items()}
    theirs = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut_10", "recall_100"}).evaluate(scored)
    assert sorted(ours.index) == sorted(theirs)
    for qid, row in ours.iterrows():
        assert row["nDCG@10"] == pytest.approx(theirs[qid]["ndcg_cut_10"])
        assert row["R@100"] == pytest.approx(theirs[qid]["recall_100"])


def test_significance_against_baseline(data):
    msmarco = data / "msmarco-passage"
    qrels = formats.read_qrels(msmarco / "qrels" / "dl19.txt")
    runs = {name: formats.read_run(msmarco / "runs" / f"{name}.dl19.top100.trec")
            for name in ["bm25", "bm25-rm3", "splade-pp-ed"]}
    result = evaluate(qrels, runs, parse_measures(["nDCG@10"]), baseline="bm25")
    assert list(result.pvalues.index) == ["bm25-rm3", "splade-pp-ed"]
    assert result.significant("splade-pp-ed", "nDCG@10")
    assert not result.significant("bm25-rm3", "nDCG@10")
    assert not result.significant("bm25", "nDCG@10")
    raw = result.pvalues.loc["splade-pp-ed", "nDCG@10"]
    assert 0 < raw < 0.05 and np.isfinite(raw)


def test_unknown_baseline():
    with pytest.raises(RankerError, match="baseline 'x'"):
        evaluate(QRELS, {"sys": RUN}, parse_measures(["nDCG@10"]), baseline="x")


def test_a_judged_query_missing_from_the_run_counts_zero():
    only_q1 = {"q1": RUN["q1"]}
    result = evaluate(QRELS, {"sys": only_q1}, parse_measures(["nDCG@10", "RR@10", "R@100"]))
    table = result.queries["sys"]
    assert sorted(table.index) == ["q1", "q2"] and (table.loc["q2"] == 0).all()
    assert result.means.loc["sys", "RR@10"] == pytest.approx(0.25)
    assert result.missing == {"sys": 1}


def test_a_partial_run_can_be_scored_on_its_own_queries():
    """trec_eval's default: ``missing="skip"`` averages over the judged queries the run has."""
    only_q1 = {"q1": RUN["q1"]}
    measures = parse_measures(["RR@10"])
    skipped = evaluate(QRELS, {"sys": only_q1, "full": RUN}, measures, baseline="full", missing="skip")
    assert list(skipped.queries["sys"].index) == ["q1"] and skipped.means.loc["sys", "RR@10"] == pytest.approx(0.5)
    assert skipped.missing == {"sys": 1, "full": 0}
    with pytest.raises(RankerError, match="missing must be one of"):
        evaluate(QRELS, {"sys": RUN}, measures, missing="drop")


def test_rank_evaluate_warns_of_a_partial_run_and_orders_rows_as_given(tmp_path):
    from .conftest import rank

    qrels, full, partial = tmp_path / "qrels.txt", tmp_path / "zeta.trec", tmp_path / "alpha.trec"
    formats.write_qrels(QRELS, qrels)
    full.write_text("".join(f"{d.qid} Q0 {d.docno} {i + 1} {d.score} t\n" for docs in RUN.values()
                            for i, d in enumerate(docs)))
    partial.write_text("".join(f"{d.qid} Q0 {d.docno} {i + 1} {d.score} t\n" for i, d in enumerate(RUN["q1"])))
    result = rank("evaluate", "--qrels", qrels, full, partial, "--measures", "RR@10", "--format", "csv")
    assert "alpha.trec lacks 1 of the 2 judged queries: they count 0" in result.stderr
    rows = [line.split(",") for line in result.stdout.splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("zeta", "2", "0.2500"), ("alpha", "2", "0.2500")]
    result = rank("evaluate", "--qrels", qrels, full, partial, "--measures", "RR@10", "--format", "csv",
                  "--missing", "skip", "--sort", "RR@10")
    assert "are left out of its figures" in result.stderr
    rows = [line.split(",") for line in result.stdout.splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("alpha", "1", "0.5000"), ("zeta", "2", "0.2500")]
