"""The models: BERT-family encoders and what they are built into — the TwinBERT student (towers, pooling,
crossing), the cross-encoder teacher, the sentence-transformers bi-encoder — their query backends (PyTorch,
bfloat16, ONNX Runtime float32 and int8), which reranker serves a model folder (``kinds``), where shipped models
are found (``loading``), and a student opened with its store to score (``student``).

Layer: above ``ranker.store`` (a student scores over a store), below the first stages (the dense retriever holds
a student or a bi-encoder) and the rerankers; never imports training code.
"""
