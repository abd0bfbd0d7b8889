"""What this CPU is: its name, feature flags and the kernels they decide (bfloat16, int8 sums), read once from
Linux's ``/proc/cpuinfo`` (elsewhere empty, and each question answers on the safe side)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

VECTOR_EXTENSIONS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
"""The CPU flags that decide which kernels torch and ONNX Runtime run (int8 dot products, bfloat16)."""
X86 = {"x86_64", "amd64", "i386", "i686", "x86"}


@functools.cache
def _fields() -> dict[str, str]:
    """``/proc/cpuinfo``'s first processor as ``field -> value``; empty where it is unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (x86 ``flags``, Arm ``Features``)."""
    fields = _fields()
    return frozenset((fields.get("flags") or fields.get("Features") or "").split())


def cpu_name() -> str:
    """This CPU's model name."""
    return _fields().get("model name") or platform.processor() or "unknown CPU"


def native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    return not cpu_flags().isdisjoint({"avx512_bf16", "amx_bf16"})


def int8_reduce_range() -> bool:
    """Whether int8 weights keep 7 bits (ONNX Runtime's ``reduce_range``): on an x86 CPU without VNNI the
    uint8 x int8 kernels add pairs of products in 16 bits, which saturate on mpnet's activations (student v3's
    int8 tower gave cosines of -0.04 to 0.16 against PyTorch on an AVX2 CPU, 0.996 with 7-bit weights). VNNI
    (AVX512-VNNI, AVX-VNNI, AMX-INT8) adds in 32 bits, and other CPUs are not x86: they keep 8 bits. An x86 CPU
    whose flags cannot be read gets 7 bits."""
    if platform.machine().lower() not in X86:
        return False
    return cpu_flags().isdisjoint({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_info() -> dict:
    """This CPU's model name, logical cores, which of :data:`VECTOR_EXTENSIONS` it has and the int8 graphs'
    weight bits here (:func:`int8_reduce_range`): absolute times depend on them."""
    flags = cpu_flags()
    return {"model": cpu_name(), "cores": os.cpu_count(),
            "vector_extensions": [f for f in VECTOR_EXTENSIONS if f in flags],
            "int8_weight_bits": 7 if int8_reduce_range() else 8}
