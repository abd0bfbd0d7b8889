"""Store scale: synthetic stores of any size, and what a query costs against them (``rank bench-store``).

A synthetic store holds random unit vectors under docnos ``p00000000``…, written in chunks (memory stays flat
while it is built) with a real model's fingerprint, so ``rank run --reranker twinbert --store`` accepts it. Each
measurement runs in a fresh process: lookup (find 100 random candidates, read and dequantize their vectors) and
crossing (cosine crossing of one query vector with them) per query, p50 over many queries, the process's peak
resident memory, and the anonymous memory (not file-backed: mapped store pages the kernel can drop are not in
it) that opening and querying the store added.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ranker.store.build import TEXT_HASH, build_planned
from ranker.store.embeddings import EmbeddingStore, text_hashes
from ranker.store.quantization import quantization_rule, quantize

CHUNK = 65_536


def docno(row: int) -> str:
    return f"p{row:08d}"


def synthetic_store(path: str | Path, rows: int, dim: int = 384, dtype: str = "float16",
                    fingerprint: str = "synthetic", seed: int = 0) -> EmbeddingStore:
    """A store of ``rows`` random unit vectors (the same rows for the same seed, whatever the size)."""
    plan = {"dim": dim, "dtype": dtype, "quantization": quantization_rule(dtype, False),
            "model_fingerprint": fingerprint, "batch_size": CHUNK, "text_hash": TEXT_HASH}

    def fill(build) -> None:
        for start in range(build.rows, rows, CHUNK):
            count = min(CHUNK, rows - start)
            vectors = np.random.default_rng([seed, start]).standard_normal((count, dim), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            names = [docno(start + i) for i in range(count)]
            hashes = text_hashes(names)
            build.append([(names, *quantize(vectors, plan["quantization"]), hashes)])

    return build_planned(path, plan, fill)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _anonymous_mb() -> float:
    """Resident memory not backed by a file (heap, Python objects): mapped store pages are not in it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(path: str | Path, candidates: int = 100, queries: int = 500, seed: int = 0, warm: bool = False) -> dict:
    """Lookup and crossing ms per query (p50, p95) and peak memory, in this process; ``warm``: after
    :meth:`EmbeddingStore.warm` (every page mapped, as in a server that has run a while), else cold (each
    lookup faults in the pages it touches first)."""
    import torch

    from ranker.models.layers import CosineCrossing

    torch.set_num_threads(1)
    crossing = CosineCrossing(10.0)
    before, anonymous_before = _rss_mb(), _anonymous_mb()
    opened = time.perf_counter()
    store = EmbeddingStore.load(path)
    rows = store.row_count
    open_ms = 1000 * (time.perf_counter() - opened)
    if warm:
        store.warm()
    rng = np.random.default_rng(seed)
    lookup, cross = [], []
    for _ in range(queries):
        wanted = [docno(int(r)) for r in rng.integers(0, rows, candidates)]
        query = torch.from_numpy(rng.standard_normal(store.dim, dtype=np.float32))
        started = time.perf_counter()
        vectors = store.lookup(wanted)
        looked = time.perf_counter()
        with torch.inference_mode():
            crossing(query, torch.from_numpy(vectors))
        lookup.append(1000 * (looked - started))
        cross.append(1000 * (time.perf_counter() - looked))
    return {"rows": rows, "dim": store.dim, "dtype": store.dtype, "candidates": candidates, "queries": queries,
            "warm": warm,
            "open_ms": open_ms, "lookup_p50_ms": float(np.percentile(lookup, 50)),
            "lookup_p95_ms": float(np.percentile(lookup, 95)), "crossing_p50_ms": float(np.percentile(cross, 50)),
            "store_mb": store.size_bytes() / 1e6, "peak_rss_mb": _rss_mb(), "rss_before_open_mb": before,
            "anonymous_mb_added": _anonymous_mb() - anonymous_before}


def measure_apart(path: str | Path, candidates: int = 100, queries: int = 500, warm: bool = False) -> dict:
    """:func:`measure` in a fresh Python process (its peak memory is the store's alone)."""
    code = (f"import json; from ranker.eval.scale import measure; "
            f"print(json.dumps(measure({str(path)!r}, {candidates}, {queries}, warm={warm})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
