"""Training: recipes, labelled and distillation examples, losses, the shared loop (log, checkpoints, resume),
the teacher, the teacher-score cache, distillation, query-tower alignment, fusion weights.

Layer: above the rerankers (it scores with them); nothing below imports it.
"""
