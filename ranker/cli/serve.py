"""``rank serve``: the student over HTTP (Cohere and TEI rerank shapes, /search, /health, /metrics, a page)."""

from __future__ import annotations

import socket
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ranker.cli import options
from ranker.cli.options import QUERY_BACKEND_HELP
from ranker.serve.config import ServeConfig

DEFAULT = ServeConfig(store="")


class LogLevel(str, Enum):
    warning = "warning"
    info = "info"
    debug = "debug"


def serve(
    store: Annotated[Path, typer.Option(help="Embedding store of the model (built by 'rank encode').")],
    model: Annotated[str | None, typer.Option(help="TwinBERT folder (default: the shipped twinbert).")] = None,
    index: Annotated[Path | None, typer.Option(help="Lucene index: /search and its passage text.")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = DEFAULT.host,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port.")] = DEFAULT.port,
    max_batch: Annotated[int, typer.Option(min=1, help="Most queries per query-tower pass.")] = DEFAULT.max_batch,
    max_wait_ms: Annotated[float, typer.Option(
        min=0.0, help="How long a query waits for others to share its pass.")] = DEFAULT.max_wait_ms,
    max_queue: Annotated[int, typer.Option(min=1, help="Most waiting queries (then 503).")] = DEFAULT.max_queue,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds before a request gets 504.")] = DEFAULT.timeout_s,
    max_documents: Annotated[int, typer.Option(
        min=1, help="Most documents per request (then 413).")] = DEFAULT.max_documents,
    max_text_chars: Annotated[int, typer.Option(
        min=1, help="Longest document text (then 413).")] = DEFAULT.max_text_chars,
    max_encode: Annotated[int, typer.Option(
        min=0, help="Most texts one request may have encoded that the store lacks (then 413).")] = DEFAULT.max_encode,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = DEFAULT.threads,
    query_backend: Annotated[str, typer.Option(
        help=QUERY_BACKEND_HELP, callback=options.query_backend)] = DEFAULT.query_backend,
    max_body_bytes: Annotated[int, typer.Option(
        min=1, help="Largest request body, checked while it is read (then 413).")] = DEFAULT.max_body_bytes,
    read_timeout: Annotated[float, typer.Option(
        min=0.001, help="Seconds to wait for the next part of a body (then 408).")] = DEFAULT.read_timeout_s,
    body_timeout: Annotated[float, typer.Option(
        min=0.001, help="Seconds a whole body may take to arrive (then 408).")] = DEFAULT.body_timeout_s,
    min_body_rate: Annotated[int, typer.Option(
        min=0, help="Slowest body, bytes a second after its first five seconds (then 408; 0: no minimum).")
    ] = DEFAULT.min_body_rate,
    max_json_values: Annotated[int | None, typer.Option(
        min=1, help="Most JSON values in a body, counted before parsing (then 413; default: 20 a document allowed).")
    ] = None,
    max_query_terms: Annotated[int, typer.Option(
        min=1, help="Most words in a /search query, checked before BM25 (then 413).")] = DEFAULT.max_query_terms,
    keep_alive: Annotated[float, typer.Option(
        min=0.001, help="Seconds an idle keep-alive connection stays open.")] = DEFAULT.keep_alive_s,
    header_timeout: Annotated[float, typer.Option(
        min=0.001, help="Seconds a connection may take to send a request's headers (then closed).")
    ] = DEFAULT.header_timeout_s,
    max_connections: Annotated[int, typer.Option(
        min=1, help="Connection slots; when all are taken, the one waiting longest without a request is closed "
                    "for a new request (503 only when every slot is serving).")] = DEFAULT.max_connections,
    fusion: Annotated[str, typer.Option(
        help="/search: the student fused with BM25's score of the same hits (bm25, as rank run) or alone (none).")
    ] = DEFAULT.fusion,
    fusion_weight: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="/search: the student's weight in the fusion (default: the model's own).")] = None,
    log_level: Annotated[LogLevel, typer.Option(
        help="warning: server faults (5xx) only, one line each with the request id; info: every 4xx too; "
             "debug: tracebacks.")] = LogLevel.warning,
) -> None:
    """Serve reranking from the cached passage vectors until SIGINT or SIGTERM (in-flight requests finish; exit 0)."""
    import uvicorn

    from ranker.interrupt import Interrupted
    from ranker.rerank.fused import FusionConfig
    from ranker.serve.app import create_app
    from ranker.serve.limits import server_options
    from ranker.serve.service import RerankService

    listener = _listen(host, port)  # a busy port fails now, before the model loads
    port = listener.getsockname()[1]

    config = ServeConfig(store=str(store), model=model, index=str(index) if index else None, host=host, port=port,
                         max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, timeout_s=timeout,
                         max_documents=max_documents, max_text_chars=max_text_chars, max_encode=max_encode,
                         threads=threads,
                         query_backend=query_backend, max_body_bytes=max_body_bytes, read_timeout_s=read_timeout,
                         body_timeout_s=body_timeout, min_body_rate=min_body_rate, max_json_values=max_json_values,
                         max_query_terms=max_query_terms,
                         keep_alive_s=keep_alive, header_timeout_s=header_timeout, max_connections=max_connections,
                         fusion=FusionConfig(fusion, fusion_weight).kind, fusion_weight=fusion_weight)
    import logging

    logging.getLogger("ranker.serve").setLevel(log_level.value.upper())
    service = RerankService(config)  # a store from another model, a missing folder: one line, before listening
    typer.echo(f"serving {service.model.path} with {len(service.store):,} cached passages on http://{host}:{port}",
               err=True)
    import gc

    gc.freeze()  # the loaded model's objects move out of the collector's reach: full collections stay short
    app = create_app(config, service)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           **server_options(config, app)))
    try:
        server.run(sockets=[listener])
    except Interrupted:  # uvicorn drains, then re-raises the signal it caught: the documented stop
        pass
    typer.echo("rank serve: stopped", err=True)


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (``0``: a free port), or a one-line error naming them."""
    from ranker.errors import RankerError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted connections only then (with proto 0 each response
    # waited out Nagle and the client's delayed ACK: ~40 ms a request)
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as e:
        listener.close()
        raise RankerError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return listener
