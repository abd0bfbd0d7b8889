"""Measures by name, computed by ir-measures: the vocabulary every layer that scores a ranking shares.

Each measure is computed by the first ir-measures provider that supports it (``ir_measures.DefaultPipeline``):
pytrec_eval, i.e. trec_eval's definitions, for nDCG@k and R@k; the MS MARCO evaluation script's definition for
RR@k, which trec_eval's ``recip_rank`` cannot cut off. :func:`providers` records which one served each measure.
Significance tests and tables over several systems are :mod:`ranker.eval.evaluate`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import ir_measures
import pandas as pd

from ranker.errors import RankerError
from ranker.types import Qrel, Ranking


def parse_measures(names: Sequence[str], rel_level: int | None = None) -> list:
    """Parse ir-measures strings; ``rel_level`` sets ``rel`` on every measure that takes it (RR, R, P, AP…)."""
    if rel_level is not None and rel_level < 1:
        raise RankerError(f"rel_level (--rel-level) must be at least 1 (the lowest grade counted relevant), "
                          f"got {rel_level}")
    parsed = []
    for name in names:
        try:
            measure = ir_measures.parse_measure(name)
        except (ValueError, NameError, SyntaxError) as e:
            raise RankerError(f"bad measure {name!r}: {e}") from None
        if rel_level is not None and "rel" in measure.SUPPORTED_PARAMS:
            measure = measure(rel=rel_level)
        for param in ("cutoff", "rel"):  # 0 aborts the C evaluator (cutoff) or counts every grade relevant (rel)
            value = measure.params.get(param)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise RankerError(f"bad measure {str(measure)!r}: {param} must be a whole number of at least 1, "
                                  f"got {value!r}")
        parsed.append(measure)
    return parsed


def provider(measure):
    """The ir-measures provider that computes ``measure`` (the default pipeline's first that supports it)."""
    for candidate in ir_measures.DefaultPipeline.providers:
        if candidate.supports(measure):
            return candidate
    raise RankerError(f"no installed ir-measures provider computes {measure}")


def providers(measures: Sequence) -> dict[str, str]:
    """Measure -> name of the provider that computes it, for run metadata."""
    return {str(m): provider(m).NAME for m in measures}


def per_query(qrels: Sequence[Qrel], run: Ranking, measures: Sequence) -> pd.DataFrame:
    """One row per query, one column per measure (named as ir-measures prints it)."""
    judged = [ir_measures.Qrel(q.qid, q.docno, q.relevance) for q in qrels]
    scored = [ir_measures.ScoredDoc(d.qid, d.docno, d.score) for docs in run.values() for d in docs]
    rows = [(m.query_id, str(m.measure), m.value)
            for measure in measures for m in provider(measure).iter_calc([measure], judged, scored)]
    frame = pd.DataFrame(rows, columns=["qid", "measure", "value"])
    table = frame.pivot(index="qid", columns="measure", values="value")
    return table.reindex(columns=[str(m) for m in measures])
