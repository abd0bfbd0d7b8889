"""How a store keeps vectors: float16, or one byte a dimension (int8), and how the codes read back.

``float16`` is a cast. ``int8`` picks ``int8-tanh256`` when the model's vectors lie in [-1, 1] (a tanh
projection: TwinBERT's production 256 levels) and ``int8-absmax`` (a float32 scale per vector) otherwise.
"""

from __future__ import annotations

import numpy as np

from ranker.errors import RankerError

QUANTIZATION = {
    "float16": "code = float16(v); dequantize: float32(code)",
    "int8-absmax": "per vector: scale = max|v| / 127 (scales.npy, float32; 1 for a zero vector), "
                   "code = round(v / scale) in [-127, 127]; dequantize: code * scale",
    "int8-tanh256": "256 uniform levels over [-1, 1] (tanh outputs): code = round((v + 1) * 127.5) - 128 "
                    "in [-128, 127]; dequantize: (code + 128) / 127.5 - 1",
}
"""Quantization rules by name: how codes are made and read back (recorded in ``ranker.json``)."""



def quantization_rule(dtype: str, bounded: bool) -> str:
    """The rule for a stored ``dtype``: ``float16``, or for ``int8`` the tanh levels when vectors are bounded."""
    if dtype == "float16":
        return "float16"
    if dtype == "int8":
        return "int8-tanh256" if bounded else "int8-absmax"
    raise RankerError(f"store dtype must be 'float16' or 'int8', got {dtype!r}")


def quantize(vectors: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes (and per-vector scales for ``int8-absmax``) of float vectors ``(n, dim)``."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if rule == "float16":
        return vectors.astype(np.float16), None
    if rule == "int8-tanh256":
        return (np.rint((vectors + 1) * np.float32(127.5)) - 128).clip(-128, 127).astype(np.int8), None
    scales = np.abs(vectors).max(axis=1) / np.float32(127)
    scales[scales == 0] = 1
    return np.rint(vectors / scales[:, None]).clip(-127, 127).astype(np.int8), scales


def dequantize(codes: np.ndarray, scales: np.ndarray | None, rule: str) -> np.ndarray:
    """Float32 vectors back from codes (inverse of :func:`quantize` up to rounding)."""
    values = np.asarray(codes, dtype=np.float32)
    if rule == "float16":
        return values
    if rule == "int8-tanh256":
        return (values + 128) / np.float32(127.5) - 1
    return values * np.asarray(scales, dtype=np.float32)[:, None]
