"""SIGINT/SIGTERM: a stopped command leaves no half-written output and says so in one line; a checkpoint and its
trainer state always land together, so training resumes to the same weights; a stopped encode resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ranker.interrupt import Interrupted, deferred, install
from ranker.train.loop import TRAINER_STATE, LoopConfig, TrainingRun


@pytest.fixture
def handlers():
    """Install the CLI's handlers for the test, then put pytest's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    install()
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_signal_raises_and_a_deferred_one_waits_for_the_block(handlers):
    with pytest.raises(Interrupted) as stopped:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert stopped.value.exit_code == 143
    done = []
    with pytest.raises(Interrupted):
        with deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append("block finished")
    assert done == ["block finished"]


def _fit(folder: Path, stop_in_checkpoint_at: int | None = None) -> torch.Tensor:
    """A small regression trained for 6 steps (checkpoints every 2), resuming from ``folder`` if it holds one."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    run = TrainingRun(folder, LoopConfig(max_steps=6, warmup_steps=1, eval_every=2, checkpoint_every=2, seed=3))
    if run.resuming:
        model.load_state_dict(torch.load(run.checkpoint / "model.pt"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(number: int) -> dict:
        x = torch.randn(8, 4)
        loss = ((model(x).squeeze(1) - x.sum(1)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    def save(path: Path, dtype: torch.dtype, metadata: dict) -> None:
        path.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path / "model.pt")
        if path == run.checkpoint and metadata["step"] == stop_in_checkpoint_at:
            os.kill(os.getpid(), signal.SIGTERM)  # the model is written, its trainer state not yet
            time.sleep(0.05)

    run.fit(model, optimizer, step, validate=lambda: {"toy": 0.0}, save=save,
            metadata=lambda state: {"step": state["step"]}, pairs_per_step=8)
    return model.weight.detach().clone()


def test_a_signal_while_a_run_is_written_publishes_run_and_sidecar_together(handlers, tmp_path, monkeypatch):
    """A signal that arrives between the run and its sidecar waits for the sidecar: never a new run beside the
    previous run's sidecar."""
    import json

    from ranker.io import runs
    from ranker.types import ScoredDoc

    path = tmp_path / "run.trec"
    runs.save_run({"q1": [ScoredDoc("q1", "d1", 1.0)]}, path, "old", {"k": 1})
    written = runs.write_run

    def signalled(*args, **kwargs):
        written(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # the run is in place; its sidecar not yet
        time.sleep(0.05)

    monkeypatch.setattr(runs, "write_run", signalled)
    with pytest.raises(Interrupted):
        runs.save_run({"q1": [ScoredDoc("q1", "d2", 2.0)]}, path, "new", {"k": 2})
    assert path.read_text().split()[2] == "d2" and json.loads((tmp_path / "run.trec.json").read_text())["k"] == 2


def test_training_stopped_inside_a_checkpoint_resumes_to_the_same_weights(handlers, tmp_path):
    reference = _fit(tmp_path / "straight")
    with pytest.raises(Interrupted):
        _fit(tmp_path / "stopped", stop_in_checkpoint_at=4)
    state = torch.load(tmp_path / "stopped" / TRAINER_STATE, weights_only=False)["state"]
    assert state["step"] == 4  # the trainer state of the checkpoint that was being written when the signal came
    resumed = _fit(tmp_path / "stopped")
    torch.testing.assert_close(resumed, reference, rtol=0, atol=0)


def start(*args: object) -> subprocess.Popen:
    """``rank ARGS`` in a subprocess, stdout and stderr as one text stream."""
    return subprocess.Popen([sys.executable, "-m", "ranker", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def stop_once(process: subprocess.Popen, marker: str, sig: signal.Signals, timeout: float = 300) -> str:
    """Wait until ``marker`` appears in the output, send ``sig``, return all the output."""
    seen, started = "", time.monotonic()
    while marker not in seen:
        char = process.stdout.read(1)
        if not char or time.monotonic() - started > timeout:
            process.kill()
            raise AssertionError(f"{marker!r} never appeared on stderr:\n{seen[-2000:]}")
        seen += char
    process.send_signal(sig)
    # read through the text wrapper: communicate() reads the pipe itself and would drop what the wrapper buffered
    rest = process.stdout.read()
    process.wait(timeout=120)
    return seen + rest


def assert_interrupted(output: str, name: str) -> None:
    """One ``rank: interrupted by NAME`` line and no traceback."""
    lines = [line for line in output.splitlines() if line.startswith("rank: ")]
    assert len(lines) == 1 and lines[0].startswith(f"rank: interrupted by {name}"), output[-2000:]
    assert "Traceback" not in output


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from ranker.models.config import TwinBertConfig
    from ranker.models.twinbert import TwinBert

    torch.manual_seed(0)
    return TwinBert(TwinBertConfig(num_layers=1, doc_max_length=32)).save(tmp_path_factory.mktemp("m") / "model")


@pytest.mark.slow
def test_sigterm_during_encode_leaves_a_store_that_resumes(tiny_model, data, tmp_path):
    store = tmp_path / "store"
    corpus = data / "beir-scifact" / "corpus.jsonl"
    args = ("encode", "--collection", corpus, "--store", store, "--model", tiny_model, "--batch-size", 8)
    process = start(*args)
    output = stop_once(process, "store: ", signal.SIGTERM)
    assert process.returncode == 143
    assert_interrupted(output, "SIGTERM")
    assert not store.exists() and (tmp_path / "store.partial").is_dir()
    finished = subprocess.run([sys.executable, "-m", "ranker", *map(str, args)], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "5,183 vectors" in finished.stdout


def test_sigint_during_run_leaves_no_output(data, tmp_path):
    out = tmp_path / "runs" / "teacher.trec"
    msmarco = data / "msmarco-passage"
    process = start("run", "--topics", msmarco / "topics/dl19.tsv",
                    "--candidates", msmarco / "runs/bm25.dl19.top100.trec",
                    "--collection", msmarco / "passages/dl19.tsv", "--reranker", "biencoder", "--output", out)
    output = stop_once(process, "encode: ", signal.SIGINT)
    assert process.returncode == 130
    assert_interrupted(output, "SIGINT")
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


@pytest.mark.java
def test_rank_index_stopped_inside_lucene_says_so_and_leaves_nothing(data, tmp_path):
    """The JVM leaves SIGINT/SIGTERM to Python (-Xrs): a signal during Anserini's indexing ends the command with
    one line and 128 + signal once the Lucene call returns, and neither the index nor a temporary folder is left."""
    index = tmp_path / "indexes" / "scifact"
    process = start("index", "--collection", data / "beir-scifact" / "corpus.jsonl", "--index", index)
    output = stop_once(process, "indexing 5183 documents with Anserini", signal.SIGTERM)
    assert process.returncode == 143, output[-2000:]
    assert_interrupted(output, "SIGTERM")
    assert not index.exists() and [p.name for p in (tmp_path / "indexes").iterdir()] == [f".{index.name}.lock"]


@pytest.mark.slow
@pytest.mark.java
def test_rank_run_stopped_during_bm25_search_writes_no_run(scifact_index, data, tmp_path):
    out = tmp_path / "runs" / "bm25.trec"
    process = start("run", "--topics", data / "beir-scifact" / "queries.jsonl", "--index", scifact_index,
                    "--k", 1000, "--threads", 1, "--output", out)
    output = stop_once(process, "BM25", signal.SIGINT)
    assert process.returncode == 130, output[-2000:]
    assert_interrupted(output, "SIGINT")
    assert not out.exists()
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []  # no temporary file either
