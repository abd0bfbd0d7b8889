"""A store edit run in its own process and stopped at one step of its commit (for tests/test_transactions.py).

``python -m tests.crash_edit EDIT STORE STEP [kill|pause]``: runs ``EDIT`` (add, replace, delete, compact) on the
store and, at the ``STEP``-th call of :func:`ranker.store.edit.commit_step`, kills itself with SIGKILL
(``kill``) or writes ``STORE.paused`` and waits for ``STORE.resume`` (``pause``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from ranker.store import edit as store_edit


class ToyEncoder:
    """A deterministic passage encoder with no model: 8 numbers from each text's hash."""

    dim, bounded = 8, False

    def fingerprint(self) -> str:
        return "toy-encoder"

    def encode_docs(self, texts, batch_size=8):
        return np.stack([np.frombuffer(hashlib.blake2b(t.encode(), digest_size=32).digest(), dtype=np.uint8)[:8]
                         .astype(np.float32) / 255 - 0.5 for t in texts])


DOCS = [(f"d{i}", f"passage number {i} about topic {i % 5}") for i in range(20)]
ADDED = [(f"n{i}", f"a new passage {i}") for i in range(6)]
REPLACED = [("d3", "passage three rewritten"), ("d11", "passage eleven rewritten")]
TOMBSTONED = ["d0", "d7", "d15"]
"""Deleted before the edits (so that a compaction has work)."""
DELETED = ["d1", "d19"]


def run(edit: str, path: Path) -> None:
    """The edit ``edit`` of the tests' store at ``path``."""
    if edit == "add":
        store_edit.add_to_store(ToyEncoder(), ADDED, path)
    elif edit == "replace":
        store_edit.add_to_store(ToyEncoder(), REPLACED, path, replace=True)
    elif edit == "delete":
        store_edit.delete_from_store(path, DELETED)
    else:
        store_edit.compact_store(path)


def main(edit: str, path: str, stop_at: str, how: str = "kill") -> None:
    calls, target = [0], int(stop_at)

    def step(name: str) -> None:
        calls[0] += 1
        if calls[0] != target:
            return
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        Path(f"{path}.paused").write_text(name)
        while not Path(f"{path}.resume").exists():
            time.sleep(0.02)

    store_edit.commit_step = step
    run(edit, Path(path))


if __name__ == "__main__":
    main(*sys.argv[1:])
