"""The serving section of RESULTS.md: ``rank bench-serve``'s JSON as a table and a plot, never typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

from ranker.errors import RankerError
from ranker.io.atomic import atomic_open

MODES = {"id": "by id", "text": "by text", "mixed-light": "mixed: the ordinary clients (by id)",
         "mixed-heavy": "mixed: the client sending unseen texts"}
"""How each load level's documents are described (``rank bench-serve``'s modes)."""


def read_bench(path: Path) -> dict:
    if not path.is_file():
        raise RankerError(f"serving benchmark not found: {path} (written by 'rank bench-serve --output')")
    return json.loads(path.read_text())


def serve_markdown(path: Path, plot_link: str | None) -> str:
    """A table of requests/s and p50/p95/p99 per document mode and concurrency, and the soak, if any."""
    bench = read_bench(path)
    lines = ["## Serving (`rank serve`, loopback HTTP)", ""]
    if plot_link:
        lines += [f"![latency and throughput against concurrency]({plot_link})", ""]
    lines += ["| documents | concurrency | requests/s | p50 ms | p95 ms | p99 ms | errors |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in bench["results"]:
        lines.append(f"| {MODES.get(r['mode'], r['mode'])} | {r['concurrency']} | {r['requests_per_s']:,.1f} | "
                     f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |")
    if mixed := bench.get("mixed"):
        lines += ["", f"Mixed level: 16 clients, one of them sending {mixed} texts the store lacks per request "
                  "(encoded on the fly), the other 15 ordinary requests by id; each group's figures apart."]
    soak = bench.get("soak")
    lines += ["", f"Closed loop: each client sends its next request when the last returned, {bench['seconds']:g} s "
              f"per level, {bench['k']} candidates a request (Cohere shape, `top_n` 10), server and clients on "
              f"the same machine, the server on {bench['threads']} torch thread(s) (`{path}`)."]
    if soak:
        growth = (100 * (soak["rss_mb_after"] - soak["rss_mb_before"]) / soak["rss_mb_before"]
                  if soak.get("rss_mb_before") else float("nan"))
        lines.append(f"Soak: {soak['seconds']:.0f} s at concurrency {soak['concurrency']}: {soak['requests']:,} "
                     f"requests, {soak['errors']} errors (non-2xx or failed), p99 {soak['p99_ms']:.1f} ms, server "
                     f"memory {soak['rss_mb_before']:.0f} -> {soak['rss_mb_after']:.0f} MB ({growth:+.1f}%).")
    return "\n".join(lines)


def serve_plot(path: Path, output: Path) -> Path:
    """p50/p99 latency and requests/s against concurrency, one line per document mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in read_bench(path)["results"] if not r["mode"].startswith("mixed")]  # one level each
    fig, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in dict.fromkeys(r["mode"] for r in results):
        rows = [r for r in results if r["mode"] == mode]
        levels = [r["concurrency"] for r in rows]
        latency.plot(levels, [r["p50_ms"] for r in rows], marker="o", label=f"by {mode}, p50")
        latency.plot(levels, [r["p99_ms"] for r in rows], marker="x", linestyle="--", label=f"by {mode}, p99")
        throughput.plot(levels, [r["requests_per_s"] for r in rows], marker="o", label=f"by {mode}")
    for ax, label in ((latency, "ms per request"), (throughput, "requests/s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    latency.set_yscale("log")
    fig.tight_layout()
    with atomic_open(output, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return output
