"""One convention for everything the project writes: a folder (or, for an ensemble, a file) with ``ranker.json``.

After PyTerrier's artifacts (``pt_meta.json``): the metadata file names the artifact's ``type`` and the
``format_version`` of its layout, then whatever the type records (a model's architecture, a store's
quantization, an index's source). :func:`ranker.load` opens any artifact by reading its type; nothing is
inferred from a name or a file extension.

Types: ``cross-encoder`` and ``twinbert`` (model folders), ``embedding-store``, ``bm25-index``,
``teacher-scores`` (a score cache), ``ensemble`` (a JSON file, the artifact's whole content), ``onnx-query-tower``
(an exported query graph, cached beside its model).

Folders written before this convention keep opening: their metadata files (``ranker_config.json`` with
``model_type``, a store's or a score cache's ``meta.json``, an index's ``ranker_index.json``) are read as
the same record, with ``type`` taken from what they hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ranker._version import __version__
from ranker.errors import MissingInputError, RankerError
from ranker.io.atomic import write_json

META_FILE = "ranker.json"
FORMAT_VERSION = 1
ARTIFACTS: dict[str, tuple[str, str | None]] = {
    "cross-encoder": ("ranker.models.cross_encoder:CrossEncoder.from_pretrained", "cross-encoder"),
    "twinbert": ("ranker.models.twinbert:TwinBert.load", "twinbert"),
    "embedding-store": ("ranker.store.embeddings:EmbeddingStore.load", None),
    "bm25-index": ("ranker.first_stage.bm25:Bm25Retriever", None),
    "teacher-scores": ("ranker.train.scores:read_scores", None),
    "ensemble": ("ranker.rerank.ensemble:read_ensemble", "ensemble"),
    "onnx-query-tower": ("ranker.models.query_encoders:load_graph", None),
}
"""The one registry of artifact types: type -> (what :func:`ranker.load` opens it with, as ``module:attribute``;
the reranker that serves it, for a model). A new model type is an entry here, a factory in
:data:`ranker.rerank.registry.RERANKERS` and its architecture's dataclass."""
TYPES = tuple(ARTIFACTS)

_LEGACY_FILES = ("ranker_config.json", "meta.json", "ranker_index.json")


class ArtifactError(RankerError):
    """A folder or file that is not the artifact expected (no metadata, another type, unreadable metadata)."""


def metadata(type: str, **fields: Any) -> dict:
    """The metadata record of an artifact of ``type``: type, format version, ranker version, then ``fields``."""
    if type not in TYPES:
        raise ValueError(f"unknown artifact type {type!r}")
    return {"type": type, "format_version": FORMAT_VERSION, "ranker_version": __version__, **fields}


def write_metadata(path: str | Path, type: str, **fields: Any) -> dict:
    """Write ``path/ranker.json`` (``path`` a folder) or ``path`` itself (a ``.json`` artifact file), atomically."""
    record = metadata(type, **fields)
    path = Path(path)
    write_json(path if path.suffix == ".json" else path / META_FILE, record)
    return record


def update_metadata(path: str | Path, type: str, **changes: Any) -> dict:
    """Rewrite an artifact's metadata with ``changes`` over what it holds (its type checked, its version fields
    made current), atomically."""
    kept = {k: v for k, v in read_metadata(path, type).items() if k not in ("type", "format_version", "ranker_version")}
    return write_metadata(path, type, **{**kept, **changes})


def metadata_file(path: str | Path) -> Path | None:
    """The file holding ``path``'s metadata: ``ranker.json``, an older name, or ``path`` itself for a file."""
    path = Path(path)
    if path.is_file():
        return path
    for name in (META_FILE, *_LEGACY_FILES):
        if (path / name).is_file():
            return path / name
    return None


def read_metadata(path: str | Path, expected: str | tuple[str, ...] | None = None) -> dict:
    """The metadata record of the artifact at ``path``, with its ``type``.

    Raises:
        MissingInputError: Nothing at ``path``, or a folder with no metadata file.
        ArtifactError: The metadata is unreadable, has no recognisable type, or (with ``expected``) another type.
    """
    path = Path(path)
    file = metadata_file(path)
    if file is None:
        what = "no such file or folder" if not path.exists() else f"not a ranker artifact (no {META_FILE})"
        raise MissingInputError(f"{path}: {what}")
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{file}: unreadable metadata ({e})") from None
    if not isinstance(record, dict):
        raise ArtifactError(f"{file}: metadata must be a JSON object")
    record = {"type": _legacy_type(record), **record} if "type" not in record else record
    if record["type"] not in TYPES:
        found = f"unknown artifact type {record['type']!r}" if record["type"] else "no artifact type"
        raise ArtifactError(f"{file}: {found} (known: {', '.join(TYPES)})")
    version = record.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 0 < version <= FORMAT_VERSION:
        raise ArtifactError(f"{file}: format_version {version!r} is not one this ranker reads (1 to "
                            f"{FORMAT_VERSION}): a newer ranker wrote it, or the file is damaged")
    wanted = (expected,) if isinstance(expected, str) else expected
    if wanted and record["type"] not in wanted:
        raise ArtifactError(f"{path} is a {record['type']} artifact, not {' or '.join(wanted)}")
    return record


def artifact_type(path: str | Path) -> str:
    """The ``type`` of the artifact at ``path`` (see :func:`read_metadata`)."""
    return read_metadata(path)["type"]


def shipped_megabytes(path: str | Path) -> float:
    """Megabytes of an artifact as shipped (a folder, or one file): the exported query graphs cached in its
    ``onnx/`` folder, rebuilt on use, are not counted."""
    path = Path(path)
    files = [path] if path.is_file() else [f for f in path.rglob("*")
                                           if f.is_file() and f.relative_to(path).parts[0] != "onnx"]
    return sum(f.stat().st_size for f in files) / 1e6


def _legacy_type(record: dict) -> str | None:
    """The type an older metadata file stands for, from the keys it holds."""
    if "model_type" in record:
        return record["model_type"]
    if record.get("format") == "ranker-embedding-store":
        return "embedding-store"
    if "teacher" in record and "score_type" in record:
        return "teacher-scores"
    if "components" in record and "weights" in record:
        return "ensemble"
    if "documents" in record and "contents" in record:
        return "bm25-index"
    return None
