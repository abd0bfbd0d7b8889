"""A store's files: the name of each role's file, which names a commit may give them, and the checks a commit
record (``ranker.json``) must pass before any of its files is opened, truncated or deleted
(:mod:`ranker.store.embeddings` describes the layout)."""

from __future__ import annotations

import re

from ranker.store.windows import WINDOWS

EMBEDDINGS, SCALES, DOCNOS, PROGRESS = "embeddings.npy", "scales.npy", "docnos.txt", "progress.json"
HASHES = "text_hashes.npy"
DOCNO_KEYS, DOCNO_ORDER, HASH_KEYS, HASH_ORDER = "docno_keys.npy", "docno_order.npy", "hash_keys.npy", "hash_order.npy"
DEFAULT_FILES = {"embeddings": EMBEDDINGS, "scales": SCALES, "text_hashes": HASHES, "docnos": DOCNOS,
                 "docno_keys": DOCNO_KEYS, "docno_order": DOCNO_ORDER, "docno_slots": "docno_slots.npy",
                 "hash_keys": HASH_KEYS, "hash_order": HASH_ORDER, "hash_slots": "hash_slots.npy"}
"""The file of each role in a store built at once (generation 0)."""
ROLE_FILES = {**DEFAULT_FILES, "windows": WINDOWS}
"""The same, with ``windows``: a store has that role only where ``ranker.json``'s ``files`` names it."""


def store_files(meta: dict) -> dict[str, str]:
    """The file of each role in the commit ``meta`` (a store's ``ranker.json``).

    Raises:
        ValueError: ``files`` names an unknown role, or a file that is not one a store's commits write (a role's
            default or generation name, inside the store folder): a store is shared and downloaded, and its edits
            truncate and delete the files it names.
    """
    named = meta.get("files", {})
    if not isinstance(named, dict):
        raise ValueError("'files' is not an object")
    for role, name in named.items():
        if role not in ROLE_FILES or not isinstance(name, str) or not store_file_name(name, role):
            raise ValueError(f"'files' names {name!r} for {role!r}, not a file of the store's own")
    return {**DEFAULT_FILES, **named}


def store_file_name(name: str, role: str | None = None) -> bool:
    """Whether ``name`` is a file name a store's commits write: a role's default or generation name
    (``embeddings.npy``, ``embeddings.3.npy``), of ``role`` if given."""
    for default in ROLE_FILES.values() if role is None else (ROLE_FILES[role],):
        stem, _, suffix = default.rpartition(".")
        if re.fullmatch(rf"{re.escape(stem)}(\.\d+)?\.{suffix}", name):
            return True
    return False


def check_counts(meta: dict) -> None:
    """Raise ValueError unless ``meta``'s counts are what a commit writes: ``count`` and ``generation`` whole numbers
    (0 or more), ``dim`` one or more, ``deleted_rows`` committed row numbers."""
    def whole(key: str, least: int) -> bool:
        value = meta.get(key, least)
        return isinstance(value, int) and not isinstance(value, bool) and value >= least

    for key, least in (("count", 0), ("dim", 1), ("generation", 0)):
        if not whole(key, least):
            raise ValueError(f"{key!r} is {meta.get(key)!r}, not a whole number of {least} or more")
    deleted = meta.get("deleted_rows", [])
    if not isinstance(deleted, list) or not all(
            isinstance(row, int) and not isinstance(row, bool) and 0 <= row < meta["count"] for row in deleted):
        raise ValueError("'deleted_rows' holds something other than committed row numbers")


def generation_name(role: str, generation: int) -> str:
    """The file a commit of ``generation`` writes anew for ``role``: ``embeddings.3.npy`` (generation 0: the
    default name)."""
    name = ROLE_FILES[role]
    if not generation:
        return name
    stem, _, suffix = name.rpartition(".")
    return f"{stem}.{generation}.{suffix}"
