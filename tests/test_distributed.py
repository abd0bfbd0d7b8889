"""Sharded and Ray-encoded stores equal the single-process store, byte for byte; bad shards are refused."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ranker.errors import RankerError  # noqa: E402
from ranker.models.config import TwinBertConfig  # noqa: E402
from ranker.models.twinbert import TwinBert  # noqa: E402
from ranker.store.build import build_store, merge_stores  # noqa: E402

# every test here builds shards or a Ray cluster: seconds each, CI runs them (scripts/test.sh)
pytestmark = pytest.mark.slow

FILES = ("embeddings.npy", "docnos.txt", "text_hashes.npy", "windows.npy", "ranker.json")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data):
    """A saved 1-layer student and 300 SciFact abstracts, with the single-process store they make."""
    from ranker.io.sources import iter_docs

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("distributed")
    torch.manual_seed(0)
    model = TwinBert.load(TwinBert(TwinBertConfig(num_layers=1), device="cpu").save(root / "model"), device="cpu")
    docs = [(d.docno, d.contents) for _, d in zip(range(300), iter_docs(data / "beir-scifact" / "corpus.jsonl"))]
    single = build_store(model, docs, root / "single", batch_size=16, progress=False, windows=True)
    return root, model, docs, single


def same_files(a, b) -> bool:
    return all((a / name).read_bytes() == (b / name).read_bytes() for name in FILES)


@pytest.mark.parametrize("count", [2, 3])
def test_merged_shards_are_the_single_store_byte_for_byte(setup, count):
    root, model, docs, single = setup
    shards = [build_store(model, docs, root / f"shard-{count}-{i}", batch_size=16, progress=False,
                          shard=(i, count), windows=True).path for i in range(count)]
    assert sum(len(s.read_text().splitlines()) for s in (p / "docnos.txt" for p in shards)) == single.row_count
    merged = merge_stores(reversed(shards), root / f"merged-{count}")  # any order of the shards
    assert same_files(merged.path, single.path)


def test_bad_merges_are_refused_and_write_nothing(setup):
    root, model, docs, single = setup
    shards = [build_store(model, docs, root / f"bad-{i}", batch_size=16, progress=False, shard=(i, 2),
                          windows=True).path for i in range(2)]
    other = build_store(model, docs, root / "bad-other", batch_size=8, progress=False, shard=(1, 2), windows=True).path
    # shard 1 of a collection that shares documents with this one (the first 16 of it moved to the end)
    shifted = build_store(model, docs[16:] + docs[:16], root / "bad-shifted", batch_size=16, progress=False,
                          shard=(1, 2), windows=True).path
    # shard 1 of the collection without its last two documents: docnos disjoint from shard 0's, two missing
    trimmed = build_store(model, docs[:-2], root / "bad-trimmed", batch_size=16, progress=False, shard=(1, 2),
                          windows=True).path
    cases = {"each of the 2 shards once": [shards[0]], "another build": [shards[0], other],
             "not a shard": [shards[0], single.path], "another collection": [shards[0], shifted],
             "another collection than": [shards[0], trimmed]}
    for message, given in cases.items():
        with pytest.raises(RankerError, match=message):
            merge_stores(given, root / "never")
        assert not (root / "never").exists() and not (root / "never.partial").exists()
    with pytest.raises(RankerError, match="shard must be"):
        build_store(model, docs, root / "never", shard=(2, 2))


RAY_CLUSTER = """
import functools
import sys
from ray.cluster_utils import Cluster
from ranker.io.sources import iter_docs
from ranker.store.distributed import build_store_ray
from ranker.models.loading import doc_encoder
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
try:
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    build_store_ray(functools.partial(doc_encoder, "twinbert", sys.argv[1]), iter_docs(sys.argv[2]), sys.argv[3],
                    batch_size=16, workers=2, threads=1, address=cluster.address, windows=True)
finally:
    cluster.shutdown()
"""


@pytest.fixture(scope="module")
def collection(setup, tmp_path_factory):
    """The 300 passages as a TSV, and the store one process on one thread makes of it (through the CLI)."""
    from .conftest import rank

    root, model, docs, _ = setup
    folder = tmp_path_factory.mktemp("ray")
    path = folder / "docs.tsv"
    path.write_text("".join(f"{d}\t{' '.join(t.split())}\n" for d, t in docs))
    rank("encode", "--collection", path, "--model", model.path, "--batch-size", 16, "--threads", 1,
         "--windows", "--store", folder / "single")
    return folder, path


# Ray runs in a child process: a driver installs signal handlers that the in-process JVM of other tests (which
# takes SIGSEGV for its own null checks) cannot live with.
def test_ray_with_two_workers_makes_the_single_store(setup, collection):
    pytest.importorskip("ray")
    from .conftest import rank

    root, model, _, _ = setup
    folder, path = collection
    rank("encode", "--engine", "ray", "--workers", 2, "--threads", 1, "--collection", path, "--model", model.path,
         "--batch-size", 16, "--windows", "--store", folder / "ray")
    assert same_files(folder / "ray", folder / "single")


def test_ray_cluster_of_two_nodes_by_address(setup, collection):
    pytest.importorskip("ray")
    import subprocess
    import sys

    root, model, _, _ = setup
    folder, path = collection
    subprocess.run([sys.executable, "-c", RAY_CLUSTER, str(model.path), str(path), str(folder / "cluster")],
                   check=True, capture_output=True)
    assert same_files(folder / "cluster", folder / "single")


def test_the_command_line_shards_and_merges(setup, tmp_path):
    from .conftest import assert_input_error, rank

    root, model, docs, _ = setup
    collection = tmp_path / "docs.tsv"
    collection.write_text("".join(f"{d}\t{' '.join(t.split())}\n" for d, t in docs[:50]))
    common = ["--collection", collection, "--model", model.path, "--batch-size", 8, "--threads", 1, "--windows"]
    rank("encode", *common, "--store", tmp_path / "single")
    for i in range(2):
        rank("encode", *common, "--store", tmp_path / f"part{i}", "--shard", f"{i}/2")
    rank("encode", "--store", tmp_path / "merged", "--merge", tmp_path / "part0", "--merge", tmp_path / "part1")
    assert same_files(tmp_path / "merged", tmp_path / "single")
    assert rank("encode", *common, "--store", tmp_path / "bad", "--shard", "2/2", check=False).returncode == 2
    result = rank("encode", "--store", tmp_path / "bad", "--merge", tmp_path / "part0", check=False)
    assert_input_error(result, "each of the 2 shards once")
    assert not (tmp_path / "bad").exists()


def test_store_options_that_cannot_go_together_are_refused_in_one_line(setup, tmp_path):
    from .conftest import assert_input_error, rank

    root, model, docs, single = setup
    collection = tmp_path / "docs.tsv"
    collection.write_text("".join(f"{d}\t{' '.join(t.split())}\n" for d, t in docs[:5]))
    common = ["--collection", collection, "--model", model.path]
    cases = {("--engine", "ray", "--shard", "0/2"): "--shard splits a single-machine build; it cannot go with "
                                                      "--engine ray",
             ("--add", "--merge", single.path): "--add/--delete/--compact and --merge cannot go together",
             ("--add", "--shard", "0/2"): "it cannot go with --add/--delete/--compact",
             ("--backend", "onnx", "--engine", "ray"): "--backend onnx runs in this process",
             ("--backend", "onnx"): "--backend onnx is for --encoder biencoder"}
    for extra, message in cases.items():
        assert_input_error(rank("encode", *common, "--store", tmp_path / "s", *extra, check=False), message)
        assert not (tmp_path / "s").exists()


def test_an_unreachable_ray_address_fails_at_once_with_one_line(setup):
    from ranker.store.distributed import check_reachable

    with pytest.raises(RankerError, match="cannot reach a Ray cluster at 127.0.0.1:1"):
        check_reachable("127.0.0.1:1", timeout=2.0)


def test_an_address_where_something_other_than_ray_listens_fails_at_once(setup):
    """An HTTP server at the address (not Ray's gRPC): one line within the timeout, not ray.init's minutes."""
    import http.server
    import threading
    import time

    from ranker.store.distributed import check_reachable

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(RankerError, match="answers, but not as a Ray cluster does"):
            check_reachable(f"127.0.0.1:{server.server_address[1]}", timeout=2.0)
        assert time.monotonic() - started < 10
    finally:
        server.shutdown()
