"""Micro-batching: queries that arrive within a few milliseconds share one forward pass of the query tower.

Requests put their query on a bounded queue and await a future; one task takes the first waiting query,
collects more for up to ``max_wait_ms`` (or until ``max_batch``), and runs the batch on the model's single
worker thread. A full queue is refused at once (:class:`QueueFull`: the server answers 503 with
``Retry-After``), and a caller stops waiting after its timeout (504). A batch that fails is run again query by
query, so one bad query fails only its own request, never its neighbours.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import numpy as np


class QueueFull(Exception):
    """More queries are waiting than the queue holds."""


class QueryBatcher:
    """Batches calls of ``encode(texts) -> (len(texts), dim)`` that arrive close together.

    Args:
        encode: The batched function (the query tower).
        executor: Where it runs (one worker: the model is used by one thread at a time).
        max_batch: Most queries per forward pass.
        max_wait_ms: How long the first query of a batch waits for others.
        max_queue: Most queries waiting at once.
        on_batch: Called with each batch's size (metrics).
    """

    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray], executor: Executor, max_batch: int = 32,
                 max_wait_ms: float = 2.0, max_queue: int = 256, on_batch: Callable[[int], None] | None = None):
        self.encode, self.executor = encode, executor
        self.max_batch, self.max_wait, self.on_batch = max_batch, max_wait_ms / 1000, on_batch
        self.queue: asyncio.Queue[tuple[str, asyncio.Future]] = asyncio.Queue(maxsize=max_queue)
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def submit(self, text: str, timeout: float) -> np.ndarray:
        """The query's vector; raises :class:`QueueFull` at once, ``TimeoutError`` after ``timeout`` seconds."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((text, future))
        except asyncio.QueueFull:
            raise QueueFull from None
        return await asyncio.wait_for(future, timeout)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                except asyncio.QueueEmpty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                    except TimeoutError:
                        break
            live = [(text, future) for text, future in batch if not future.done()]  # timed out: skip
            if not live:
                continue
            if self.on_batch:
                self.on_batch(len(live))
            await self._encode(loop, live)

    async def _encode(self, loop: asyncio.AbstractEventLoop, live: list[tuple[str, asyncio.Future]]) -> None:
        """Run one batch; if it fails, run its queries one by one, so only a query that fails alone hears it."""
        try:
            vectors = await loop.run_in_executor(self.executor, self.encode, [t for t, _ in live])
        except Exception as e:
            if len(live) > 1:
                for item in live:
                    await self._encode(loop, [item])
            elif not live[0][1].done():
                live[0][1].set_exception(e)
            return
        for (_, future), vector in zip(live, vectors, strict=True):
            if not future.done():
                future.set_result(vector)
