"""Incremental stores and indexes: add, delete, compact equal a rebuild; bad edits change nothing."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ranker.errors import RankerError  # noqa: E402
from ranker.models.config import TwinBertConfig  # noqa: E402
from ranker.models.twinbert import TwinBert  # noqa: E402
from ranker.rerank.twinbert import TwinBertReranker  # noqa: E402
from ranker.store.build import build_store  # noqa: E402
from ranker.store.edit import add_to_store, compact_store, delete_from_store  # noqa: E402
from ranker.store.embeddings import EmbeddingStore, StoreMismatchError  # noqa: E402
from ranker.store.files import ROLE_FILES, store_files  # noqa: E402
from ranker.types import Doc, Query, ScoredDoc  # noqa: E402

from .conftest import assert_input_error, rank  # noqa: E402

QUERIES = {"q1": Query("q1", "vitamin d deficiency and bone density"),
           "q2": Query("q2", "gene expression in cancer cells")}


@pytest.fixture(scope="module")
def corpus(data):
    from ranker.io.sources import iter_docs

    docs = [d for _, d in zip(range(40), iter_docs(data / "beir-scifact" / "corpus.jsonl"))]
    deleted = {docs[3].docno, docs[17].docno, docs[29].docno, docs[33].docno}
    final = [d for d in docs if d.docno not in deleted]  # the collection after the edits, in the same order
    return docs, deleted, final


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> TwinBert:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("incremental")
    return TwinBert.load(TwinBert(TwinBertConfig(num_layers=1), device="cpu").save(root / "model"), device="cpu")


def ranked(model, store, docnos) -> dict[str, list[str]]:
    candidates = {q: [ScoredDoc(q, d, 0.0) for d in docnos] for q in QUERIES}
    ranking = TwinBertReranker(model, store, query_backend="torch")(QUERIES, candidates)
    return {q: [d.docno for d in docs] for q, docs in ranking.items()}


def dense_ranked(model, store) -> dict[str, list[str]]:
    from ranker.first_stage.dense import DenseRetriever

    ranking = DenseRetriever(store.path, str(model.path), k=50, query_backend="torch")(QUERIES)
    return {q: [d.docno for d in docs] for q, docs in ranking.items()}


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_store_add_delete_compact_ranks_as_a_rebuild(model, corpus, tmp_path):
    docs, deleted, final = corpus
    path = tmp_path / "store"
    build_store(model, docs[:30], path, batch_size=8, progress=False, windows=True)
    add_to_store(model, docs[30:], path)
    edited = delete_from_store(path, sorted(deleted))
    rebuilt = build_store(model, final, tmp_path / "rebuilt", batch_size=8, progress=False, windows=True)
    assert len(edited) == 36 and all(d not in edited for d in deleted)  # documents; rows: their windows
    assert edited.row_count - len(edited.deleted) == rebuilt.row_count and edited.counts() == rebuilt.counts()
    assert rebuilt.meta["documents"]["split"] > 0 and edited.meta["documents"] == rebuilt.meta["documents"]
    live = [d.docno for d in final]
    assert ranked(model, edited, live) == ranked(model, rebuilt, live)
    assert dense_ranked(model, edited) == dense_ranked(model, rebuilt)  # tombstones are never retrieved
    compacted = compact_store(path)
    assert compacted.row_count == rebuilt.row_count and not compacted.deleted and compacted.docnos == rebuilt.docnos
    assert ranked(model, compacted, live) == ranked(model, rebuilt, live)
    assert dense_ranked(model, compacted) == dense_ranked(model, rebuilt)
    assert ({k: v for k, v in compacted.meta.items() if k not in ("generation", "files")}
            == {k: v for k, v in rebuilt.meta.items() if k != "files"})
    for role, name in store_files(compacted.meta).items():  # the new generation's files are the rebuild's
        if role == "embeddings":  # windows of unequal lengths: a passage's batch pads it differently
            np.testing.assert_allclose(np.load(path / name), np.load(rebuilt.path / "embeddings.npy"), atol=2e-3)
        elif (rebuilt.path / ROLE_FILES[role]).is_file():
            assert (path / name).read_bytes() == (rebuilt.path / ROLE_FILES[role]).read_bytes(), role
    named = {name for role, name in store_files(compacted.meta).items()
             if (rebuilt.path / ROLE_FILES[role]).is_file()}
    assert sorted(p.name for p in path.iterdir()) == sorted(named | {"ranker.json"}) and compacted.generation == 3


def test_replace_re_encodes_and_a_stopped_edit_is_ignored(model, corpus, tmp_path):
    docs, _, _ = corpus
    path = tmp_path / "store"
    build_store(model, docs[:10], path, batch_size=8, progress=False, windows=False)  # a row a document
    changed = Doc(docs[2].docno, "an entirely different passage about astronomy")
    store = add_to_store(model, [changed], path, replace=True)
    assert len(store) == 10 and store.row(docs[2].docno) == 10 and 2 in store.deleted
    assert store.rows_of_texts([changed.contents, docs[2].contents]) == [10, None]
    with open(path / "embeddings.npy", "ab") as f:  # an add stopped before its commit leaves a tail
        f.write(b"\0" * 1000)
    with open(path / "docnos.txt", "a") as f:
        f.write("half-written\n")
    again = EmbeddingStore.load(path)
    assert again.row_count == 11 and "half-written" not in again
    assert len(add_to_store(model, docs[10:12], path)) == 12  # the next edit cuts the tail first


def test_bad_store_edits_change_nothing(model, corpus, tmp_path):
    docs, _, _ = corpus
    path = tmp_path / "store"
    build_store(model, docs[:10], path, batch_size=8, progress=False)
    before = snapshot(path)
    with pytest.raises(RankerError, match="already in the store"):
        add_to_store(model, docs[8:12], path)
    with pytest.raises(RankerError, match="given twice"):
        add_to_store(model, [docs[11], docs[11]], path)
    with pytest.raises(RankerError, match="not in the store"):
        delete_from_store(path, [docs[0].docno, "no-such-doc"])
    other = TwinBert(TwinBertConfig(num_layers=2), device="cpu")
    with pytest.raises(StoreMismatchError):
        add_to_store(other, docs[12:14], path)
    with pytest.raises(RankerError, match="not in the store"):  # one transaction: the add is not committed either
        add_to_store(model, docs[12:14], path, delete=[docs[0].docno, "no-such-doc"])
    with pytest.raises(RankerError, match="both added and deleted"):
        add_to_store(model, docs[12:14], path, delete=[docs[12].docno])
    assert snapshot(path) == before
    store = add_to_store(model, docs[12:14], path, delete=[docs[0].docno])
    assert store.generation == 1 and docs[12].docno in store and docs[0].docno not in store


def test_a_second_writer_is_refused_while_an_edit_holds_the_store(model, corpus, tmp_path):
    import fcntl

    docs, _, _ = corpus
    path = tmp_path / "store"
    build_store(model, docs[:10], path, batch_size=8, progress=False)
    before = snapshot(path)
    with open(tmp_path / ".store.lock", "a") as held:  # another process's edit, as the OS sees it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for edit in (lambda: add_to_store(model, docs[10:12], path), lambda: delete_from_store(path, [docs[0].docno]),
                     lambda: compact_store(path)):
            with pytest.raises(RankerError, match="is being edited by another process"):
                edit()
        fcntl.flock(held, fcntl.LOCK_UN)
    assert snapshot(path) == before
    assert len(add_to_store(model, docs[10:12], path)) == 12  # the lock is free again


def test_compacting_through_a_symbolic_link_compacts_the_real_store(model, corpus, tmp_path):
    docs, _, _ = corpus
    real = tmp_path / "real"
    build_store(model, docs[:10], real, batch_size=8, progress=False, windows=False)
    delete_from_store(real, [docs[1].docno])
    (tmp_path / "link").symlink_to(real)
    compact_store(tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and EmbeddingStore.load(real).row_count == 9


@pytest.mark.java
def test_index_add_delete_compact_ranks_as_a_rebuild(corpus, tmp_path):
    from ranker.first_stage.bm25 import Bm25Config, Bm25Retriever, build_index
    from ranker.first_stage.index_edit import add_to_index, compact_index, delete_from_index

    docs, deleted, final = corpus
    index = tmp_path / "index"
    build_index(docs[:30], index)
    add_to_index(docs[30:], index)
    assert delete_from_index(index, sorted(deleted)) == 36
    config = Bm25Config(k=50, threads=1)
    hits = Bm25Retriever(index, config).search(QUERIES, progress=False)
    assert not deleted & {d.docno for docs_ in hits.values() for d in docs_}  # deletions are hidden at once
    compact_index(index)
    build_index(final, tmp_path / "rebuilt")
    got = Bm25Retriever(index, config).search(QUERIES, progress=False)
    want = Bm25Retriever(tmp_path / "rebuilt", config).search(QUERIES, progress=False)
    assert {q: [(d.docno, round(d.score, 5)) for d in v] for q, v in got.items()} == \
        {q: [(d.docno, round(d.score, 5)) for d in v] for q, v in want.items()}


@pytest.mark.slow
@pytest.mark.java
def test_bad_index_edits_are_one_line_and_change_nothing(data, tmp_path):
    from ranker.first_stage.bm25 import Bm25Retriever

    collection = tmp_path / "docs.tsv"
    collection.write_text("d1\tvitamin d and bones\nd2\tgene expression\n")
    index = tmp_path / "index"
    rank("index", "--collection", collection, "--index", index)
    result = rank("index", "--collection", collection, "--index", index, "--add", check=False)
    assert_input_error(result, "already in the index", "--replace")
    ids = tmp_path / "ids.txt"
    ids.write_text("d1\nno-such-doc\n")
    assert_input_error(rank("index", "--index", index, "--delete", ids, check=False), "no-such-doc")
    ids.write_text("d1\nd1\n")
    assert_input_error(rank("index", "--index", index, "--delete", ids, check=False), "ids.txt:2")
    assert Bm25Retriever(index).num_docs == 2
    added = tmp_path / "added.tsv"
    added.write_text("d3\tprotein folding\n")
    ids.write_text("unknown\n")
    # --add with a bad --delete is one transaction: neither is committed, and the corrected command then works
    assert_input_error(rank("index", "--collection", added, "--index", index, "--add", "--delete", ids, check=False),
                       "unknown")
    assert Bm25Retriever(index).num_docs == 2
    store, tiny = tmp_path / "store", _tiny_model(tmp_path)
    rank("encode", "--collection", collection, "--store", store, "--model", tiny)
    before = snapshot(store)
    assert_input_error(rank("encode", "--store", store, "--delete", ids, check=False), "unknown")
    assert_input_error(rank("encode", "--collection", added, "--store", store, "--model", tiny, "--add", "--delete",
                            ids, check=False), "unknown")
    assert snapshot(store) == before
    ids.write_text("d1\n")
    assert "2 documents" in rank("index", "--collection", added, "--index", index, "--add", "--delete", ids).stdout
    searcher = Bm25Retriever(index)._searcher
    assert searcher.doc("d1") is None and searcher.doc("d3") is not None
    rank("encode", "--collection", added, "--store", store, "--model", tiny, "--add", "--delete", ids)
    edited = EmbeddingStore.load(store)
    assert {edited.docnos[row] for row in edited.live_rows()} == {"d2", "d3"}



@pytest.mark.java
def test_an_index_edit_stopped_at_any_step_leaves_the_index_as_it_was(tmp_path, monkeypatch):
    """--add --replace is one Lucene commit: stopped (a signal, a failure) after the deletions or the additions,
    the replaced documents are all still there; a second writer is refused."""
    import fcntl

    from ranker.first_stage import index_edit
    from ranker.first_stage.bm25 import Bm25Retriever, build_index
    from ranker.interrupt import Interrupted

    index = tmp_path / "index"
    build_index([Doc("d1", "vitamin d and bones"), Doc("d2", "gene expression"), Doc("d3", "cancer cells")], index)

    def held() -> dict[str, str]:
        retriever = Bm25Retriever(index)
        return {d: retriever.text(d) for d in ("d1", "d2", "d3", "d4") if retriever._searcher.doc(d) is not None}

    before = held()
    new = [Doc("d2", "gene expression rewritten"), Doc("d4", "a new document")]
    for step, stop in (("indexed", RuntimeError), ("deleted", Interrupted), ("added", RuntimeError)):
        def hook(name: str, step=step, stop=stop) -> None:
            if name == step:
                raise stop(15) if stop is Interrupted else stop("stopped")
        monkeypatch.setattr(index_edit, "commit_step", hook)
        with pytest.raises((RuntimeError, Interrupted)):
            index_edit.add_to_index(new, index, replace=True)
        assert held() == before, step
    monkeypatch.setattr(index_edit, "commit_step", lambda name: None)
    with open(tmp_path / ".index.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RankerError, match="the index .* is being edited by another process"):
            index_edit.add_to_index(new, index, replace=True)
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert index_edit.add_to_index(new, index, replace=True) == 4
    assert held() == {**before, "d2": "gene expression rewritten", "d4": "a new document"}
    with open(tmp_path / ".index.lock", "a") as lock:  # a rebuild takes the same lock: never under an edit
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RankerError, match="the index .* is being edited by another process"):
            build_index([Doc("d9", "another collection")], index)
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert held() == {**before, "d2": "gene expression rewritten", "d4": "a new document"}


def test_a_folder_is_replaced_by_one_swap_so_a_stop_never_leaves_nothing(tmp_path, monkeypatch):
    """``rank index`` over an existing index (and every model save): the new folder takes the old one's place in
    one step before the old is deleted; a stop while the old one is deleted leaves the new one whole."""
    from ranker.io import atomic

    target = tmp_path / "index"
    target.mkdir()
    (target / "segments_1").write_text("old")

    def stopped(path, ignore_errors=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.shutil, "rmtree", stopped)
    with pytest.raises(KeyboardInterrupt), atomic.atomic_dir(target) as tmp:
        (tmp / "segments_2").write_text("new")
    monkeypatch.undo()
    assert [p.name for p in target.iterdir()] == ["segments_2"]

KILLED_INDEX_EDIT = """
import os, signal, sys
from ranker.first_stage import index_edit
from ranker.types import Doc
calls = [0]
def step(name):
    calls[0] += 1
    if calls[0] == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
index_edit.commit_step = step
index_edit.add_to_index([Doc("d2", "gene expression rewritten"), Doc("d4", "a new document")], sys.argv[1],
                        replace=True)
"""


@pytest.mark.slow
@pytest.mark.java
def test_an_index_edit_killed_at_any_step_leaves_the_index_before_or_after(tmp_path):
    """SIGKILL (no handler runs, no rollback) at each step of --add --replace: the index opens with the old
    versions (before Lucene's commit) or the new ones (after it), never a mix, and the next edit works."""
    import subprocess
    import sys

    from ranker.first_stage.bm25 import Bm25Retriever, build_index

    docs = [Doc("d1", "vitamin d and bones"), Doc("d2", "gene expression"), Doc("d3", "cancer cells")]
    before = {"d1": "vitamin d and bones", "d2": "gene expression", "d3": "cancer cells"}
    after = {**before, "d2": "gene expression rewritten", "d4": "a new document"}

    def held(index) -> dict[str, str]:
        retriever = Bm25Retriever(index)
        return {d: retriever.text(d) for d in ("d1", "d2", "d3", "d4") if retriever._searcher.doc(d) is not None}

    seen = []
    for step, (name, expected) in enumerate((("indexed", before), ("deleted", before), ("added", before),
                                             ("committed", after)), start=1):
        index = tmp_path / f"index-{name}"
        build_index(docs, index)
        killed = subprocess.run([sys.executable, "-c", KILLED_INDEX_EDIT, str(index), str(step)],
                                capture_output=True, text=True, timeout=300)
        assert killed.returncode == -9, killed.stderr[-2000:]
        seen.append(held(index))
        assert seen[-1] == expected, name
        from ranker.first_stage import index_edit

        assert list(tmp_path.glob(f".{index.name}.add.*"))  # the killed edit's work folder
        assert index_edit.add_to_index([Doc("d5", "one more")], index) == len(expected) + 1
        assert not list(tmp_path.glob(f".{index.name}.add.*"))  # removed by the next edit, under the lock
    assert len(seen) == 4


def _tiny_model(tmp_path):
    torch.manual_seed(0)
    return TwinBert(TwinBertConfig(num_layers=1), device="cpu").save(tmp_path / "tiny")


@pytest.mark.slow
def test_encode_reads_several_collections_and_adds_only_the_candidates(tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    a.write_text("d1\tvitamin d and bone\nd2\tgene expression\n")
    b.write_text("d2\tanother text for d2\nd3\tcancer cells\nd4\tnot a candidate\n")
    run = tmp_path / "candidates.trec"
    run.write_text("q Q0 d1 1 3.0 t\nq Q0 d2 2 2.0 t\nq Q0 d3 3 1.0 t\n")
    model, store = _tiny_model(tmp_path), tmp_path / "store"
    rank("encode", "--collection", a, "--collection", b, "--candidates", run, "--store", store, "--model", model)
    built = EmbeddingStore.load(store)
    assert sorted(built.docnos) == ["d1", "d2", "d3"]  # d2 from the first collection; d4 is no candidate
    assert built.rows_of_texts(["gene expression"]) == [built.row("d2")]
    c = tmp_path / "c.tsv"
    c.write_text("d5\tnew passage\nd6\talso new\n")
    run.write_text("q Q0 d5 1 3.0 t\n")
    rank("encode", "--collection", c, "--candidates", run, "--store", store, "--model", model, "--add")
    assert sorted(EmbeddingStore.load(store).docnos) == ["d1", "d2", "d3", "d5"]
