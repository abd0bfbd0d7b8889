"""Rerankers and their composition: the TwinBERT reranker over a store, the sentence-transformers peer, the
ensemble, the registry of rerankers by name, and pipelines assembled from a first stage and a reranker.

Layer: above the models, the store and the first stages; below training, evaluation, serving and the CLI.
"""
