"""Whole documents in a store (MaxP windows): a document whose only relevant words lie past the student's 128
tokens is found by dense retrieval and ranked first by its window; windows are contiguous, deleted, compacted and
merged together; a long document sent whole is found by its text; a store of short passages is the same with
and without windows; the counts in ranker.json and on `rank encode`'s last line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ranker.models.config import TwinBertConfig  # noqa: E402
from ranker.models.twinbert import TwinBert  # noqa: E402
from ranker.store.build import build_store, merge_stores  # noqa: E402
from ranker.store.edit import add_to_store, compact_store, delete_from_store  # noqa: E402
from ranker.store.embeddings import EmbeddingStore  # noqa: E402
from ranker.types import Query, ScoredDoc  # noqa: E402

from .conftest import ROOT, rank  # noqa: E402

FILLER = ("The town council met on Tuesday evening to review the budget for the new public library, the repairs "
          "to the swimming pool roof and the timetable of the summer festival. ")
LONG = FILLER * 8 + "Coral bleaching on the Great Barrier Reef is caused by marine heatwaves that warm the ocean."
DOCS = [("long", LONG),
        ("bread", "Sourdough bread rises because wild yeast and lactic acid bacteria ferment the dough."),
        ("tax", "Income tax returns are due in April; late filing brings a penalty and interest."),
        ("chess", "The Sicilian Defence is the most popular response to the king's pawn opening in chess."),
        ("rain", "Monsoon rains bring most of the annual rainfall to South Asia between June and September."),
        ("cars", "Electric cars store energy in lithium-ion batteries and recharge from the grid.")]
SHORT = DOCS[1:]
QUERY = {"q": Query("q", "what causes coral bleaching on the great barrier reef")}


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def student() -> TwinBert:
    return TwinBert.load(ROOT / "models" / "twinbert", device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TwinBert:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny")
    return TwinBert.load(TwinBert(TwinBertConfig(num_layers=1), device="cpu").save(root / "model"), device="cpu")


@pytest.fixture(scope="module")
def stores(student, tmp_path_factory):
    root = tmp_path_factory.mktemp("windows")
    return (build_store(student, DOCS, root / "windows", batch_size=4, progress=False, windows=True),
            build_store(student, DOCS, root / "cut", batch_size=4, progress=False, windows=False))


def test_the_long_document_is_split_into_contiguous_windows(stores, student):
    store, cut = stores
    tokens = student.config.doc_max_length - 2
    assert store.meta["windows"] == {"split": True, "tokens": tokens, "stride": tokens // 2,
                                     "model_max_length": student.config.doc_max_length}
    windows = int(store.windows[0, 1])
    assert windows > 2 and store.docnos[:windows] == ["long"] * windows
    assert store.windows[:windows].tolist() == [[k, windows] for k in range(windows)]
    assert store.row_count == len(DOCS) - 1 + windows and len(store) == len(DOCS) and "long" in store
    assert store.meta["documents"] == {"count": len(DOCS), "split": 1, "windows": windows, "cut": 0}
    assert cut.row_count == len(cut) == len(DOCS) and cut.windows is None
    assert cut.meta["documents"] == {"count": len(DOCS), "split": 0, "windows": 0, "cut": 1}
    tokenizer = student.doc_tower.tokenizer
    assert len(tokenizer(LONG, add_special_tokens=False)["input_ids"]) > student.config.doc_max_length
    assert all(len(tokenizer(t, add_special_tokens=False)["input_ids"]) <= tokens
               for t in _window_texts(student, windows))


def _window_texts(student, windows):
    from ranker.store.windows import window_rows, windowing_of

    rows = list(window_rows([("long", LONG)], windowing_of(student), {}))
    assert len(rows) == windows and all(r[1] in LONG for r in rows) and rows[-1][1].endswith("ocean.")
    return [r[1] for r in rows]


def test_dense_retrieval_finds_the_long_document_by_its_last_window(stores, student):
    from ranker.first_stage.dense import DenseRetriever

    store, cut = stores
    for search in ("exact", "hnsw"):
        found = DenseRetriever(store.path, str(student.path), search=search, k=3, query_backend="torch")(QUERY)["q"]
        assert [d.docno for d in found][0] == "long" and len({d.docno for d in found}) == 3  # distinct documents
    whole = DenseRetriever(store.path, str(student.path), k=100, query_backend="torch")(QUERY)["q"]
    assert sorted(d.docno for d in whole) == sorted(d for d, _ in DOCS)  # each document once, every one
    cut_first = DenseRetriever(cut.path, str(student.path), k=3, query_backend="torch")(QUERY)["q"][0].docno
    assert cut_first != "long"  # cut to its first 126 tokens, it holds nothing about coral


def test_the_reranker_ranks_the_long_document_first_by_its_best_window(stores, student):
    from ranker.rerank.twinbert import TwinBertReranker

    store, cut = stores
    candidates = {"q": [ScoredDoc("q", d, 0.0) for d, _ in DOCS]}
    ranked = TwinBertReranker(student, store, query_backend="torch")(QUERY, candidates)["q"]
    assert ranked[0].docno == "long"
    q = student.encode_queries([QUERY["q"].text]).numpy()
    rows, _ = store.window_rows([store.row("long")])
    best = student.cross(torch.from_numpy(q[0]), torch.from_numpy(store.lookup_rows(rows))).max().item()
    assert ranked[0].score == pytest.approx(best, abs=1e-5)  # MaxP: the best window's logit
    ranked_cut = TwinBertReranker(student, cut, query_backend="torch")(QUERY, candidates)["q"]
    assert ranked_cut[0].docno != "long"
    short = {d.docno: d.score for d in ranked if d.docno != "long"}  # one-window documents score as before
    assert short == pytest.approx({d.docno: d.score for d in ranked_cut if d.docno != "long"}, abs=1e-5)


def test_a_whole_long_document_sent_as_text_finds_its_windows(stores):
    from types import SimpleNamespace

    from ranker.models.student import Student
    from ranker.serve.service import RerankService

    store, _ = stores
    first = store.row("long")
    assert store.rows_of_texts([LONG, LONG[:500], SHORT[0][1]]) == [first, None, store.row("bread")]
    rows, ids = RerankService.locate(None, store, [None, "bread"], [LONG, None])
    assert RerankService.locate(None, store, ["gone", "bread"], [LONG, None], strict=False) == (rows, ids)
    with pytest.raises(KeyError):  # an id the store lacks: a 404, unless its text may be looked up
        RerankService.locate(None, store, ["gone", "bread"], [LONG, None])
    service = SimpleNamespace(student=Student(None, store, None))  # passages read the store alone
    passages = RerankService.passages(service, store, ids, rows)
    windows = int(store.windows[first, 1])
    assert passages.by_hash == 1 and passages.by_id == 1 and len(passages.vectors) == windows + 1
    logits = np.arange(windows + 1, dtype=np.float32)
    assert passages.best(logits).tolist() == [windows - 1, windows]


def test_windows_are_deleted_compacted_and_added_together(student, stores, tmp_path):
    store, _ = stores
    path = tmp_path / "store"
    build_store(student, DOCS[1:3] + DOCS[:1], path, batch_size=4, progress=False, windows=True)
    windows = int(store.windows[0, 1])
    edited = delete_from_store(path, ["long"])
    assert "long" not in edited and len(edited) == 2 and len(edited.deleted) == windows
    edited = add_to_store(student, [DOCS[0], *DOCS[3:]], path)
    assert len(edited) == len(DOCS) and edited.row_count == 2 + 2 * windows + 3
    assert edited.meta["documents"] == {"count": len(DOCS), "split": 1, "windows": windows, "cut": 0}
    compacted = compact_store(path)
    assert compacted.row_count == len(DOCS) - 1 + windows and not compacted.deleted
    first = compacted.row("long")
    assert compacted.docnos[first:first + windows] == ["long"] * windows
    assert compacted.windows[first:first + windows].tolist() == [[k, windows] for k in range(windows)]
    np.testing.assert_allclose(compacted.lookup_rows(range(first, first + windows)),
                               store.lookup_rows(range(windows)), atol=2e-3)
    short = build_store(student, DOCS[1:], tmp_path / "short", batch_size=4, progress=False, windows=True)
    grown = add_to_store(student, DOCS[:1], short.path)  # the first split document brings a windows file
    assert grown.windows is not None and grown.windows[:5].tolist() == [[0, 1]] * 5 and len(grown) == len(DOCS)
    assert grown.meta["files"]["windows"] == "windows.1.npy"


def test_merged_shards_keep_windows_together(tiny, tmp_path):
    docs = DOCS * 1 + [(f"{d}-2", t) for d, t in DOCS]
    single = build_store(tiny, docs, tmp_path / "single", batch_size=3, progress=False, windows=True)
    shards = [build_store(tiny, docs, tmp_path / f"shard-{i}", batch_size=3, progress=False, shard=(i, 2),
                          windows=True).path
              for i in range(2)]
    merged = merge_stores(shards, tmp_path / "merged")
    for name in ("embeddings.npy", "docnos.txt", "text_hashes.npy", "windows.npy", "ranker.json"):
        assert (merged.path / name).read_bytes() == (single.path / name).read_bytes(), name
    assert len(merged) == len(docs) and merged.meta["documents"]["split"] == 2


def test_a_store_of_short_passages_is_the_same_with_and_without_windows(tiny, tmp_path):
    on = build_store(tiny, SHORT, tmp_path / "on", batch_size=2, progress=False, windows=True)
    off = build_store(tiny, SHORT, tmp_path / "off", batch_size=2, progress=False, windows=False)
    names = sorted(p.name for p in on.path.iterdir())
    assert names == sorted(p.name for p in off.path.iterdir()) and "windows.npy" not in names
    for name in names:
        if name != "ranker.json":
            assert (on.path / name).read_bytes() == (off.path / name).read_bytes(), name
    meta_on, meta_off = (json.loads((s.path / "ranker.json").read_text()) for s in (on, off))
    assert meta_on.pop("windows")["split"] and not meta_off.pop("windows")["split"]
    assert meta_on == meta_off and meta_on["documents"] == {"count": 5, "split": 0, "windows": 0, "cut": 0}


@pytest.mark.slow
def test_rank_encode_reports_split_and_cut_documents(tiny, tmp_path):
    collection = tmp_path / "docs.tsv"
    collection.write_text("".join(f"{d}\t{t}\n" for d, t in DOCS))
    windowed = rank("encode", "--collection", collection, "--model", tiny.path, "--store", tmp_path / "w",
                    "--windows", "--window-stride", 40).stdout.strip().splitlines()[-1]
    store = EmbeddingStore.load(tmp_path / "w")
    assert store.meta["windows"]["stride"] == 40
    assert f"{store.row_count} vectors" in windowed
    assert f"{len(DOCS)} documents, 1 split into {store.meta['documents']['windows']} windows" in windowed
    cut = rank("encode", "--collection", collection, "--model", tiny.path, "--store", tmp_path / "c",
               "--no-windows").stdout.strip().splitlines()[-1]
    assert f"{len(DOCS)} vectors" in cut and "0 split into 0 windows, 1 cut to their first 126 tokens" in cut
