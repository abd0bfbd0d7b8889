"""RESULTS.md and its plot, computed from run files, benchmark JSON and model folders — never typed by hand.

A results spec (TOML, see ``scripts/results.toml``) names, per collection, the qrels, the baseline and the
systems (a TREC run each, ``external`` for runs made elsewhere, ``bench`` naming the system's entry in the
collection's ``rank bench --output`` JSON); then the shipped models and the embedding stores to describe.
``{data}`` in a path stands for the data folder. Every figure in the report is recomputed from those files
by :func:`build_report`, so ``rank evaluate`` on any listed run gives the number the report shows.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ranker.cpu import cpu_name
from ranker.errors import RankerError
from ranker.eval.bench import floor_sentence, latency_rows
from ranker.eval.evaluate import ALPHA, Evaluation, evaluate
from ranker.eval.serve_report import serve_markdown, serve_plot
from ranker.io.artifact import metadata_file, read_metadata, shipped_megabytes
from ranker.io.atomic import atomic_open
from ranker.io.formats import read_run
from ranker.io.sources import load_qrels
from ranker.measures import parse_measures
from ranker.rerank.ensemble import read_ensemble

MEASURES = ("nDCG@10", "RR@10", "R@100")


@dataclass(frozen=True)
class System:
    """One row of a collection's table."""

    name: str
    run: Path
    external: bool = False
    bench: str | None = None  # the system's ``name`` in the benchmark JSON
    bench_file: Path | None = None  # a benchmark JSON of its own instead of the collection's


@dataclass(frozen=True)
class CollectionSpec:
    """A test collection: judgements, the baseline system and the systems compared with it."""

    key: str
    title: str
    qrels: Path
    baseline: str
    systems: tuple[System, ...]
    rel_level: int | None = None
    bench: Path | None = None
    note: str = ""


@dataclass(frozen=True)
class ResultsSpec:
    collections: tuple[CollectionSpec, ...]
    models: dict[str, Path] = field(default_factory=dict)
    stores: dict[str, Path] = field(default_factory=dict)
    serve: Path | None = None  # a ``rank bench-serve --output`` JSON


@dataclass
class CollectionResult:
    spec: CollectionSpec
    evaluation: Evaluation
    table: pd.DataFrame  # index: system; columns: queries, measures, p50_ms, p95_ms, external
    bench: dict | None


def read_spec(path: str | Path, data: str | Path, stores: str | Path = "") -> ResultsSpec:
    """Parse a results spec; ``{data}`` and ``{stores}`` in its paths stand for ``data`` and ``stores``."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RankerError(f"{path}: {e}") from None

    def resolve(value: str) -> Path:
        return Path(value.replace("{data}", str(data)).replace("{stores}", str(stores)))

    try:
        collections = tuple(CollectionSpec(
            key=c["key"], title=c["title"], qrels=resolve(c["qrels"]), baseline=c["baseline"],
            rel_level=c.get("rel_level"), bench=resolve(c["bench"]) if "bench" in c else None, note=c.get("note", ""),
            systems=tuple(System(s["name"], resolve(s["run"]), s.get("external", False), s.get("bench"),
                                 resolve(s["bench_file"]) if "bench_file" in s else None) for s in c["system"]))
            for c in raw["collection"])
    except KeyError as e:
        raise RankerError(f"{path}: missing key {e}") from None
    for c in collections:
        if c.baseline not in {s.name for s in c.systems}:
            raise RankerError(f"{path}: collection {c.key!r}: baseline {c.baseline!r} is not one of its systems")
    serve = raw.get("serve", {}).get("bench")
    return ResultsSpec(collections, {k: resolve(v) for k, v in raw.get("models", {}).items()},
                       {k: resolve(v) for k, v in raw.get("stores", {}).items()}, resolve(serve) if serve else None)


def evaluate_collection(spec: CollectionSpec, measures: Sequence[str] = MEASURES) -> CollectionResult:
    """Every system of ``spec`` on its qrels, significance against the baseline, latency from the benchmark."""
    for s in spec.systems:
        if not s.run.is_file():
            raise RankerError(f"{spec.key}: run of {s.name!r} not found: {s.run}")
    parsed = parse_measures(list(measures), spec.rel_level)
    runs = {s.name: read_run(s.run) for s in spec.systems}
    result = evaluate(load_qrels(str(spec.qrels)), runs, parsed, baseline=spec.baseline)
    bench = _read_bench(spec.bench)
    table = result.means.copy()
    table.insert(0, "queries", [len(result.queries[s]) for s in table.index])
    timed = [_latency(_read_bench(s.bench_file) if s.bench_file else bench, s) for s in spec.systems]
    for key in ("p50_ms", "p95_ms", "ran"):
        table[key] = [t.get(key) if t else None for t in timed]
    table["external"] = [s.external for s in spec.systems]
    return CollectionResult(spec, result, table, bench)


def _read_bench(path: Path | None) -> dict | None:
    """A ``rank bench --output`` JSON, or None when the spec names none; a named file must exist."""
    if path is None:
        return None
    if not path.is_file():
        raise RankerError(f"benchmark results not found: {path} (written by 'rank bench --output')")
    return json.loads(path.read_text())


def _latency(bench: dict | None, system: System) -> dict | None:
    if bench is None or system.bench is None:
        return None
    found = {r["name"]: r for r in bench["results"]}
    if system.bench not in found:
        raise RankerError(f"{system.name!r}: no entry {system.bench!r} in the benchmark (has: {', '.join(found)})")
    return found[system.bench]


def parameters(folder: Path) -> int:
    """Number of values in every safetensors file under ``folder`` (read from the headers only)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as f:
            total += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    return total


def training_summary(folder: Path) -> str:
    """What the model's saved training metadata says: data, steps, best validation score, time, device."""
    meta = None
    if (folder / "training.json").is_file():
        meta = json.loads((folder / "training.json").read_text())
    elif metadata_file(folder) is not None:  # an older cross-encoder folder kept it in its metadata
        meta = read_metadata(folder).get("training")
    if not meta:
        return "no training metadata"
    best = meta.get("best") or {}
    parts = []
    if (meta.get("config") or {}).get("init"):
        parts.append(f"started from {meta['config']['init']}")
    if "training_queries" in meta:
        parts.append(f"{meta['training_queries']:,} queries")
    if isinstance(meta.get("pairs_seen"), int):
        parts.append(f"{meta['pairs_seen']:,} pairs")
    if "step" in best:
        parts.append(f"best step {best['step']}")
    if "val_ndcg10" in best:
        parts.append(f"validation nDCG@10 {best['val_ndcg10']:.4f}")
    if "wall_seconds" in meta:
        parts.append(f"{meta['wall_seconds'] / 60:.0f} min")
    if "device" in meta:
        parts.append(f"on {meta['device']}")
    return ", ".join(parts)


def models_table(models: dict[str, Path]) -> list[list[str]]:
    rows = []
    for name, path in models.items():
        if path.is_dir():
            rows.append([name, f"`{path}`", f"{parameters(path) / 1e6:.1f} M", f"{shipped_megabytes(path):.1f}",
                         training_summary(path)])
        elif path.is_file():  # an ensemble spec: components and weights
            spec = read_ensemble(path)
            parts = ", ".join(f"{c.get('model') or c['reranker']} × {w}"
                              for c, w in zip(spec["components"], spec["weights"]))
            rows.append([name, f"`{path}`", "—", f"{shipped_megabytes(path):.3f}", f"fusion of z-scores: {parts}"])
        else:
            raise RankerError(f"model {name!r} not found: {path}")
    return rows


def stores_table(stores: dict[str, Path]) -> list[list[str]]:
    from ranker.store.embeddings import EmbeddingStore

    rows = []
    for name, path in stores.items():
        if not path.is_dir():
            raise RankerError(f"store {name!r} not found: {path} (build it with 'rank encode')")
        store = EmbeddingStore.load(path)
        rows.append([name, f"`{path}`", f"{len(store):,}", f"{store.dim}", store.dtype,
                     f"{store.size_bytes() / 1e6:.1f}"])
    return rows


PEER_PREFIXES = ("sentence-transformers", "bi-encoder")
"""Systems named so are what a user could run instead (peers); the baseline is BM25; the rest are this project's."""


def plot(results: Sequence[CollectionResult], path: str | Path) -> Path | None:
    """nDCG@10 against ms per query (log x) for every system with a latency, one panel per collection: each point
    numbered, the numbers named in a legend beside the panel, this project's systems, the peers and the baseline
    styled apart, the frontier (best nDCG@10 at each latency) drawn; external runs (no latency measured here) as
    labelled horizontal lines. Saved with a tight bounding box, so no label is cut off."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [r for r in results if r.table["p50_ms"].notna().any()]
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 5.2 * len(panels)), squeeze=False)
    styles = {"ours": ("o", "tab:blue", "this project"), "peer": ("s", "tab:orange", "peers (what a user could run)"),
              "baseline": ("D", "tab:grey", "baseline")}
    for ax, r in zip(axes[:, 0], panels):
        timed = r.table[r.table["p50_ms"].notna()].sort_values("p50_ms")
        kinds = ["baseline" if name == r.spec.baseline else "peer" if name.startswith(PEER_PREFIXES) else "ours"
                 for name in timed.index]
        for kind, (marker, color, label) in styles.items():
            chosen = [k == kind for k in kinds]
            if any(chosen):
                ax.scatter(timed["p50_ms"][chosen], timed["nDCG@10"][chosen], marker=marker, color=color, zorder=3,
                           label=label)
        best, frontier = -1.0, []
        for ms, ndcg in zip(timed["p50_ms"], timed["nDCG@10"]):
            if ndcg > best:
                best = ndcg
                frontier.append((ms, ndcg))
        ax.step(*zip(*frontier), where="post", color="tab:green", linewidth=1, alpha=0.7,
                label="frontier: best nDCG@10 at each latency", zorder=2)
        names = []
        for number, (name, row) in enumerate(timed.iterrows(), start=1):
            ax.annotate(str(number), (row["p50_ms"], row["nDCG@10"]), textcoords="offset points", fontsize=7,
                        xytext=(4, 3 if number % 2 else -10))  # neighbours alternate above and below
            names.append(textwrap.shorten(f"{number}. {name}", 70, placeholder="…"))
        for name, row in r.table[r.table["external"]].iterrows():
            ax.axhline(row["nDCG@10"], color="grey", linestyle=":", linewidth=1)
            ax.annotate(f"{name} (external)", (0.01, row["nDCG@10"]), xycoords=("axes fraction", "data"),
                        textcoords="offset points", xytext=(0, 2), fontsize=7, color="grey")
        ax.set_xscale("log")
        ax.set_xlabel(f"reranking ms per query, p50 ({_bench_setting(r.bench)})")
        ax.set_ylabel("nDCG@10")
        ax.set_title("\n".join(textwrap.wrap(r.spec.title, 70)), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
        ax.text(1.02, 1.0, "\n".join(names), transform=ax.transAxes, va="top", ha="left", fontsize=7,
                family="monospace")
    fig.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _bench_setting(bench: dict | None) -> str:
    if not bench:
        return "not measured"
    first = bench["results"][0]
    return (f"{bench['threads']} CPU thread{'s' if bench['threads'] > 1 else ''}, {first['candidates_per_query']:.0f} "
            f"candidates, {first['queries']} queries × {first['repeats']}")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    align = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    if value is None or pd.isna(value):
        return "—"
    return f"{value:,.3f}" if value < 1 else f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def collection_markdown(r: CollectionResult) -> str:
    measures = list(r.evaluation.means.columns)
    rows = []
    for name, row in r.table.iterrows():
        cells = [f"{row[m]:.4f}{' †' if r.evaluation.significant(name, m) else ''}" for m in measures]
        label = f"{name} (external run)" if row["external"] else name
        label += " — baseline" if name == r.spec.baseline else ""
        label += f" (timed as {row['ran']}: this CPU lacks the backend)" if row["ran"] else ""
        rows.append([label, f"{int(row['queries'])}", *cells, _ms(row["p50_ms"]), _ms(row["p95_ms"])])
    table = _md_table(["system", "queries", *measures, "p50 ms", "p95 ms"], rows, right=range(1, 6 + len(measures)))
    runs = " ".join(f"{s.run}" for s in r.spec.systems if s.name != r.spec.baseline)
    baseline = next(s.run for s in r.spec.systems if s.name == r.spec.baseline)
    rel = f" --rel-level {r.spec.rel_level}" if r.spec.rel_level else ""
    lines = [f"## {r.spec.title}", "", table, "",
             f"† p < {ALPHA} against {r.spec.baseline} (paired t-test over queries, Holm-corrected per measure). "
             + (f"Latency: {_bench_setting(r.bench)}, reranking only (`{r.spec.bench}`, from `rank bench`)."
              if r.bench else "Latency: not benchmarked on this collection.")]
    if r.spec.rel_level:
        lines.append(f"Measures marked rel={r.spec.rel_level} count grade ≥ {r.spec.rel_level} as relevant "
                     "(the TREC DL "
                     "convention); nDCG@10 uses the graded labels.")
    if r.spec.note:
        lines.append(r.spec.note)
    if r.bench and len(r.bench["results"]) > 1:
        lines += ["", f"Every reranker timed in that benchmark ({_bench_setting(r.bench)}, one process; "
                  "× is p50 over the fastest student backend's):", "",
                  _md_table(["reranker", "p50 ms", "p95 ms", "queries × passes", "× fastest student", "× floor"],
                            latency_rows(r.bench), right=range(1, 6)), "", floor_sentence(r.bench)]
    lines += ["", "By hand:", "", "```bash",
              f"rank evaluate --qrels {r.spec.qrels}{rel} --baseline {baseline} \\\n    {baseline} {runs}", "```"]
    return "\n".join(lines)


def provenance() -> str:
    """When, on what and from which commit the report was generated."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        # runs/ and the report itself are what a reproduction rewrites: only other changes make the tree dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!runs",
                                ":!RESULTS.md", ":!docs/results*.png"], capture_output=True, text=True,
                               check=True).stdout.strip()
        commit += " (with uncommitted changes outside runs/)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu = cpu_name()
    return (f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} at commit {commit}, "
            f"on {cpu} ({platform.machine()}, Python {platform.python_version()}).")


def build_report(spec: ResultsSpec, output: str | Path, plot_path: str | Path | None = None, command: str = "",
                 measures: Sequence[str] = MEASURES) -> tuple[str, list[CollectionResult]]:
    """The text of the report that will be written to ``output`` (and the plot, when ``plot_path`` is given,
    linked relative to ``output``) for ``spec``."""
    results = [evaluate_collection(c, measures) for c in spec.collections]
    parts = ["# Results", "", "Generated by `rank report` from the run files, benchmark JSON and model folders "
             "named in the results spec; nothing here is typed by hand.", provenance()]
    if command:
        parts.append(f"Command: `{command}`")
    if plot_path is not None and plot(results, plot_path):
        link = os.path.relpath(Path(plot_path).resolve(), Path(output).resolve().parent)
        parts += ["", f"![nDCG@10 against ms per query]({link})"]
    for r in results:
        parts += ["", collection_markdown(r)]
    if spec.models:
        parts += ["", "## Models", "", _md_table(["model", "folder", "parameters", "MB on disk", "training"],
                                                   models_table(spec.models))]
    if spec.stores:
        parts += ["", "## Embedding stores", "", _md_table(["store", "folder", "passages", "dim", "dtype", "MB"],
                                                            stores_table(spec.stores), right=(2, 3, 5))]
    if spec.serve:
        link = None
        if plot_path is not None:
            picture = serve_plot(spec.serve, Path(plot_path).with_name(Path(plot_path).stem + "-serve.png"))
            link = os.path.relpath(picture.resolve(), Path(output).resolve().parent)
        parts += ["", serve_markdown(spec.serve, link)]
    return "\n".join(parts) + "\n", results
