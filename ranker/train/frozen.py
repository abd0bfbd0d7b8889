"""A frozen passage side: training reads passage vectors from embedding stores instead of encoding passages.

With the passages' vectors fixed (an asymmetric TwinBERT's bi-encoder side, :mod:`ranker.models.twinbert`), a
training step costs only the queries' encodings and the crossings, so the query side can be trained to
convergence on a CPU. Training and validation ids carry their dataset's prefix (``scifact:…``); stores hold the
collection's own ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ranker.errors import RankerError
from ranker.io.datasets import strip_prefix
from ranker.store.embeddings import DocEncoder, EmbeddingStore


class StoreVectors:
    """Passage vectors from one or more stores of one model, looked up in the order the stores are given.

    Raises:
        StoreMismatchError: A store was built by another model than ``model``.
    """

    def __init__(self, stores: Sequence[str | Path], model: DocEncoder):
        if not stores:
            raise RankerError("a frozen passage side needs at least one embedding store")
        self.stores = [EmbeddingStore.load(path, model) for path in stores]

    def __call__(self, docnos: Sequence[str]) -> torch.Tensor:
        """Float32 vectors ``(len(docnos), dim)`` in the order given.

        Raises:
            RankerError: A docno none of the stores holds (the count and the first few are named).
        """
        ids = [strip_prefix(d) for d in docnos]
        out = np.zeros((len(ids), self.stores[0].dim), dtype=np.float32)
        todo = np.arange(len(ids))
        for store in self.stores:
            if not len(todo):
                break
            rows = store.rows_of([ids[i] for i in todo])
            found = np.array([row is not None for row in rows], dtype=bool)
            if found.any():
                out[todo[found]] = store.lookup_rows([row for row in rows if row is not None])
            todo = todo[~found]
        if len(todo):
            raise RankerError(f"{len(todo)} passage(s) are in none of the stores "
                              f"{', '.join(str(s.path) for s in self.stores)}: "
                              f"{', '.join(ids[i] for i in todo[:5])} (encode them: rank encode --add)")
        return torch.from_numpy(out)
