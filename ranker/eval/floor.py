"""The hardware floor of one query encoding: its FLOPs over this CPU's measured matrix-multiply throughput.

A BERT-style encoder layer over ``n`` tokens of width ``h`` with a feed-forward width ``f`` does, counting a
multiply-add as two FLOPs: the Q, K, V and output projections ``4 · 2 n h²``, the attention scores and their
weighted sum ``2 · 2 n² h``, and the feed-forward block ``2 · 2 n h f``. Embedding lookups, layer norms,
softmax and pooling are left out (a few percent at these sizes), so the floor is a lower bound.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass


def encoder_flops(tokens: int, layers: int, hidden: int, intermediate: int) -> int:
    """FLOPs of one forward pass of ``layers`` transformer layers over ``tokens`` tokens."""
    per_layer = 8 * tokens * hidden * hidden + 4 * tokens * tokens * hidden + 4 * tokens * hidden * intermediate
    return layers * per_layer


def matmul_gflops(size: int = 1024, seconds: float = 1.0) -> float:
    """Sustained float32 GFLOP/s of ``size x size`` matrix multiplies on the threads torch uses now."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        torch.mm(a, b)
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        torch.mm(a, b)
        runs += 1
    return 2 * size**3 * runs / elapsed / 1e9


@dataclass(frozen=True)
class Floor:
    """The floor of one query encoding on this CPU."""

    tokens: int
    layers: int
    hidden: int
    intermediate: int
    mflops: float
    gflops_per_s: float
    threads: int
    floor_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def query_floor(config, tokens: int, threads: int) -> Floor:
    """The float32 floor for an encoder ``config`` (a Hugging Face config) over ``tokens`` tokens, measured on
    the torch threads the command set (``threads`` records how many)."""
    flops = encoder_flops(tokens, config.num_hidden_layers, config.hidden_size, config.intermediate_size)
    rate = matmul_gflops()
    return Floor(tokens, config.num_hidden_layers, config.hidden_size, config.intermediate_size, flops / 1e6, rate,
                 threads, flops / (rate * 1e9) * 1000)
