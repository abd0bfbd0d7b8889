"""Whole documents in a store: a document longer than the passage encoder's window is split into overlapping
windows (MaxP, Dai & Callan 2019), each window a row of the same docno, the rows of one document contiguous.

The window is the encoder's own passage length (a TwinBERT student's ``doc_max_length``, a bi-encoder's
``max_length``) less its special tokens; the stride is half a window unless given. A document is tokenized whole
once (``return_offsets_mapping``) and each window's text is the substring its tokens span (its ends moved to word
boundaries, so the window reads as the same tokens again); a document that fits is one row, its text as given, as
a store built without windows holds it. Every row of a document carries the digest of the whole document's text
(so a server sent the whole text finds its windows), and ``windows.npy`` (``(rows, 2)`` int32: each row's window
ordinal and its document's window count) says which rows belong together; a store none of whose documents was
split has no such file (:mod:`ranker.store.embeddings`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ranker.errors import RankerError

WINDOWS = "windows.npy"
ROW = tuple[str, str, str, int, int]
"""A row to encode: ``(docno, text encoded, whole document's text, window ordinal, windows of the document)``."""


@dataclass(frozen=True)
class Windowing:
    """How a build cuts documents: ``tokens`` of text a window holds, ``stride`` tokens between window starts, and
    the tokenizer counting them; ``split`` False: a long document is cut to its first window (counted as cut)."""

    tokenizer: Any
    tokens: int
    stride: int
    split: bool = True
    model_max_length: int = 0

    def plan(self) -> dict:
        """What the store records as ``windows`` (``split`` false: long documents were cut, ``stride`` null)."""
        return {"split": self.split, "tokens": self.tokens, "stride": self.stride if self.split else None,
                "model_max_length": self.model_max_length}


def passage_tokenizer(model: Any) -> tuple[Any, int] | None:
    """The tokenizer and the passage length (special tokens included) a passage encoder reads, or ``None`` for an
    encoder that does not say (then documents are handed to it whole, as before windows)."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "doc_max_length"):  # a TwinBERT student
        if getattr(config, "doc_encoder", None):
            model = model.doc_encoder  # an asymmetric student encodes passages with its bi-encoder
        else:
            tower = getattr(model, "doc_tower", None)
            return (tower.tokenizer, int(config.doc_max_length)) if tower is not None else None
    tokenizer, length = getattr(model, "tokenizer", None), getattr(model, "max_length", None)
    return (tokenizer, int(length)) if tokenizer is not None and isinstance(length, int) else None


def windowing_of(model: Any, windows: bool = True, stride: int | None = None) -> Windowing | None:
    """The windowing ``model``'s passages get (``None`` where the model names no tokenizer and length).

    Raises:
        RankerError: ``stride`` is not within 1 and the window's tokens.
    """
    found = passage_tokenizer(model)
    if found is None:
        return None
    tokenizer, length = found
    tokens = length - tokenizer.num_special_tokens_to_add(pair=False)
    stride = tokens // 2 if stride is None else stride
    if not 1 <= stride <= tokens:
        raise RankerError(f"the window stride must lie within 1 and the window's {tokens} tokens, got {stride}")
    return Windowing(tokenizer, tokens, max(stride, 1), windows, length)


def stored_windowing(model: Any, meta: dict) -> Windowing | None:
    """The windowing a store's ``meta`` records, with ``model``'s tokenizer (an old store, recording none: windows
    of the model's length; ``split`` false: cut, as it was built)."""
    settings = meta.get("windows")
    if not settings:
        return windowing_of(model)
    found = windowing_of(model, settings["split"], settings["stride"])
    if found is not None and settings["tokens"] != found.tokens:
        raise RankerError(f"the store's windows hold {settings['tokens']} tokens, this model's {found.tokens}")
    return found


def spans(offsets: list[tuple[int, int]], words: list[int | None] | None, tokens: int,
          stride: int) -> list[tuple[int, int]]:
    """Character spans of the windows over a text's tokens (``offsets``), each at most ``tokens`` tokens, starting
    ``stride`` apart; ``words`` (each token's word) moves a window's ends to word boundaries where it can."""
    n, out = len(offsets), []
    for start in range(0, n, stride):
        end = min(start + tokens, n)
        first, last = start, end
        if words is not None:
            while first < end - 1 and first > 0 and words[first] is not None and words[first] == words[first - 1]:
                first += 1
            while last > first + 1 and last < n and words[last] is not None and words[last] == words[last - 1]:
                last -= 1
        out.append((offsets[first][0], offsets[last - 1][1]))
        if end == n:
            break
    return out


def window_rows(items: Iterable[tuple[str, str]], windowing: Windowing | None, counts: dict,
                group: int = 256) -> Iterator[ROW]:
    """The rows of ``(docno, text)`` documents: one per document that fits the window, one per window of a longer
    one (or its first window's text only, without splitting). ``counts`` gains ``documents``, ``split``,
    ``windows`` (rows of split documents) and ``cut``."""
    for key in ("documents", "split", "windows", "cut"):
        counts.setdefault(key, 0)
    items = iter(items)
    while batch := list(itertools.islice(items, group)):
        counts["documents"] += len(batch)
        if windowing is None:
            yield from ((d, t, t, 0, 1) for d, t in batch)
            continue
        encoded = windowing.tokenizer([t for _, t in batch], add_special_tokens=False, truncation=False,
                                      return_offsets_mapping=True, verbose=False)
        for i, (docno, text) in enumerate(batch):
            offsets = encoded["offset_mapping"][i]
            if len(offsets) <= windowing.tokens:
                yield docno, text, text, 0, 1
                continue
            try:
                words = encoded.word_ids(i)
            except (ValueError, AttributeError):  # a slow tokenizer: windows end where their tokens do
                words = None
            found = spans(offsets, words, windowing.tokens, windowing.stride)
            if not windowing.split:
                counts["cut"] += 1
                yield docno, text[found[0][0]:found[0][1]], text, 0, 1
                continue
            counts["split"] += 1
            counts["windows"] += len(found)
            yield from ((docno, text[a:b], text, k, len(found)) for k, (a, b) in enumerate(found))


def window_counts(windows: np.ndarray | None, count: int, deleted: Iterable[int]) -> dict:
    """Live documents, those split, and their windows, from a store's ``windows.npy`` rows (``None``: one row a
    document) and tombstones."""
    dead = np.fromiter(deleted, dtype=np.int64)
    if windows is None:
        return {"count": count - len(dead), "split": 0, "windows": 0}
    table = np.asarray(windows[:count])
    live = np.ones(count, dtype=bool)
    live[dead[dead < count]] = False
    first = live & (table[:, 0] == 0)
    split = first & (table[:, 1] > 1)
    return {"count": int(first.sum()), "split": int(split.sum()), "windows": int(table[split, 1].sum())}


def expand(firsts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every row of documents starting at rows ``firsts`` with ``counts`` windows, and where each document's rows
    start among them (for ``np.maximum.reduceat``)."""
    firsts, counts = np.asarray(firsts, dtype=np.int64), np.asarray(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) else counts
    rows = np.repeat(firsts, counts) + (np.arange(int(counts.sum())) - np.repeat(starts, counts))
    return rows, starts


def check_windows(windows: np.ndarray) -> None:
    """Refuse window rows that do not form whole, contiguous documents."""
    table = np.asarray(windows)
    if len(table) and (table[0, 0] != 0 or np.any(table[1:, 0] != np.where(table[1:, 0] == 0, 0, table[:-1, 0] + 1))):
        raise RankerError("the window rows are not contiguous documents")
