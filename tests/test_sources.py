"""``irds:`` sources go through ir_datasets; checked here with a stand-in module (no network in tests)."""

from __future__ import annotations

import sys
import types
from typing import NamedTuple

import pytest

from ranker.errors import RankerError
from ranker.io.sources import iter_docs, load_qrels, load_topics
from ranker.types import Doc, Qrel, Query

from .conftest import FIXTURES


class IrdsQuery(NamedTuple):
    query_id: str
    text: str

    def default_text(self) -> str:
        return self.text


class IrdsQrel(NamedTuple):
    query_id: str
    doc_id: str
    relevance: int
    iteration: str


class IrdsDoc(NamedTuple):
    doc_id: str
    text: str
    title: str

    def default_text(self) -> str:
        return f"{self.title} {self.text}"


class Dataset:
    def queries_iter(self):
        return iter([IrdsQuery("1", "a claim")])

    def qrels_iter(self):
        return iter([IrdsQrel("1", "d1", 2, "0")])

    def docs_iter(self):
        return iter([IrdsDoc("d1", "body", "Title")])


@pytest.fixture
def fake_ir_datasets(monkeypatch):
    loaded = []

    def load(dataset_id):
        if dataset_id != "beir/scifact/test":
            raise KeyError(dataset_id)
        loaded.append(dataset_id)
        return Dataset()

    monkeypatch.setitem(sys.modules, "ir_datasets", types.SimpleNamespace(load=load))
    return loaded


def test_irds_ids(fake_ir_datasets):
    assert load_topics("irds:beir/scifact/test") == {"1": Query("1", "a claim")}
    assert load_qrels("irds:beir/scifact/test") == [Qrel("1", "d1", 2)]
    doc = next(iter_docs("irds:beir/scifact/test"))
    assert doc == Doc("d1", "body", "Title") and doc.contents == "Title body"
    assert fake_ir_datasets == ["beir/scifact/test"] * 3


def test_unknown_irds_id(fake_ir_datasets):
    with pytest.raises(RankerError, match="unknown ir_datasets id"):
        load_topics("irds:no/such/set")


def test_paths_do_not_touch_ir_datasets(fake_ir_datasets):
    assert "q1" in load_topics(FIXTURES / "topics.tsv")
    assert fake_ir_datasets == []
