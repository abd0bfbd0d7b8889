"""The reranker registry, the artifact convention and ``ranker.load``: kinds read from folders, never from names."""

from __future__ import annotations

import json
import os

import pytest

import ranker
from ranker.errors import MissingInputError, RankerError
from ranker.io.artifact import ArtifactError, read_metadata, write_metadata
from ranker.models.kinds import reranker_kind
from ranker.models.loading import MODELS_ENV, models_dir, shipped_model
from ranker.pipeline import Identity
from ranker.rerank.registry import RERANKERS, RerankerConfig, make_reranker, reranker_names
from ranker.types import Query, ScoredDoc


def test_names_aliases_and_unknown_names():
    assert {"identity", "cross-encoder", "biencoder", "twinbert", "ensemble"} <= set(RERANKERS)
    assert "teacher" in reranker_names() and "teacher" not in RERANKERS  # the role is an alias
    assert isinstance(make_reranker("identity"), Identity)
    with pytest.raises(RankerError, match="unknown reranker 'bm42'; available: biencoder, cross-encoder"):
        make_reranker("bm42")
    with pytest.raises(RankerError, match="name a reranker"):
        make_reranker(None)


def test_the_kind_is_read_from_the_artifact_not_its_name(tmp_path):
    misnamed = tmp_path / "teacher.json"  # an ensemble whatever its name says
    write_metadata(misnamed, "ensemble", components=[{"reranker": "identity"}], weights=[1.0])
    assert reranker_kind(misnamed) == "ensemble"
    reranker = make_reranker(None, RerankerConfig(model=str(misnamed)))
    ranking = reranker({"q": Query("q", "x")}, {"q": [ScoredDoc("q", "a", 1.0), ScoredDoc("q", "b", 2.0)]})
    assert [d.docno for d in ranking["q"]] == ["b", "a"]
    store = tmp_path / "store"
    store.mkdir()
    write_metadata(store, "embedding-store", count=0)
    with pytest.raises(RankerError, match="is a embedding-store artifact, not a model"):
        reranker_kind(store)


def test_models_folder_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    assert models_dir() == tmp_path
    with pytest.raises(MissingInputError, match=f"no shipped model 'twinbert' in {tmp_path}"):
        shipped_model("twinbert")
    (tmp_path / "twinbert").mkdir()
    assert shipped_model("twinbert") == tmp_path / "twinbert"
    monkeypatch.delenv(MODELS_ENV)
    assert models_dir().name == "models"


def test_the_models_option_is_a_setting_not_an_environment_variable(tmp_path, monkeypatch):
    """``rank --models DIR`` chooses the folder for this process only, ahead of $RANKER_MODELS; the next command
    without it searches as before, and nothing leaks into the environment of child processes."""
    from typer.testing import CliRunner

    from ranker.cli import app

    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "from-env"))
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    result = CliRunner().invoke(app, ["--models", str(chosen), "models", "list"])
    assert result.exit_code == 0, result.output
    assert models_dir() == chosen
    assert os.environ[MODELS_ENV] == str(tmp_path / "from-env")
    CliRunner().invoke(app, ["models", "list"])
    assert models_dir() == tmp_path / "from-env"


def test_shipped_models_are_found_from_any_working_folder(tmp_path):
    """Outside the clone (no ./models) the models beside the package are used: a newcomer's first command."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != MODELS_ENV}
    found = subprocess.run([sys.executable, "-c", "from ranker.models.loading import shipped_model; "
                            "print(shipped_model('twinbert'))"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert Path(found) == Path(ranker.__file__).resolve().parents[1] / "models" / "twinbert"


def test_metadata_has_type_and_format_version_and_older_files_still_read(tmp_path):
    record = write_metadata(tmp_path / "a", "bm25-index", documents=3, contents="title + ' ' + text")
    assert record["type"] == "bm25-index" and record["format_version"] == 1 and "ranker_version" in record
    assert json.loads((tmp_path / "a" / "ranker.json").read_text()) == record
    old = tmp_path / "old-store"
    old.mkdir()
    (old / "meta.json").write_text(json.dumps({"format": "ranker-embedding-store", "count": 1}))
    assert read_metadata(old, "embedding-store")["count"] == 1
    old_scores = tmp_path / "old-scores"
    old_scores.mkdir()
    (old_scores / "meta.json").write_text(json.dumps({"teacher": "models/teacher", "score_type": "logit"}))
    assert read_metadata(old_scores)["type"] == "teacher-scores"
    (old_scores / "meta.json").write_text("{cut off")
    with pytest.raises(ArtifactError, match="unreadable metadata"):
        read_metadata(old_scores)
    with pytest.raises(ArtifactError, match="is a teacher-scores artifact, not twinbert"):
        (old_scores / "meta.json").write_text(json.dumps({"teacher": "t", "score_type": "logit"}))
        read_metadata(old_scores, "twinbert")
    with pytest.raises(MissingInputError, match="not a ranker artifact"):
        read_metadata(tmp_path)
    for version in (99, 0, "1"):  # a newer layout, or a damaged record, is refused rather than misread
        (tmp_path / "a" / "ranker.json").write_text(json.dumps({**record, "format_version": version}))
        with pytest.raises(ArtifactError, match="is not one this ranker reads"):
            read_metadata(tmp_path / "a")


def test_load_opens_every_shipped_artifact_by_its_type():
    ensemble = ranker.load("models/ensemble-msmarco.json")
    assert ensemble["type"] == "ensemble" and len(ensemble["components"]) == len(ensemble["weights"]) == 3
    for name, expected in [("twinbert", "twinbert"), ("teacher", "cross-encoder"), ("teacher-scifact", "cross-encoder"),
                           ("twinbert-scifact", "twinbert")]:
        assert ranker.artifact_type(shipped_model(name)) == expected
    model = ranker.load(shipped_model("twinbert"))
    assert type(model).__name__ == "TwinBert" and model.config.crossing == "cos"
    # the shipped folders were written before the format version existed in the fingerprint: it is unchanged
    assert model.fingerprint() == read_metadata(shipped_model("twinbert"))["doc_fingerprint"]


def test_models_list_marks_the_default_and_scores_each_model_from_its_runs(tmp_path, data):
    """From a folder other than the clone: kinds from each folder's metadata, nDCG@10 from the runs the catalog
    names (here a run ranking exactly the judged passages first, and one that is not there)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from ranker.io.formats import read_qrels
    from ranker.models.loading import DEFAULT_MODELS

    default = DEFAULT_MODELS["twinbert"]

    root = Path(ranker.__file__).resolve().parents[1]
    models = tmp_path / "clone" / "models"
    models.mkdir(parents=True)
    import shutil

    shutil.copytree(root / "models" / default, models / default, ignore=shutil.ignore_patterns("onnx"))
    own = sum(f.stat().st_size for f in (models / default).rglob("*") if f.is_file()) / 1e6
    cached = models / default / "onnx" / "query-graph" / "model.onnx"  # an exported graph cached beside it
    cached.parent.mkdir(parents=True)
    with open(cached, "wb") as f:
        f.truncate(80_000_000)
    (models / "teacher").symlink_to(root / "models" / "teacher")
    judged = [q for q in read_qrels(data / "msmarco-passage/qrels/dl19.txt") if q.relevance > 0]
    best = sorted(judged, key=lambda q: (q.qid, -q.relevance))
    runs = tmp_path / "clone" / "runs"
    runs.mkdir()
    (runs / "ideal.trec").write_text("".join(f"{q.qid} Q0 {q.docno} {i + 1} {1000 - i} ideal\n"
                                             for i, q in enumerate(best)))
    (models / "twinbert-old").symlink_to(root / "models" / "twinbert")
    (models / "catalog.toml").write_text(
        f'[{default}]\npurpose = "the student"\nencode = "its store"\nstatus = "supported"\ndecided_by = "v"\n'
        'runs = { dl19 = "runs/ideal.trec" }\n'
        '[twinbert-old]\npurpose = "the old one"\nencode = "its store"\nstatus = "experiment"\ndecided_by = "w"\n'
        'runs = {}\n'
        '[teacher]\npurpose = "the teacher"\nencode = "nothing"\nstatus = "supported"\ndecided_by = "x"\n'
        'runs = { dl19 = "runs/missing.trec" }\n')
    env = {**os.environ, MODELS_ENV: str(models)}
    printed = subprocess.run([sys.executable, "-m", "ranker", "models", "list", "--data", str(data.resolve())],
                             cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    lines = printed.splitlines()
    student = next(line for line in lines if "twinbert" in line)
    teacher = next(line for line in lines if " teacher " in line)
    assert student.startswith(f"* {default} ") and " twinbert " in student and "dl19 1.0000" in student
    assert f"{own:5.0f} MB" in student  # the model's own files, not the graph cache
    assert teacher.startswith("* teacher") and "cross-encoder" in teacher and "dl19 —" in teacher
    assert "the student" in printed and "encodes: its store" in printed and "checkpoints" in printed
    assert " default " in student and "decided by: v" in printed  # the default is DEFAULT_MODELS', shown as such
    assert "twinbert-old" not in printed and "experiments kept for the record, not shown: 1" in printed
    everything = subprocess.run([sys.executable, "-m", "ranker", "models", "list", "--all", "--data",
                                 str(data.resolve())], cwd=tmp_path, env=env, capture_output=True, text=True,
                                check=True).stdout
    assert [line.split()[0] for line in everything.splitlines() if line.startswith(("* ", "  twinbert"))][:3] == [
        "*", "*", "twinbert-old"]  # defaults first, experiments last
    # figures are cached by the run's size and time: a changed run is scored anew
    (runs / "ideal.trec").write_text("".join(f"{q.qid} Q0 {q.docno} {i + 1} {i} worst\n" for i, q in enumerate(best)))
    again = subprocess.run([sys.executable, "-m", "ranker", "models", "list", "--data", str(data.resolve())],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert "dl19 1.0000" not in next(line for line in again.splitlines() if "twinbert" in line)
    (models / "catalog.toml").write_text("[teacher\npurpose = 1\n")
    broken = subprocess.run([sys.executable, "-m", "ranker", "models", "list"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert broken.returncode == 2 and "catalog.toml: not a TOML catalogue" in broken.stderr, broken.stderr
    assert "Traceback" not in broken.stderr


def test_the_readme_model_table_shows_what_rank_models_list_computes(data):
    """Every catalog model has a README row whose DL19 / SciFact figures are the ones computed from its runs."""
    from ranker.eval.catalog import catalog

    from .conftest import ROOT

    entries = catalog(ROOT / "models", ROOT, data)
    computed = {e.name: e.ndcg10 for e in entries}
    shown, labels = {}, {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4 and cells[0].split("`")[1] in computed:
            shown[cells[0].split("`")[1]] = [c.strip() for c in cells[2].split("/")]
            labels[cells[0].split("`")[1]] = cells[0]
    assert shown.keys() == computed.keys()
    assert all(e.status in labels[e.name] for e in entries)  # the row says what the catalogue says

    def figure(value):
        return "—" if value is None else f"{value:.4f}"

    for name, figures in computed.items():
        assert shown[name] == [figure(figures.get("dl19")), figure(figures.get("scifact"))], name


def test_the_catalogue_labels_every_model_and_never_names_a_default_itself(tmp_path, data):
    """A status is supported or experiment: a default is DEFAULT_MODELS' to say, and the default must be there."""
    from ranker.errors import RankerError
    from ranker.eval.catalog import catalog

    from .conftest import ROOT

    assert {e.status for e in catalog(ROOT / "models", ROOT, data)} == {"default", "supported", "experiment"}
    models = tmp_path / "models"
    models.mkdir()
    (models / "teacher").symlink_to(ROOT / "models" / "teacher")
    entry = '[teacher]\npurpose = "p"\nencode = "e"\ndecided_by = "d"\nruns = {{}}\nstatus = "{}"\n'
    for status, message in (("default", "not one of supported, experiment"), ("experiment", "marked an experiment"),
                            ("supported", "the default twinbert-v2 is not catalogued")):
        (models / "catalog.toml").write_text(entry.format(status))
        with pytest.raises(RankerError, match=message):
            catalog(models, tmp_path, data)
