"""Store edits are transactions: stopped at any step of their commit (SIGKILL, a full disk), the store opens as
before or as after the edit, never anything else; readers see one commit; a second writer is refused."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ranker.errors import RankerError
from ranker.store import edit as store_edit
from ranker.store.build import build_store
from ranker.store.embeddings import EmbeddingStore
from ranker.store.files import store_files

from .conftest import assert_input_error, rank
from .crash_edit import DOCS, TOMBSTONED, ToyEncoder, run

EDITS = ("add", "replace", "delete", "compact")
ROOT = Path(__file__).resolve().parents[1]


def state(path: Path) -> dict[str, bytes]:
    """What a reader of the store's last commit sees: each live docno's vector."""
    store = EmbeddingStore.load(path)
    live = [store.docnos[r] for r in store.live_rows()]
    return {d: store.lookup([d]).tobytes() for d in live} | {"#rows": str(store.row_count).encode()}


def leftovers(path: Path) -> set[str]:
    """Files in the store folder that its commit does not name."""
    named = set(store_files(EmbeddingStore.load(path).meta).values()) | {"ranker.json"}
    return {p.name for p in path.iterdir()} - named


@pytest.fixture
def base(tmp_path) -> Path:
    """A store of 20 passages, 3 of them deleted (so that a compaction has work), then 2 added."""
    path = tmp_path / "base"
    build_store(ToyEncoder(), DOCS[:18], path, batch_size=4, progress=False)
    store_edit.delete_from_store(path, TOMBSTONED)
    store_edit.add_to_store(ToyEncoder(), DOCS[18:], path)
    return path


def outcome(base: Path, edit: str, tmp_path: Path) -> tuple[dict, dict, list[str]]:
    """The states before and after ``edit`` and the steps its commit goes through (run once, not stopped)."""
    copy = tmp_path / f"reference-{edit}"
    shutil.copytree(base, copy)
    steps: list[str] = []
    store_edit.commit_step = steps.append
    try:
        before = state(copy)
        run(edit, copy)
    finally:
        store_edit.commit_step = lambda step: None
    return before, state(copy), steps


def stopped_edit(edit: str, path: Path, step: int, how: str = "kill") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.crash_edit", edit, str(path), str(step), how], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("edit", EDITS)
def test_a_reader_sees_the_store_before_or_after_at_every_step(base, edit, tmp_path, monkeypatch):
    before, after, steps = outcome(base, edit, tmp_path)
    seen: list[tuple[str, bool]] = []
    monkeypatch.setattr(store_edit, "commit_step", lambda step: seen.append((step, state(base) == after)))
    assert state(base) == before
    run(edit, base)
    assert [s for s, _ in seen] == steps and state(base) == after != before
    committed = steps.index("committed")
    assert all(is_after for _, is_after in seen[committed:]) and not any(is_after for _, is_after in seen[:committed])
    assert not leftovers(base)


@pytest.mark.parametrize("edit", EDITS)
def test_an_edit_killed_at_any_step_leaves_the_store_before_or_after(base, edit, tmp_path):
    before, after, steps = outcome(base, edit, tmp_path)
    assert {"append", "commit", "committed"} & set(steps) and len(steps) >= 3
    for step in range(1, len(steps) + 1):
        path = tmp_path / f"{edit}-{step}"
        shutil.copytree(base, path)
        process = stopped_edit(edit, path, step)
        process.communicate(timeout=60)
        assert process.returncode == -9, (step, steps[step - 1])
        found = state(path)
        assert found == (after if step > steps.index("committed") else before), (step, steps[step - 1])
        store_edit.add_to_store(ToyEncoder(), [("later", "an edit after the stop")], path)  # cleans the rest
        assert not leftovers(path) and set(state(path)) == set(found) | {"later"}


def full_disk_at(step: int, file: Path):
    """A commit hook whose ``step``-th call fails as a write to a full disk would."""
    calls = [0]

    def hook(name: str) -> None:
        calls[0] += 1
        if calls[0] == step:
            raise OSError(errno.ENOSPC, "No space left on device", str(file))

    return hook


@pytest.mark.parametrize("edit", EDITS)
def test_a_full_disk_at_any_step_leaves_the_store_as_it_was(base, edit, tmp_path, monkeypatch):
    before, _, steps = outcome(base, edit, tmp_path)
    for step in range(1, steps.index("commit") + 2):  # up to the write of the commit record itself
        path = tmp_path / f"{edit}-{step}"
        shutil.copytree(base, path)
        monkeypatch.setattr(store_edit, "commit_step", full_disk_at(step, path / "embeddings.npy"))
        with pytest.raises(RankerError, match=r"embeddings.npy: No space left on device: the edit was not committed"):
            run(edit, path)
        monkeypatch.setattr(store_edit, "commit_step", lambda name: None)
        assert state(path) == before, (step, steps[step - 1])


def test_a_second_writer_process_is_refused_while_the_first_edits(base, tmp_path):
    _, after, steps = outcome(base, "add", tmp_path)
    first = stopped_edit("add", base, steps.index("commit") + 1, how="pause")
    deadline = time.monotonic() + 60
    while not Path(f"{base}.paused").exists():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    for second in (lambda: store_edit.add_to_store(ToyEncoder(), [("x", "another")], base),
                   lambda: store_edit.delete_from_store(base, ["d2"]), lambda: store_edit.compact_store(base),
                   lambda: build_store(ToyEncoder(), DOCS, base, progress=False)):
        with pytest.raises(RankerError, match="is being edited by another process"):
            second()
    Path(f"{base}.resume").touch()
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err.decode()
    assert state(base) == after


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 2 MB file system (tmpfs); skipped where this process may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small file system here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.slow
@pytest.mark.java
def test_a_real_full_disk_is_one_line_naming_the_path_and_keeps_store_and_index(small_disk, data, tmp_path):
    """rank index and rank store add on a disk that fills: exit 2, one line naming the path, nothing half-written;
    the store opens as before and takes the same add once there is room."""
    collection = tmp_path / "docs.tsv"
    lines = (data / "msmarco-passage" / "passages" / "dl19.tsv").read_text().splitlines()[:3000]
    collection.write_text("\n".join(lines) + "\n")
    result = rank("index", "--collection", collection, "--index", small_disk / "index", check=False)
    assert_input_error(result, str(small_disk / "index"), "No space left on device")
    assert [p.name for p in small_disk.iterdir()] == [".index.lock"]  # the writer lock only: nothing half-written
    encoded = rank("encode", "--collection", collection, "--store", small_disk / "encoded", check=False)
    assert_input_error(encoded, str(small_disk / "encoded"), "No space left on device")  # its own line, not the bar's
    shutil.rmtree(small_disk / "encoded.partial", ignore_errors=True)
    store = small_disk / "store"
    build_store(ToyEncoder(), DOCS, store, batch_size=4, progress=False)
    before = state(store)
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):  # the disk full
        while True:
            f.write(b"\0" * 4096)
    os.truncate(filler, filler.stat().st_size - 8192)  # but for a few kilobytes
    added = [(f"x{i}", f"added passage {i} " * 20) for i in range(400)]
    with pytest.raises(RankerError, match=f"{small_disk}.*No space left on device: the edit was not committed"):
        store_edit.add_to_store(ToyEncoder(), added, store)
    assert state(store) == before
    filler.unlink()
    assert len(store_edit.add_to_store(ToyEncoder(), added, store)) == len(DOCS) + 400
    assert not leftovers(store)


@pytest.mark.slow
@pytest.mark.java
def test_a_full_disk_during_an_index_edit_is_one_line_and_keeps_the_index(small_disk, data, tmp_path):
    """rank index --add and --compact on a disk that fills inside Lucene's writer: exit 2, one line naming the
    index, no Java traceback; the index answers as before."""
    from ranker.first_stage.bm25 import Bm25Retriever

    lines = (data / "msmarco-passage" / "passages" / "dl19.tsv").read_text().splitlines()
    first, more = tmp_path / "first.tsv", tmp_path / "more.tsv"
    first.write_text("\n".join(lines[:40]) + "\n")
    more.write_text("\n".join(lines[40:3000]) + "\n")
    index = small_disk / "index"
    rank("index", "--collection", first, "--index", index)
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(line.split("\t")[0] + "\n" for line in lines[:20]))
    rank("index", "--index", index, "--delete", ids)  # deletions for the compaction to purge
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    for edit in (("--collection", more, "--add"), ("--compact",)):
        result = rank("index", "--index", index, *edit, check=False)
        assert_input_error(result, str(index))
        assert "No space left on device" in result.stderr and "Exception in thread" not in result.stderr
        assert Bm25Retriever(index)._searcher.doc(lines[30].split("\t")[0]) is not None
    filler.unlink()


@pytest.mark.parametrize("edit", ["files", "count", "generation", "deleted_rows"])
def test_a_store_whose_metadata_names_outside_files_or_bad_counts_is_refused_untouched(base, edit, tmp_path):
    """``ranker.json`` is data a user may have downloaded: a ``files`` entry naming a file outside the store (which
    an edit's cleanup would truncate and a commit delete) or counts that are not whole numbers make the store
    refused as damaged, before any edit touches a file."""
    victim = tmp_path / "victim" / "notes.txt"
    victim.parent.mkdir()
    victim.write_text("precious\n" * 100)
    meta_file = base / "ranker.json"
    meta = json.loads(meta_file.read_text())
    changes = {"files": {"files": {**meta.get("files", {}), "docnos": "../victim/notes.txt"}}, "count": {"count": -1},
               "generation": {"generation": "two"}, "deleted_rows": {"deleted_rows": [10_000]}}
    meta_file.write_text(json.dumps({**meta, **changes[edit]}))
    with pytest.raises(RankerError, match="a damaged embedding store"):
        EmbeddingStore.load(base)
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("nowhere\n")
    for command in (("delete", "--docnos", unknown), ("compact",)):
        assert_input_error(rank("store", *command, "--store", base, check=False), "a damaged embedding store")
    assert victim.read_text() == "precious\n" * 100


def test_temporary_files_of_a_killed_write_are_removed_by_the_next_edit(base):
    """SIGKILL between an atomic write and its rename leaves ``.NAME.xxxx.tmp``: the next edit removes the store's
    own, and nothing else."""
    own = [".docno_keys.3.npy.k1l2.tmp", ".ranker.json.ab12.tmp"]
    foreign = ".notes.txt.zz.tmp"
    for name in [*own, foreign]:
        (base / name).write_bytes(b"left by a killed write")
    store_edit.delete_from_store(base, ["d1"])
    assert not any((base / name).exists() for name in own) and (base / foreign).exists()
