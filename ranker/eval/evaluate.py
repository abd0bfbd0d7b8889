"""Evaluation of several systems on one set of judgements, with significance tests.

Per-query values come from :func:`ranker.measures.per_query` (ir-measures); a system's figure is their mean over
every query the qrels judge, a judged query missing from the run counting 0 (trec_eval's ``-c``), or with
``missing="skip"`` over the judged queries the run has (trec_eval's default). Against a baseline, each measure gets
a paired t-test per system over the queries both were evaluated on, Holm-corrected across the systems compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ranker.errors import RankerError
from ranker.measures import per_query
from ranker.types import Qrel, Ranking

ALPHA = 0.05


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (len(p) - i) * p[idx]))
        adjusted[idx] = running
    return adjusted


@dataclass
class Evaluation:
    """Mean scores per system, per-query values, and p-values against a baseline when one was given."""

    means: pd.DataFrame  # index: system, columns: measures
    queries: dict[str, pd.DataFrame]  # system -> per-query table
    pvalues: pd.DataFrame | None  # Holm-adjusted, index: system (baseline excluded), columns: measures
    baseline: str | None
    missing: dict[str, int]  # system -> judged queries its run lacks (counted 0, or left out with "skip")

    def significant(self, system: str, measure: str) -> bool:
        return (self.pvalues is not None and system in self.pvalues.index
                and bool(self.pvalues.loc[system, measure] < ALPHA))

    def long_per_query(self) -> pd.DataFrame:
        """Per-query values of every system: columns system, qid, then the measures."""
        frames = [t.reset_index().assign(system=name) for name, t in self.queries.items()]
        table = pd.concat(frames, ignore_index=True)
        return table[["system", "qid", *self.means.columns]]


MISSING = ("zero", "skip")
"""What a judged query a run lacks counts: ``zero`` (trec_eval ``-c``, the default), or ``skip`` (left out)."""


def evaluate(qrels: Sequence[Qrel], runs: Mapping[str, Ranking], measures: Sequence,
             baseline: str | None = None, missing: str = "zero") -> Evaluation:
    """Evaluate several runs on the same qrels; ``baseline`` names one of ``runs``; ``missing``: one of
    :data:`MISSING`."""
    if not qrels:
        raise RankerError("no judgements to evaluate against")
    if baseline is not None and baseline not in runs:
        raise RankerError(f"baseline {baseline!r} is not among the runs: {', '.join(runs)}")
    if missing not in MISSING:
        raise RankerError(f"missing must be one of {', '.join(MISSING)}, not {missing!r}")
    judged = {q.qid for q in qrels}
    lacking = {name: len(judged - set(run)) for name, run in runs.items()}
    queries = {name: per_query(qrels if missing == "zero" else [q for q in qrels if q.qid in run], run, measures)
               for name, run in runs.items()}
    means = pd.DataFrame({name: t.mean() for name, t in queries.items()}).T
    pvalues = None
    if baseline is not None:
        others = [name for name in runs if name != baseline]
        raw = pd.DataFrame(index=others, columns=means.columns, dtype=float)
        for name in others:
            for col in means.columns:
                a, b = queries[name][col].align(queries[baseline][col], join="inner")
                raw.loc[name, col] = _paired_t(a.to_numpy(), b.to_numpy())
        pvalues = raw.apply(lambda col: pd.Series(holm(col.to_numpy()), index=col.index)) if others else raw
    return Evaluation(means, queries, pvalues, baseline, lacking)


def _paired_t(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.allclose(a, b):
        return 1.0
    return float(stats.ttest_rel(a, b).pvalue)
