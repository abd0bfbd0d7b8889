"""The real Cohere clients against ``rank serve`` on a loopback port: the official SDK's v1 and v2 clients (sync and
async), LangChain's ``CohereRerank`` and Haystack's ``CohereRanker``, each ranking as ``rank run`` does.

They come with the ``clients`` extra (``pip install 'ranker[clients]'``, which ``scripts/setup.sh`` installs); they
talk to the loopback server only, so they run offline.
"""

from __future__ import annotations

import asyncio

import pytest

from ranker.io.formats import read_run
from ranker.serve.config import ServeConfig

from .conftest import ROOT, rank
from .test_serve import dl19, running, service  # noqa: F401  (fixtures shared with the server's tests)

# every test here starts rank serve and real client SDKs: CI runs them (scripts/test.sh)
pytestmark = pytest.mark.slow

cohere = pytest.importorskip("cohere", reason="the real clients come with the 'clients' extra")


@pytest.fixture(scope="module")
def served(dl19, service):  # noqa: F811
    """The server, and what ``rank run`` ranks for one DL19 query: its texts and their docnos best first."""
    out = dl19["root"] / "clients.twinbert.trec"
    rank("run", "--topics", dl19["topics"], "--candidates", dl19["root"] / "candidates.trec", "--reranker",
         "twinbert", "--model", ROOT / "models" / "twinbert", "--store", dl19["root"] / "store", "--fusion", "none",
         "--output", out)
    qid, docs = next(iter(dl19["run"].items()))
    texts = [dl19["texts"][d.docno] for d in docs]
    want = [texts.index(dl19["texts"][d.docno]) for d in read_run(out)[qid]]
    with running(ServeConfig(store=str(dl19["root"] / "store")), service) as client:
        yield f"http://127.0.0.1:{client.port}", dl19["queries"][qid], texts, want


def test_the_cohere_sdk_v1_and_v2_clients_sync_and_async(served):
    url, query, texts, want = served
    v1 = cohere.Client(api_key="unused", base_url=url)
    assert [r.index for r in v1.rerank(model="rerank-v3.5", query=query, documents=texts).results] == want
    v2 = cohere.ClientV2(api_key="unused", base_url=url)
    got = v2.rerank(model="rerank-v3.5", query=query, documents=texts, top_n=10)
    assert [r.index for r in got.results] == want[:10] and all(0 < r.relevance_score < 1 for r in got.results)

    async def both() -> tuple:
        a1, a2 = cohere.AsyncClient(api_key="unused", base_url=url), cohere.AsyncClientV2(api_key="unused",
                                                                                          base_url=url)
        return await asyncio.gather(a1.rerank(model="m", query=query, documents=texts),
                                    a2.rerank(model="m", query=query, documents=texts))

    for response in asyncio.run(both()):
        assert [r.index for r in response.results] == want


def test_langchain_cohere_rerank(served):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    url, query, texts, want = served
    reranker = CohereRerank(cohere_api_key="unused", base_url=url, model="rerank-v3.5", top_n=5)
    kept = reranker.compress_documents([Document(page_content=t) for t in texts], query)
    assert [texts.index(d.page_content) for d in kept] == want[:5]
    assert all(0 < d.metadata["relevance_score"] < 1 for d in kept)


def test_haystack_cohere_ranker(served):
    from haystack import Document
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.cohere import CohereRanker

    url, query, texts, want = served
    ranker = CohereRanker(api_key=Secret.from_token("unused"), api_base_url=url, top_k=5)
    ranked = ranker.run(query=query, documents=[Document(content=t) for t in texts])["documents"]
    assert [texts.index(d.content) for d in ranked] == want[:5] and ranked[0].score >= ranked[-1].score


def test_the_readme_client_block_runs_as_printed(served):
    """README's Serving block, executed as a reader would paste it, with its address pointed at the test server."""
    url, query, texts, want = served
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("```python\nimport cohere") + len("```python\n"):]
    block = block[:block.index("```")]
    assert block.count("http://127.0.0.1:8000") == 3  # every client is pointed at the server below
    namespace = {"query": query, "texts": texts}
    exec(compile(block.replace("http://127.0.0.1:8000", url), "README.md", "exec"), namespace)
    assert [r.index for r in namespace["results"]] == want[:10]
    assert [texts.index(d.page_content) for d in namespace["kept"]] == want[:5]
    assert [texts.index(d.content) for d in namespace["ranked"]] == want[:5]
