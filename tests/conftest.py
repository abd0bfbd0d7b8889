"""Shared fixtures and helpers: the data folder (``--data`` or $RANKER_DATA, default ../shared/data), a SciFact
index, and `rank` run as a user runs it (:func:`rank`, :func:`assert_input_error`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def rank(*args, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "ranker", *map(str, args)], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"rank {' '.join(map(str, args))} exited {result.returncode}:\n{result.stderr}")
    return result


def assert_input_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2 and one line on stderr naming what is wrong."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("rank: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="session", autouse=True)
def _graph_cache(tmp_path_factory):
    """Exported query graphs of models that live in memory go to a temporary cache, not the user's."""
    os.environ["RANKER_CACHE"] = str(tmp_path_factory.mktemp("ranker-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # as the command line does: the tests load checkpoints from disk


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
