"""Where models come from: the folder of shipped models (``rank --models``, ``$RANKER_MODELS``, ``./models``, the
clone's beside the package) and the passage encoders ``rank encode`` builds stores with."""

from __future__ import annotations

import os
from pathlib import Path

from ranker.errors import MissingInputError, RankerError

MODELS_ENV = "RANKER_MODELS"
"""Environment variable naming the folder of shipped models (default: ``models`` in the working directory)."""


PACKAGE_MODELS = Path(__file__).resolve().parents[2] / "models"
"""The ``models/`` beside the package: the clone's, for the editable install ``scripts/setup.sh`` makes."""


_chosen_models: Path | None = None


def use_models(folder: str | Path | None) -> None:
    """Find shipped models in ``folder`` from now on (``rank --models``); ``None``: back to the default search."""
    global _chosen_models
    _chosen_models = Path(folder) if folder is not None else None


def models_dir() -> Path:
    """The folder shipped models are found in: the one :func:`use_models` chose, else ``$RANKER_MODELS``, else
    ``./models`` where it exists (run inside a project checkout), else :data:`PACKAGE_MODELS` (any other folder)."""
    if _chosen_models is not None:
        return _chosen_models
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV])
    here = Path("models")
    return PACKAGE_MODELS if not here.is_dir() and PACKAGE_MODELS.is_dir() else here


def shipped_model(name: str) -> Path:
    """The shipped model ``name`` (``teacher``, ``twinbert``, ``ensemble-msmarco.json``…) in :func:`models_dir`.

    Raises:
        MissingInputError: It is not there.
    """
    path = models_dir() / name
    if not path.exists():
        raise MissingInputError(f"no shipped model {name!r} in {models_dir()} (set {MODELS_ENV} or --models to the "
                                "folder holding the project's models/, or give --model)")
    return path


DEFAULT_MODELS = {"twinbert": "twinbert-v2", "cross-encoder": "teacher"}
"""Reranker kind -> the shipped model it loads when none is given: the one place each default lives (picked on
validation: docs/experiments.md); ``models/catalog.toml`` labels the rest of the shelf."""
DEFAULT_TEACHERS = {"msmarco": "ensemble-msmarco.json", "scifact": "ensemble-scifact.json"}
"""Collection -> the teacher ``rank distill`` scores its queries with when none is given (the shipped students')."""


def resolve_model(model: str | Path) -> str | Path:
    """``model`` as given where that path exists; else the shipped model it names, from any folder
    (``twinbert-v2``, ``ensemble-msmarco.json``, or ``models/twinbert-v2`` as ``rank models list`` prints it);
    else as given (a Hugging Face name, or a path the caller reports missing)."""
    given = Path(model)
    if given.exists() or given.parent not in (Path("."), Path("models")):
        return model
    shipped = models_dir() / given.name
    return shipped if shipped.exists() else model


def student_path(model: str | Path | None) -> Path:
    """``model`` (a folder, or a shipped model's name: :func:`resolve_model`), or the default shipped student
    (:data:`DEFAULT_MODELS`) where none is given."""
    return Path(resolve_model(model)) if model else shipped_model(DEFAULT_MODELS["twinbert"])


def doc_encoder(kind: str, model: str | None, batch_size: int = 64, backend: str = "torch"):
    """What ``rank encode`` encodes passages with: ``twinbert`` (default the shipped student's document tower) or
    ``biencoder`` (a sentence-transformers model: ``minilm``, ``mpnet``, a folder; on ``backend``, ``torch`` or
    ``onnx``: :data:`ranker.models.biencoder.BACKENDS`)."""
    if kind == "biencoder":
        from ranker.models.biencoder import BiEncoder

        if backend == "onnx-int8":
            raise RankerError("passages are encoded in float32 (--backend torch or onnx); onnx-int8 is for queries")
        return BiEncoder(model, batch_size=batch_size, device="cpu", progress=False, backend=backend)
    if kind != "twinbert":
        raise RankerError(f"encoder must be 'twinbert' or 'biencoder', not {kind!r}")
    if backend != "torch":
        raise RankerError(f"--backend {backend} is for --encoder biencoder; the student's document tower runs on "
                          "torch")
    from ranker.models.twinbert import TwinBert

    return TwinBert.load(student_path(model))
