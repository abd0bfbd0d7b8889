"""Reproduction as data (after Pyserini's two-click reproductions): every figure of RESULTS.md with the commands
that make its run and the value it must come to, re-run and checked by one command (``rank reproduce``).

The spec (``scripts/reproduce.toml``) holds steps (prerequisites: an index, a store, a training recipe), systems
(a run: its commands, or the recipe step that makes it, and its expected figure per measure) and benchmarks.
:func:`plan` orders what a profile re-makes, :func:`execute` runs it (resumable: finished commands are recorded in
the work folder), :func:`check` evaluates every selected run and compares it with its expected figures.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ranker.cpu import int8_reduce_range
from ranker.errors import RankerError
from ranker.eval.evaluate import evaluate
from ranker.eval.report import MEASURES, read_spec
from ranker.io.atomic import atomic_open
from ranker.io.formats import read_run
from ranker.io.sources import load_qrels
from ranker.measures import parse_measures

PROFILES = ("quick", "full")
SPEC_FILE = "scripts/reproduce.toml"
STATE_FILE = "reproduce.json"
VERDICTS = ("OK", "close", "FAIL")


@dataclass(frozen=True)
class Step:
    """Something that runs: a prerequisite step, a system's run or a benchmark."""

    name: str
    commands: tuple[str, ...]
    needs: tuple[str, ...] = ()
    creates: str | None = None
    profile: str = "quick"


@dataclass(frozen=True)
class System:
    """One row of RESULTS.md: its run, who makes it, and its expected figure per measure."""

    collection: str
    name: str
    run: str
    profile: str  # quick | full | data
    expected: dict[str, float]
    commands: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    recipe: str | None = None  # full: the step that makes the run
    recorded: str | None = None  # full: the command the committed run's sidecar records
    int8_query: bool = False  # its queries go through an int8 graph (7-bit weights on a CPU without VNNI)

    def matches(self, selector: str) -> bool:
        """A system is selected by its name, its run's path or its run's stem (``teacher.dl19``)."""
        return selector in (self.name, self.run, Path(self.run).name.removesuffix(".trec"))


@dataclass(frozen=True)
class Spec:
    path: Path
    root: Path  # the folder commands run in (the repository)
    ok: float
    close: float
    int8_7bit: float  # close, for an int8_query system on a CPU whose int8 graphs take 7-bit weights
    stores: dict[str, str]  # profile -> what {stores} stands for
    steps: dict[str, Step]
    systems: tuple[System, ...]
    benchmarks: tuple[Step, ...]
    collections: dict[str, tuple[Path, int | None]] = field(default_factory=dict)  # key -> qrels, rel_level


@dataclass(frozen=True)
class Figure:
    """One measure of one system: what it must come to and what it came to (``None``: the run is missing)."""

    system: System
    measure: str
    expected: float
    got: float | None
    ok: float  # the spec's tolerances
    close: float

    @property
    def verdict(self) -> str:
        """``OK`` within ``ok`` of the expected figure, ``close`` within ``close``, else ``FAIL``."""
        if self.got is None:
            return "FAIL"
        gap = abs(self.got - self.expected)
        return "OK" if gap <= self.ok else "close" if gap <= self.close else "FAIL"


def read_spec_file(path: str | Path, results: str | Path, data: str | Path) -> Spec:
    """Parse a reproduction spec and the results spec it checks against (qrels and levels per collection).

    Raises:
        RankerError: Unreadable TOML, a missing key (named with the system or step), or a system whose collection
            the results spec lacks.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RankerError(f"{path}: {e}") from None
    where = "the file"
    try:
        steps = {}
        for s in raw.get("step", []):
            where = f"step {s.get('name')!r}"
            steps[s["name"]] = Step(s["name"], tuple(s["commands"]), tuple(s.get("needs", ())), s.get("creates"),
                                    s.get("profile", "quick"))
        systems = []
        for s in raw["system"]:
            where = f"system {s.get('name')!r} ({s.get('run')})"
            systems.append(System(s["collection"], s["name"], s["run"], s["profile"], dict(s["expected"]),
                                  tuple(s.get("commands", ())), tuple(s.get("needs", ())), s.get("recipe"),
                                  s.get("recorded"), s.get("int8_query", False)))
        benchmarks = []
        for s in raw.get("benchmark", []):
            where = f"benchmark {s.get('name')!r}"
            benchmarks.append(Step(s["name"], tuple(s["commands"]), tuple(s.get("needs", ()))))
        ok, close, int8_7bit = (raw["tolerance"][k] for k in ("ok", "close", "int8_7bit"))
        stores = dict(raw["profiles"])
    except KeyError as e:
        raise RankerError(f"{path}: {where}: missing key {e}") from None
    collections = {c.key: (c.qrels, c.rel_level) for c in read_spec(results, data).collections}
    for s in systems:
        if s.collection not in collections:
            raise RankerError(f"{path}: system {s.name!r}: collection {s.collection!r} is not in {results}")
        if s.profile not in (*PROFILES, "data"):
            raise RankerError(f"{path}: system {s.name!r}: profile must be quick, full or data, not {s.profile!r}")
        if s.profile == "quick" and not s.commands or s.profile == "full" and s.recipe not in steps:
            raise RankerError(f"{path}: system {s.name!r}: a {s.profile} system needs "
                              f"{'commands' if s.profile == 'quick' else 'a recipe naming one of its steps'}")
        for need in s.needs:
            _need(path, s.name, need, steps, systems)
    for s in steps.values():
        for need in s.needs:
            _need(path, s.name, need, steps, systems)
    return Spec(path, path.resolve().parent.parent, ok, close, int8_7bit, stores, steps, tuple(systems),
                tuple(benchmarks), collections)


def spec_paths(spec: Path | None, results: Path | None, data: Path | None) -> tuple[Path, Path, Path]:
    """The spec (``scripts/reproduce.toml`` in this folder, else the clone's beside the package), the results spec
    beside it and the data folder (``../shared/data`` here, else beside the clone), where not given."""
    from ranker.io.datasets import DATA_DIR
    from ranker.models.loading import PACKAGE_MODELS

    clone = PACKAGE_MODELS.parent
    if spec is None:
        here = Path(SPEC_FILE)
        spec = here if here.is_file() or not (clone / SPEC_FILE).is_file() else clone / SPEC_FILE
    if data is None:
        data = DATA_DIR if DATA_DIR.is_dir() or not (clone / DATA_DIR).is_dir() else clone / DATA_DIR
    return spec, results or spec.parent / "results.toml", data


def _need(path: Path, who: str, need: str, steps: dict[str, Step], systems: Sequence[System]) -> None:
    if need not in steps and not any(s.run == need for s in systems):
        raise RankerError(f"{path}: {who!r} needs {need!r}, which is neither a step nor a system's run")


def select(spec: Spec, selectors: Sequence[str] = ()) -> list[System]:
    """The systems named by ``selectors`` (all when none).

    Raises:
        RankerError: A selector matches no system (the message lists a few names).
    """
    if not selectors:
        return list(spec.systems)
    chosen = []
    for selector in selectors:
        found = [s for s in spec.systems if s.matches(selector)]
        if not found:
            names = ", ".join(sorted({Path(s.run).name.removesuffix(".trec") for s in spec.systems})[:8])
            raise RankerError(f"no system named {selector!r} in {spec.path} (a name, a run path or a run stem "
                              f"such as {names}, ...)")
        chosen += [s for s in found if s not in chosen]
    return chosen


def plan(spec: Spec, systems: Sequence[System], profile: str, bench: bool = False) -> list[Step]:
    """What ``profile`` re-makes for ``systems``, in order, each step once, every need before its user.

    quick: the commands of the quick systems and the steps they need; full: every full step first (in the spec's
    order), then the same. Benchmarks come last when ``bench``.
    """
    if profile not in PROFILES:
        raise RankerError(f"profile must be one of {', '.join(PROFILES)}, not {profile!r}")
    by_run = {s.run: s for s in spec.systems}
    ordered: list[Step] = []

    def add(step: Step) -> None:
        if step in ordered:
            return
        for need in step.needs:
            add(spec.steps[need] if need in spec.steps else _as_step(by_run[need]))
        ordered.append(step)

    if profile == "full":
        for step in spec.steps.values():
            if step.profile == "full":
                add(step)
    for system in systems:
        if system.profile == "quick":
            add(_as_step(system))
        elif system.profile == "full" and profile == "full":
            add(spec.steps[system.recipe])
    if bench:
        for b in spec.benchmarks:
            add(b)
    return ordered


def made_how(system: System, profile: str, no_run: bool = False) -> str:
    """How ``profile`` comes by ``system``'s run: re-made, or checked as committed (and who would make it)."""
    if system.profile == "data":
        return "shipped with the data: checked"
    how = ("its commands" if system.profile == "quick" else
           f"step {system.recipe!r} (--profile full; its sidecar records: {system.recorded})")
    remade = not no_run and (system.profile == "quick" or profile == "full")
    return f"re-made by {how}" if remade else f"checked as committed (made by {how})"


def _as_step(system: System) -> Step:
    return Step(system.run, system.commands, system.needs)


def fill(text: str, values: dict[str, str]) -> str:
    """``text`` with ``{data}``, ``{work}`` and ``{stores}`` replaced by ``values``."""
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def expand(command: str, values: dict[str, str]) -> list[str]:
    """A command's arguments, placeholders filled after splitting (a path with spaces stays one argument), and
    ``rank`` run as this Python's ``python -m ranker``."""
    args = [fill(arg, values) for arg in shlex.split(command)]
    if args and args[0] == "rank":
        args[:1] = [sys.executable, "-m", "ranker"]
    return args


def placeholders(spec: Spec, data: Path, work: Path, profile: str) -> dict[str, str]:
    """What ``{data}``, ``{work}`` and ``{stores}`` stand for."""
    values = {"data": str(data.resolve()), "work": str(work.resolve())}
    values["stores"] = spec.stores[profile].replace("{work}", values["work"])
    return values


def execute(spec: Spec, steps: Sequence[Step], values: dict[str, str], log: Callable[[str], None] = print) -> None:
    """Run ``steps``' commands in the repository, skipping what is already made (a step's ``creates`` exists, or
    the same command finished before: ``WORK/reproduce.json``), with progress, elapsed time and an ETA.

    Raises:
        RankerError: A command failed (its exit status and the command); what finished before is kept.
    """
    state_path = Path(values["work"]) / STATE_FILE
    state_path.parent.mkdir(parents=True, exist_ok=True)
    done = set(json.loads(state_path.read_text())["done"]) if state_path.is_file() else set()
    todo = [(step, command) for step in steps for command in step.commands]
    started, timed = time.monotonic(), []
    for i, (step, command) in enumerate(todo, 1):
        args = expand(command, values)
        creates = step.creates and Path(fill(step.creates, values))
        if (creates and (spec.root / creates).exists()) or " ".join(args) in done:
            log(f"[{i}/{len(todo)}] {step.name}: already made")
            continue
        eta = f", ETA {_clock(sum(timed) / len(timed) * (len(todo) - i + 1))}" if timed else ""
        log(f"[{i}/{len(todo)}] {step.name} ({_clock(time.monotonic() - started)} so far{eta}): {command}")
        begun = time.monotonic()
        status = subprocess.run(args, cwd=spec.root).returncode
        if status != 0:
            raise RankerError(f"{step.name}: exited with status {status}: {command}")
        timed.append(time.monotonic() - begun)
        done.add(" ".join(args))
        with atomic_open(state_path) as f:
            json.dump({"done": sorted(done)}, f, indent=1)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def check(spec: Spec, systems: Iterable[System], values: dict[str, str]) -> list[Figure]:
    """Every selected system's run evaluated on its collection (the measures of RESULTS.md) against its expected
    figures; a missing run fails each of its figures. A system whose queries go through an int8 graph is close
    within ``int8_7bit`` on a CPU whose int8 graphs take 7-bit weights (:func:`ranker.cpu.int8_reduce_range`)."""
    figures, qrels, seven_bits = [], {}, int8_reduce_range()
    for system in systems:
        close = spec.int8_7bit if system.int8_query and seven_bits else spec.close
        path = spec.root / fill(system.run, values)
        if not path.is_file():
            figures += [Figure(system, m, v, None, spec.ok, close) for m, v in system.expected.items()]
            continue
        qrels_path, level = spec.collections[system.collection]
        if qrels_path not in qrels:
            qrels[qrels_path] = load_qrels(str(qrels_path))
        means = evaluate(qrels[qrels_path], {system.name: read_run(path)},
                         parse_measures(list(MEASURES), level)).means.loc[system.name]
        for measure, value in system.expected.items():
            got = float(means[measure]) if measure in means else None
            figures.append(Figure(system, measure, value, got, spec.ok, close))
    return figures


def summary(figures: Sequence[Figure]) -> dict[str, int]:
    """How many figures got each verdict."""
    return {v: sum(f.verdict == v for f in figures) for v in VERDICTS}
