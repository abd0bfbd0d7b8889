"""First stages: BM25 over a Lucene index (Pyserini/Anserini, the JVM started once, index edits) and the dense
and hybrid retrievers over an embedding store.

Layer: above ``ranker.io``, ``ranker.store`` and ``ranker.models`` (the dense retriever holds a student or a
bi-encoder); below the rerankers.
"""
