"""``rank bench-store``: lookup and crossing cost per query against synthetic stores of growing size."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import output_file


def bench_store(
    folder: Annotated[Path, typer.Option(help="Where the synthetic stores are built (kept for reuse).")],
    rows: Annotated[list[int], typer.Option(min=1, help="Store sizes, repeatable (e.g. 10000, 1000000).")],
    dim: Annotated[int, typer.Option(min=1, help="Vector size.")] = 384,
    dtype: Annotated[str, typer.Option(help="float16 or int8.")] = "float16",
    candidates: Annotated[int, typer.Option(min=1, help="Candidates looked up per query.")] = 100,
    queries: Annotated[int, typer.Option(min=1, help="Queries timed per store.")] = 500,
    fingerprint_of: Annotated[str | None, typer.Option(
        help="Give the stores this TwinBERT model's fingerprint (so rank run and rank serve accept them).")] = None,
    output: Annotated[Path | None, typer.Option(help="Also write the results as JSON.", callback=output_file)] = None,
) -> None:
    """Build (once) a synthetic store per size, then time lookups and crossings in a fresh process per store."""
    from ranker.eval.scale import measure_apart, synthetic_store
    from ranker.io.atomic import write_json

    fingerprint = "synthetic"
    if fingerprint_of:
        from ranker.models.twinbert import TwinBert

        fingerprint = TwinBert.load(fingerprint_of, device="cpu").fingerprint()
    results = []
    for size in rows:
        path = folder / f"synthetic-{size}.{dtype}"
        if not path.is_dir():
            synthetic_store(path, size, dim, dtype, fingerprint)
        for warm in (False, True):
            result = measure_apart(path, candidates, queries, warm)
            results.append(result)
            typer.echo(f"{size:>10,} rows, {'warm' if warm else 'cold'}: lookup p50 {result['lookup_p50_ms']:.3f} ms "
                       f"(p95 {result['lookup_p95_ms']:.3f}), "
                       f"crossing p50 {result['crossing_p50_ms']:.3f} ms, open {result['open_ms']:.0f} ms, peak RSS "
                       f"{result['peak_rss_mb']:.0f} MB, anonymous memory added {result['anonymous_mb_added']:.1f} "
                       f"MB (store {result['store_mb']:,.0f} MB on disk, mapped)")
    for warm in (False, True):
        same = [r for r in results if r["warm"] == warm]
        for r in same[1:]:
            ratio = r["lookup_p50_ms"] / same[0]["lookup_p50_ms"]
            typer.echo(f"{'warm' if warm else 'cold'}: {r['rows']:,} vs {same[0]['rows']:,} rows: lookup p50 "
                       f"x{ratio:.2f}")
    if output is not None:
        write_json(output, {"candidates": candidates, "queries": queries, "results": results})
