"""Input and output: the file formats (topics, qrels, collections, runs), sources (a file or ``irds:``), passage
texts, the dataset registry, artifacts (``ranker.json``), atomic writes and locks, run sidecars, checkpoint fetches.

Layer: the lowest above the base records (``ranker.types``, ``ranker.errors``); imports no other layer.
"""
