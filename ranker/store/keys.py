"""The sorted, hashed key indexes of an embedding store (docnos and text hashes): memory-mapped, so finding 100
candidates costs about one probe each whatever the store's size (:mod:`ranker.store.embeddings`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ranker.io.atomic import atomic_open


def docno_keys(docnos: Sequence[str]) -> np.ndarray:
    """Docnos as fixed-width UTF-8 bytes, the keys of the docno index."""
    return np.array([d.encode("utf-8") for d in docnos], dtype=np.bytes_)


def hash_keys(hashes: np.ndarray) -> np.ndarray:
    """``(n, 16)`` text hashes keyed by their first 8 bytes (``uint64``; a match is checked on all 16)."""
    return np.ascontiguousarray(np.asarray(hashes, dtype=np.uint8)[:, :8]).view(np.uint64).ravel()


def _key_hash(keys: np.ndarray) -> np.ndarray:
    """64-bit hashes of fixed-width keys (FNV-1a over 8-byte words, then a shift-xor), vectorised; a ``uint64``
    key (a text hash's prefix, already uniform) is its own hash."""
    if keys.dtype == np.uint64:
        return keys.astype(np.uint64)
    width = keys.dtype.itemsize
    padded = np.zeros((len(keys), -(-width // 8) * 8), dtype=np.uint8)
    padded[:, :width] = np.frombuffer(np.ascontiguousarray(keys).tobytes(), dtype=np.uint8).reshape(-1, width)
    hashes = np.full(len(keys), 0xCBF29CE484222325, dtype=np.uint64)
    for word in padded.view(np.uint64).T:
        hashes = (hashes ^ word) * np.uint64(0x100000001B3)
        hashes ^= hashes >> np.uint64(29)
    return hashes


class SortedIndex:
    """Keys sorted, with the row each came from, and an open-addressing hash table over them (``slots``: the
    sorted position + 1 of each distinct key's first occurrence, 0 for an empty slot, at most half full): a key is
    found in about one probe, whatever the store's size (memory-mapped on disk)."""

    def __init__(self, keys: np.ndarray, order: np.ndarray, slots: np.ndarray | None = None):
        self.keys, self.order = keys, order
        self.slots = slots if slots is not None else self._slots(keys)

    @staticmethod
    def _slots(keys: np.ndarray) -> np.ndarray:
        first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else np.zeros(0, int)
        size = 1 << max(3, int(np.ceil(np.log2(max(2 * len(first), 1)))))
        slots = np.zeros(size, dtype=np.int64)
        hashes = _key_hash(keys[first])
        pending, probe = np.arange(len(first)), 0
        while len(pending):  # each round, every key still unplaced tries its next slot; one wins a contested slot
            at = ((hashes[pending] + np.uint64(probe)) & np.uint64(size - 1)).astype(np.int64)
            free = slots[at] == 0
            taken, winners = np.unique(at[free], return_index=True)
            placed = pending[free][winners]
            slots[taken] = first[placed] + 1
            pending = np.setdiff1d(pending, placed, assume_unique=True)
            probe += 1
        return slots

    @classmethod
    def of(cls, keys: np.ndarray, rows: np.ndarray | None = None) -> SortedIndex:
        """The index of ``keys``, key ``i`` at row ``rows[i]`` (default: row ``i``)."""
        order = np.argsort(keys, kind="stable")
        return cls(keys[order], order.astype(np.int64) if rows is None else np.asarray(rows, dtype=np.int64)[order])

    @classmethod
    def open(cls, folder: Path, files: dict[str, str], kind: str, rows: int, windowed: bool = False
             ) -> SortedIndex | None:
        """The ``kind`` index (``docno`` or ``hash``) named in ``files`` in ``folder``, or ``None`` when it is
        absent (a store built before indexes were kept) or not of these ``rows`` (then built in memory); a
        ``windowed`` store's index holds each document's first row only, so fewer keys than rows."""
        paths = [folder / files[f"{kind}_{part}"] for part in ("keys", "order", "slots")]
        if not paths[0].is_file():
            return None
        keys, order, slots = (np.lib.format.open_memmap(p, mode="r") for p in paths)
        fits = len(keys) == len(order) and (len(keys) <= rows if windowed else len(keys) == rows)
        return cls(keys, order, slots) if fits else None

    def save(self, folder: Path, files: dict[str, str], kind: str) -> None:
        """Write the index as the ``kind`` files named in ``files``, each whole and fsynced."""
        for part, array in (("keys", self.keys), ("order", self.order), ("slots", self.slots)):
            with atomic_open(folder / files[f"{kind}_{part}"], "wb") as f:
                np.save(f, array)

    def _positions(self, cut: np.ndarray) -> np.ndarray:
        """The sorted position of each key's first occurrence, -1 where there is none (hash-table probes)."""
        found = np.full(len(cut), -1, dtype=np.int64)
        hashes, mask = _key_hash(cut), np.uint64(len(self.slots) - 1)
        pending, probe = np.arange(len(cut)), 0
        while len(pending):
            slot = np.asarray(self.slots[((hashes[pending] + np.uint64(probe)) & mask).astype(np.int64)])
            occupied = slot > 0
            match = occupied.copy()
            match[occupied] = self.keys[slot[occupied] - 1] == cut[pending[occupied]]
            found[pending[match]] = slot[match] - 1
            pending = pending[occupied & ~match]
            probe += 1
        return found

    def find(self, wanted: np.ndarray, deleted: frozenset[int] = frozenset()) -> list[int | None]:
        """The row of each key (the latest live one where a key repeats), ``None`` where there is none."""
        count = len(self.keys)
        if not count or not len(wanted):
            return [None] * len(wanted)
        fits = (np.char.str_len(wanted) <= self.keys.dtype.itemsize if wanted.dtype.kind == "S"  # a longer key
                else np.ones(len(wanted), dtype=bool))  # is in no row (cut to the width, it could match a prefix)
        cut = wanted.astype(self.keys.dtype)
        left = self._positions(cut)
        at = np.maximum(left, 0)
        hit = fits & (left >= 0)
        repeated = hit & (left + 1 < count) & (self.keys[np.minimum(left + 1, count - 1)] == cut)
        rows = np.where(hit, self.order[at], -1).tolist()
        found: list[int | None] = []
        for i, row in enumerate(rows):
            if row >= 0 and (repeated[i] or row in deleted):  # a repeated key (--replace): the latest live row
                end = int(np.searchsorted(self.keys, cut[i], side="right"))
                live = [int(r) for r in self.order[left[i]:end] if int(r) not in deleted]
                row = max(live) if live else -1
            found.append(row if row >= 0 else None)
        return found
