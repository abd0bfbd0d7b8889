"""Saving a run with its JSON sidecar: the full configuration, versions, data paths and timing."""

from __future__ import annotations

import datetime as dt
import platform
import sys
from pathlib import Path
from typing import Any

from ranker._version import __version__
from ranker.interrupt import deferred
from ranker.io.atomic import write_json
from ranker.io.formats import write_run
from ranker.types import Ranking


def sidecar_path(run_path: str | Path) -> Path:
    """``runs/NAME.trec`` -> ``runs/NAME.trec.json``."""
    run_path = Path(run_path)
    return run_path.with_name(run_path.name + ".json")


def timing(seconds: float, queries: int) -> dict[str, float]:
    return {"wall_seconds": round(seconds, 3), "queries": queries,
            "ms_per_query": round(1000 * seconds / max(queries, 1), 3)}


def command_line() -> str:
    """The command as a user would type it: ``rank ...`` for the console script and ``python -m ranker``."""
    program = "rank" if Path(sys.argv[0]).name in {"rank", "__main__.py"} else sys.argv[0]
    return " ".join([program, *sys.argv[1:]])


def save_run(ranking: Ranking, path: str | Path, tag: str, metadata: dict[str, Any]) -> Path:
    """Write the TREC run and its sidecar (each atomically, and a signal meanwhile waits until both are written,
    so that a run never stands beside the previous run's sidecar); returns the sidecar's path."""
    meta = {
        "run": str(path),
        "tag": tag,
        "ranker_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": command_line(),
        "queries": len(ranking),
        "documents": sum(len(d) for d in ranking.values()),
        **metadata,
    }
    side = sidecar_path(path)
    with deferred():
        write_run(ranking, path, tag)
        write_json(side, meta)
    return side
