"""Encoding a store on Ray (``rank encode --engine ray``, the optional extra ``ranker[ray]``).

Ray Data holds the collection as rows of whole encoder batches — the same ``batch_size`` consecutive passages a
single :func:`ranker.store.build.build_store` encodes together — and ``map_batches`` runs the document
tower in a pool of actors, each loading the model once. The driver reads the rows back in collection order
(``preserve_order``) and commits them into the store as a single build does, so the store is the single build's
(the same bytes where every actor runs the driver's thread count on the same kind of CPU) and an interrupted
encode resumes from its last committed chunk. The driver reads the collection (the project's readers, with
their errors), so the collection must fit its memory; beyond that, encode shards (``--shard I/N``) on each
machine and merge them, which gives the same store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ranker.errors import RankerError
from ranker.store.build import build_planned, docno_text, encoder_plan, skip_committed
from ranker.store.embeddings import DocEncoder, EmbeddingStore, text_hashes
from ranker.store.quantization import quantize
from ranker.store.windows import window_rows, windowing_of
from ranker.types import Doc


class _DocTower:
    """A Ray actor: one model load, then one encoder batch per call."""

    def __init__(self, encoder: Callable[[], DocEncoder], threads: int):
        import torch

        torch.set_num_threads(threads)
        self.model = encoder()

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = [np.asarray(self.model.encode_docs(list(texts), len(texts)), dtype=np.float32).tobytes()
                   for texts in rows["texts"]]
        return {"batch": rows["batch"], "vectors": np.array(vectors, dtype=object)}


def build_store_ray(encoder: Callable[[], DocEncoder], docs: Iterable[Doc | tuple[str, str]], path: str | Path,
                    dtype: str = "float16", batch_size: int = 64, workers: int = 2, threads: int = 1,
                    address: str | None = None, chunk_size: int = 4096, windows: bool = False,
                    stride: int | None = None) -> EmbeddingStore:
    """Encode ``docs`` into a store at ``path`` with ``workers`` Ray actors of ``threads`` CPU threads each.

    Args:
        encoder: Makes the document encoder, once in the driver (for the build plan) and once in each actor: a
            picklable callable, e.g. ``functools.partial(ranker.models.loading.doc_encoder, "twinbert", path)``.
        windows, stride: As :func:`ranker.store.build.build_store`'s (the driver splits documents into windows).
        address: A running cluster (``ray start --head`` prints it; ``auto`` finds a local one); ``None``
            starts a local Ray instance with ``workers * threads`` CPUs and stops it afterwards.

    Raises:
        RankerError: Ray is not installed (``pip install 'ranker[ray]'``), or as :func:`build_store`.
    """
    try:
        import ray
    except ImportError:
        raise RankerError("--engine ray needs Ray: pip install 'ranker[ray]'") from None
    driver_model = encoder()
    plan = encoder_plan(driver_model, dtype, batch_size)
    windowing = windowing_of(driver_model, windows, stride)
    if windowing is not None:
        plan["windows"] = windowing.plan()
    dim = plan["dim"]
    del driver_model
    started = not ray.is_initialized()
    if started and address and address != "auto":
        check_reachable(address)
    if started:
        ray.init(address=address, num_cpus=None if address else workers * threads, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)

    def fill(build) -> None:
        items = window_rows(map(docno_text, docs), windowing, {})
        build.cut = skip_committed(items, build)
        remaining = list(items)
        batches = [remaining[i:i + batch_size] for i in range(0, len(remaining), batch_size)]
        if not batches:
            return
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        rows = ray.data.from_items([{"batch": b, "texts": [r[1] for r in batch]} for b, batch in enumerate(batches)])
        encoded = rows.map_batches(_DocTower, fn_constructor_kwargs={"encoder": encoder, "threads": threads},
                                   batch_size=1, concurrency=workers, num_cpus=threads)
        pending: list = []
        for expected, row in enumerate(encoded.iter_rows()):
            if row["batch"] != expected:
                raise RankerError(f"Ray returned batch {row['batch']} where batch {expected} was due")
            batch = batches[expected]
            vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(len(batch), dim)
            hashes = text_hashes(r[2] for r in batch)
            windows = np.array([(r[3], r[4]) for r in batch], dtype=np.int32)
            build.cut += sum(r[4] == 1 and r[1] != r[2] for r in batch)
            pending.append(([r[0] for r in batch], *quantize(vectors, plan["quantization"]), hashes, windows))
            if sum(len(p[0]) for p in pending) >= chunk_size:
                build.append(pending)
                pending = []
        build.append(pending)

    try:
        return build_planned(path, plan, fill)
    finally:
        if started:
            ray.shutdown()


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a cluster address where no Ray answers within ``timeout`` seconds: nothing listening, or something
    other than Ray's gRPC (an HTTP/2 server, whose first frame answering a client's preface is SETTINGS), where
    ``ray.init`` would wait on for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    hint = "start one with 'ray start --head' or leave --address out for a local one"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(HTTP2_PREFACE + HTTP2_EMPTY_SETTINGS)
            frame = b""
            while len(frame) < 9:
                part = sock.recv(9 - len(frame))
                if not part:
                    break
                frame += part
    except (OSError, ValueError) as e:
        raise RankerError(f"cannot reach a Ray cluster at {address} ({e or 'no answer'}); {hint}") from None
    if len(frame) < 9 or frame[3] != 0x4:
        raise RankerError(f"{address} answers, but not as a Ray cluster does (no gRPC server there); {hint}")


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HTTP2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
"""A client's HTTP/2 connection preface and empty SETTINGS frame (RFC 9113, 3.4): a gRPC server answers with its
own SETTINGS frame (type 4)."""
