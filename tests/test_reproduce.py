"""Reproduction as data: every system of RESULTS.md has its commands and expected figures, the committed runs come
to them, a changed figure fails, and a re-run is resumable."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ranker.cli import app
from ranker.errors import RankerError
from ranker.eval.reproduce import check, execute, placeholders, plan, read_spec_file, select, summary
from tests.conftest import ROOT

SPEC, RESULTS = ROOT / "scripts" / "reproduce.toml", ROOT / "scripts" / "results.toml"


def results_systems() -> set[tuple[str, str]]:
    raw = tomllib.loads(RESULTS.read_text(encoding="utf-8"))
    return {(c["key"], s["run"]) for c in raw["collection"] for s in c["system"]}


def test_every_system_of_results_has_commands_and_expected_figures(data):
    spec = read_spec_file(SPEC, RESULTS, data)
    assert {(s.collection, s.run) for s in spec.systems} == results_systems()
    for s in spec.systems:
        assert len(s.expected) == 3, s.name  # nDCG@10, RR@10, R@100 at the collection's level
        assert s.profile != "quick" or s.run in " ".join(s.commands), f"{s.name}: its commands do not write its run"
    result = CliRunner().invoke(app, ["reproduce", "--all", "--dry-run", "--profile", "full", "--data", str(data)])
    assert result.exit_code == 0, result.output
    listed = [line for line in result.output.splitlines() if " | " in line]
    assert len(listed) == len(spec.systems)
    for s in spec.systems:
        assert any(s.run in line for line in listed), s.run
    assert not re.search(r"\{(data|work|stores)\}", result.output.split("\n" + listed[0])[0])  # commands filled in


def test_a_quick_plan_runs_needs_first_and_each_step_once(data):
    spec = read_spec_file(SPEC, RESULTS, data)
    steps = plan(spec, select(spec, ["twinbert-bm25.scifact-test", "twinbert.scifact-test"]), "quick")
    assert [s.name for s in steps] == ["scifact-index", "runs/bm25.scifact-test.trec", "scifact-store.float16",
                                       "runs/twinbert.scifact-test.trec", "runs/twinbert-bm25.scifact-test.trec"]
    full = plan(spec, select(spec, ["twinbert-v3.scifact-test"]), "full")
    trained = [s.name for s in full if s.profile == "full"]
    assert trained[:3] == ["scifact-train-bm25", "teacher", "teacher-scifact-test"]
    assert all(s.profile != "full" for s in plan(spec, spec.systems, "quick"))  # quick trains nothing


@pytest.mark.slow
def test_the_committed_runs_come_to_their_expected_figures(data):
    """The runs in runs/ (and the data's) give the figures the spec records: a re-made run committed without its
    figures, or a figure edited by hand, fails here."""
    spec = read_spec_file(SPEC, RESULTS, data)
    figures = check(spec, spec.systems, placeholders(spec, data, ROOT / "work" / "reproduce", "quick"))
    failed = [f"{f.system.run} {f.measure}: {f.got} != {f.expected}" for f in figures if f.verdict != "OK"]
    assert not failed and len(figures) == 3 * len(spec.systems), failed


def changed_spec(tmp_path: Path, run: str, delta: float) -> Path:
    """The spec with the nDCG@10 expected of ``run`` moved by ``delta``."""
    text = SPEC.read_text(encoding="utf-8")
    start = text.index(f'run = "{run}"')
    line = text.index("expected = {", start)
    value = float(re.search(r'"nDCG@10" = ([0-9.]+)', text[line:]).group(1))
    changed = text[:line] + text[line:].replace(f'"nDCG@10" = {value:.4f}', f'"nDCG@10" = {value + delta:.4f}', 1)
    (tmp_path / "scripts").mkdir(exist_ok=True)
    if not (tmp_path / "runs").exists():
        (tmp_path / "runs").symlink_to(ROOT / "runs")  # the spec's paths are relative to the folder above scripts/
    path = tmp_path / "scripts" / "reproduce.toml"
    path.write_text(changed, encoding="utf-8")
    return path


def test_a_changed_expected_figure_fails_and_a_near_one_is_close(tmp_path, data):
    runner = CliRunner()
    for delta, verdict, code in ((0.02, "FAIL", 1), (0.005, "close", 0)):
        spec = changed_spec(tmp_path, "runs/teacher.dl19.trec", delta)
        result = runner.invoke(app, ["reproduce", "--no-run", "--system", "teacher.dl19", "--spec", str(spec),
                                     "--results", str(RESULTS), "--data", str(data)])
        assert result.exit_code == code, result.output
        line = next(line for line in result.output.splitlines() if "nDCG@10" in line)
        assert line.startswith(verdict), line


def test_a_run_is_remade_checked_and_not_redone(tmp_path, data):
    """A system's command writes its run in the work folder; it is checked; a second call finds it done; a
    command that fails stops the reproduction naming it."""
    expected = read_spec_file(SPEC, RESULTS, data)
    fused = next(s for s in expected.systems if s.run == "runs/twinbert-bm25.dl19.trec").expected
    figures = ", ".join(f'"{m}" = {v}' for m, v in fused.items())
    fuse = (f"rank fuse --ensemble {ROOT}/models/twinbert-bm25-msmarco.json --output {{work}}/fused.trec "
            "{work}/twinbert.trec {data}/msmarco-passage/runs/bm25.dl19.top100.trec")
    (tmp_path / "scripts").mkdir()
    spec_path = tmp_path / "scripts" / "reproduce.toml"
    spec_path.write_text(f"""
[tolerance]
ok = 0.00005
close = 0.01
int8_7bit = 0.05
[profiles]
quick = "{{work}}/stores"
full = "{{work}}/stores"
[[step]]
name = "copy"
commands = ["cp {ROOT}/runs/twinbert.dl19.trec {{work}}/twinbert.trec"]
[[step]]
name = "broken"
commands = ["rank fuse --ensemble {{work}}/none.json --output {{work}}/never.trec {{work}}/twinbert.trec"]
[[system]]
collection = "dl19"
name = "fused"
run = "{{work}}/fused.trec"
profile = "quick"
needs = ["copy"]
commands = ["{fuse}"]
expected = {{ {figures} }}
""", encoding="utf-8")
    spec = read_spec_file(spec_path, RESULTS, data)
    values = placeholders(spec, data, tmp_path / "work", "quick")
    lines: list[str] = []
    execute(spec, plan(spec, spec.systems, "quick"), values, log=lines.append)
    assert summary(check(spec, spec.systems, values)) == {"OK": 3, "close": 0, "FAIL": 0}
    assert (tmp_path / "work" / "reproduce.json").is_file()
    lines.clear()
    execute(spec, plan(spec, spec.systems, "quick"), values, log=lines.append)
    assert lines and all(line.endswith("already made") for line in lines)
    with pytest.raises(RankerError, match="broken: exited with status 2"):
        execute(spec, [spec.steps["broken"]], values, log=lines.append)
    assert not (tmp_path / "work" / "never.trec").exists()


def test_bad_specs_and_names_are_one_line_errors(tmp_path, data):
    spec = read_spec_file(SPEC, RESULTS, data)
    with pytest.raises(RankerError, match="no system named 'nope'"):
        select(spec, ["nope"])
    broken = tmp_path / "reproduce.toml"
    broken.write_text(SPEC.read_text(encoding="utf-8").replace('name = "teacher ensemble"\n', "", 1), encoding="utf-8")
    with pytest.raises(RankerError, match=r"system None \(runs/ensemble.dl19.trec\): missing key 'name'"):
        read_spec_file(broken, RESULTS, data)
    with pytest.raises(RankerError, match="profile must be one of quick, full"):
        plan(spec, spec.systems, "fast")


def test_the_clone_spec_is_found_from_any_folder(tmp_path, monkeypatch):
    from ranker.eval.reproduce import spec_paths

    monkeypatch.chdir(tmp_path)  # a user's own folder: no scripts/ here
    spec, results, _ = spec_paths(None, None, None)
    assert spec == ROOT / "scripts" / "reproduce.toml" and results == ROOT / "scripts" / "results.toml"
    assert spec_paths(tmp_path / "mine.toml", None, tmp_path)[1:] == (tmp_path / "results.toml", tmp_path)
