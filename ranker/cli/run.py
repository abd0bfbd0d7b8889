"""``rank run``: BM25 retrieval, or reranking of an existing run, written as a TREC run with a JSON sidecar."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ranker.cli import options
from ranker.cli.options import QUERY_BACKEND_HELP, output_file
from ranker.first_stage.bm25 import Bm25Config
from ranker.rerank.assembly import DenseConfig
from ranker.rerank.fused import FUSIONS, FusionConfig
from ranker.rerank.registry import RerankerConfig, reranker_names

RERANK = RerankerConfig()
BM25 = Bm25Config()
DENSE = DenseConfig()


class BiencoderBackend(str, Enum):
    torch = "torch"
    onnx = "onnx"
    onnx_int8 = "onnx-int8"


def run(
    topics: Annotated[str, typer.Option(help="Topics: TSV 'qid<TAB>text', BEIR queries.jsonl, or irds:<id>.")],
    output: Annotated[Path, typer.Option(
        help="TREC run file to write (a .json sidecar goes beside it).", callback=output_file)],
    index: Annotated[Path | None, typer.Option(help="Lucene index folder (BM25 first stage; stored text).")] = None,
    candidates: Annotated[Path | None, typer.Option(help="Rerank this TREC run instead of retrieving.")] = None,
    reranker: Annotated[str | None, typer.Option(
        help=f"{', '.join(reranker_names())}; default: the kind --model names, else identity "
             "over --candidates.")] = None,
    model: Annotated[str | None, typer.Option(help="Reranker model folder or HF name (default: shipped).")] = None,
    collection: Annotated[list[Path] | None, typer.Option(help="Passage text for reranking (repeatable).")] = None,
    store: Annotated[str | None, typer.Option(help="Embedding store of the twinbert reranker.")] = None,
    encode_missing: Annotated[bool, typer.Option(help="twinbert: encode candidates absent from the store.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Reranker batch size.")] = RERANK.batch_size,
    query_backend: Annotated[str, typer.Option(
        help=QUERY_BACKEND_HELP, callback=options.query_backend)] = RERANK.query_backend,
    query_max_length: Annotated[int | None, typer.Option(
        min=4, help="twinbert: query tokens kept (default: the model's own cap).")] = None,
    biencoder_backend: Annotated[BiencoderBackend, typer.Option(
        help="What runs the biencoder reranker: torch, onnx (float32) or onnx-int8 (its queries; passages come "
             "from --store).")] = BiencoderBackend.torch,
    retriever: Annotated[str, typer.Option(
        help="First stage: bm25 (--index), dense (nearest neighbours in --store, the retrieval TwinBERT) or "
             "hybrid (both fused; --index and --store).")] = "bm25",
    dense_model: Annotated[str | None, typer.Option(
        help="dense/hybrid: the model that built --store (a TwinBERT folder, default the shipped student; or "
             "minilm, mpnet for a bi-encoder store).")] = None,
    search: Annotated[str, typer.Option(help="dense/hybrid: exact, or hnsw (FAISS, approximate).")] = DENSE.search,
    ef_search: Annotated[int, typer.Option(min=1, help="hnsw: candidates kept while searching.")] = DENSE.ef_search,
    hybrid_weight: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="hybrid: the dense side's weight (BM25 gets the rest); default: the student's own "
                               "fusion weight (the one --fusion uses).")] = DENSE.hybrid_weight,
    fusion: Annotated[str, typer.Option(
        help=f"The student's (twinbert) ranking fused with BM25's score for the same documents: "
             f"{' or '.join(FUSIONS)} (the student alone). BM25's scores: the candidates' own after BM25 or a "
             "given run, else computed from --index.")] = FusionConfig.kind,
    fusion_weight: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="The student's weight in the fusion (BM25 gets the rest); default: the model's "
                               "own, picked on validation.")] = None,
    k: Annotated[int, typer.Option(min=1, help="Documents kept per query.")] = 100,
    k1: Annotated[float, typer.Option(help="BM25 k1.")] = BM25.k1,
    b: Annotated[float, typer.Option(help="BM25 b.")] = BM25.b,
    threads: Annotated[int, typer.Option(min=1, help="Search threads.")] = BM25.threads,
    remove_query_id: Annotated[bool, typer.Option(help="Drop hits whose docid equals the query id (BEIR).")] = False,
    judged_only: Annotated[str | None, typer.Option(help="Keep only the topics judged in this qrels file.")] = None,
    queries_first: Annotated[int | None, typer.Option(
        "--queries", min=1, help="Run only the first N topics (in file order); --candidates may hold them "
                                 "all.")] = None,
    qids: Annotated[Path | None, typer.Option(
        help="Run only the topics named in this file (one qid a line); --candidates may hold them all.")] = None,
    tag: Annotated[str | None, typer.Option(help="Run tag (default: the output file's stem).")] = None,
) -> None:
    """Retrieve with BM25 (--index) or rerank --candidates, and write runs/NAME.trec plus NAME.trec.json."""
    from ranker.io.runs import save_run, timing
    from ranker.io.sources import load_topics, select_topics
    from ranker.rerank.assembly import PipelineConfig, build_pipeline

    options.not_an_input(output, [Path(topics), candidates, qids, *(collection or ()), *(  # folders: output_file
        Path(p) for p in (judged_only, store, model, dense_model) if p and Path(p).is_file())])
    every = load_topics(topics)
    queries = select_topics(every, topics, judged_only, queries_first, qids)
    config = PipelineConfig(
        reranker=reranker, index=index, candidates=candidates, collection=tuple(collection or ()), k=k,
        reranker_config=RerankerConfig(model=model, store=store, encode_missing=encode_missing,
                                       batch_size=batch_size, query_backend=query_backend,
                                       query_max_length=query_max_length,
                                       biencoder_backend=biencoder_backend.value),
        bm25=Bm25Config(k1=k1, b=b, threads=threads, remove_query_id=remove_query_id), retriever=retriever,
        dense=DenseConfig(store=store, model=dense_model, search=search, ef_search=ef_search,
                          hybrid_weight=hybrid_weight),
        fusion=FusionConfig(fusion, fusion_weight), known_qids=frozenset(every))
    pipeline = build_pipeline(queries, config)
    start = time.perf_counter()
    ranking = pipeline.run()
    seconds = time.perf_counter() - start
    metadata: dict = {"topics": topics, "judged_only": judged_only, "k": k,
                      **({"queries": len(queries), "of_topics": len(every)} if len(queries) < len(every) else {}),
                      "collection": [str(c) for c in collection or []]}
    if candidates is not None:
        metadata["candidates"] = str(candidates)
    metadata |= {"pipeline": pipeline.stage.config(), "timing": timing(seconds, len(pipeline.queries))}
    if getattr(pipeline.reranker, "timing", None):  # a reranker that splits its latency (twinbert)
        metadata["timing"]["reranker_ms_per_query"] = {
            part: round(1000 * s / max(len(pipeline.queries), 1), 3) for part, s in pipeline.reranker.timing.items()}
    save_run(ranking, output, tag or output.stem, metadata)
    typer.echo(f"{pipeline.stage.name}: {len(pipeline.queries)} queries, "
               f"{metadata['timing']['ms_per_query']:.1f} ms/query -> {output}")
    for stage in cut_queries(metadata["pipeline"]):
        typer.echo(f"warning: {stage['stage']}: {stage['queries_truncated']} of {len(pipeline.queries)} queries "
                   f"were longer than {stage['query_max_length']} tokens and cut to them (queries_truncated in "
                   f"{output}.json; --query-max-length raises the cap)", err=True)


def cut_queries(config: dict) -> list[dict]:
    """The stages of a pipeline's config whose query tower cut queries to its cap."""
    stages = [config] if config.get("queries_truncated") else []
    return stages + [cut for stage in config.get("stages", []) for cut in cut_queries(stage)]
