"""Shared fixtures: the data folder (``--data`` or $RANKER_DATA, default ../shared/data) and a SciFact index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def _graph_cache(tmp_path_factory):
    """Exported query graphs of models that live in memory go to a temporary cache, not the user's."""
    os.environ["RANKER_CACHE"] = str(tmp_path_factory.mktemp("ranker-cache"))


def pytest_addoption(parser):
    parser.addoption("--data", default=os.environ.get("RANKER_DATA", str(ROOT.parent / "shared" / "data")),
                     help="folder holding msmarco-passage/ and beir-scifact/")


@pytest.fixture(scope="session")
def data(request) -> Path:
    path = Path(request.config.getoption("--data"))
    if not (path / "msmarco-passage").is_dir():
        pytest.skip(f"needs the shared data (msmarco-passage/, beir-scifact/), not found at {path}: "
                    "pass --data or set RANKER_DATA")
    return path


@pytest.fixture(scope="session")
def scifact_index(data, tmp_path_factory) -> Path:
    """SciFact indexed once per session through the library (title + ' ' + text)."""
    from ranker.first_stage.bm25 import build_index
    from ranker.io.sources import iter_docs

    index = tmp_path_factory.mktemp("indexes") / "scifact"
    build_index(iter_docs(data / "beir-scifact" / "corpus.jsonl"), index, source="scifact")
    return index
