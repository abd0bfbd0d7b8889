"""The research decisions the recipes make, as library code: which training run ships (by its recorded validation,
within a size and a query-cost budget) and which candidate wins on validation runs (a checkpoint, a weight).

Every pick breaks ties towards the candidate given first, so a recipe's order is its tie rule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ranker.errors import RankerError
from ranker.io.artifact import shipped_megabytes
from ranker.train.fusion_weights import mean_score
from ranker.types import Qrel, Ranking

TRAINING_RECORD = "training.json"


def recorded_validation(run: str | Path) -> float:
    """The best validation nDCG@10 a training run recorded (``RUN/model/training.json``).

    Raises:
        RankerError: The run has no finished model or its record has no validation point.
    """
    record = Path(run) / "model" / TRAINING_RECORD
    try:
        return float(json.loads(record.read_text(encoding="utf-8"))["best"]["val_ndcg10"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RankerError(f"{record}: no recorded validation ({type(e).__name__}: {e})") from None


def query_cost(model: str | Path) -> int | None:
    """What a query costs a token in the model's query tower, as layers x width²: its own ``query_encoder`` when it
    has one, else the shared ``doc_encoder`` (``None`` when the folder has neither config)."""
    for tower in ("query_encoder", "doc_encoder"):
        config = Path(model) / tower / "config.json"
        if config.is_file():
            values = json.loads(config.read_text(encoding="utf-8"))
            return int(values["num_hidden_layers"]) * int(values["hidden_size"]) ** 2
    return None


def pick_trained(runs: Sequence[str | Path], max_mb: float = math.inf, max_cost: float = math.inf,
                 reference: str | Path | None = None) -> tuple[Path, dict[Path, dict]]:
    """The training run whose recorded validation is highest among those whose model is at most ``max_mb``
    megabytes as shipped and whose query tower costs at most ``max_cost`` times ``reference``'s a token.

    Returns:
        The pick and, per run, its validation, size, relative cost and whether it was eligible.

    Raises:
        RankerError: No run is within the budget, or a cost limit without a reference model.
    """
    if not math.isinf(max_cost) and reference is None:
        raise RankerError("a query-cost limit needs a reference model to compare with")
    base = query_cost(reference) if reference is not None else None
    table: dict[Path, dict] = {}
    for run in map(Path, runs):
        model = run / "model"
        cost = query_cost(model)
        relative = cost / base if cost is not None and base else None
        row = {"val_ndcg10": recorded_validation(run), "mb": shipped_megabytes(model), "cost": relative}
        row["eligible"] = row["mb"] <= max_mb and (relative is None or relative <= max_cost)
        table[run] = row
    eligible = [run for run, row in table.items() if row["eligible"]]
    if not eligible:
        raise RankerError(f"no run within {max_mb} MB and {max_cost}x the reference's query cost: "
                          + ", ".join(str(r) for r in table))
    return max(eligible, key=lambda run: (table[run]["val_ndcg10"], -eligible.index(run))), table


def pick_by_runs(candidates: Mapping[str, Mapping[str, Ranking]], qrels: Mapping[str, Sequence[Qrel]],
                 measure: str = "nDCG@10") -> tuple[str, dict[str, dict[str, float]]]:
    """The candidate with the best mean ``measure`` over the validation sets (every candidate needs a run on every
    set in ``qrels``).

    Returns:
        The pick and, per candidate, its figure on each set and their ``mean``.

    Raises:
        RankerError: A candidate lacks a run on one of the sets, or there is no candidate.
    """
    if not candidates:
        raise RankerError("no candidate to pick from")
    table = {}
    for name, runs in candidates.items():
        missing = sorted(set(qrels) - set(runs))
        if missing:
            raise RankerError(f"candidate {name!r} has no run on {', '.join(missing)}")
        row = {s: mean_score(qrels[s], runs[s], measure) for s in qrels}
        row["mean"] = sum(row.values()) / len(qrels)
        table[name] = row
    names = list(table)
    return max(names, key=lambda n: (table[n]["mean"], -names.index(n))), table
