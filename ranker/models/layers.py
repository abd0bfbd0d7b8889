"""TwinBERT's building blocks: a tower (encoder, pooling, projection) and the two crossing layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class WeightedPooling(nn.Module):
    """``a_i = w·h_i + b``, padding set to -inf, ``α = softmax(a)``, ``e = Σ α_i h_i``.

    ``w`` and ``b`` start at zero, so the pooling starts as the exact mean over the real tokens.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.score(hidden).squeeze(-1).masked_fill(~mask.bool(), float("-inf"))
        return (logits.softmax(-1).unsqueeze(-1) * hidden).sum(1)


class Tower(nn.Module):
    """One side: encoder, pooling, optional ``tanh(W e)`` projection."""

    def __init__(self, encoder: nn.Module, tokenizer: Any, pooling: str, proj_dim: int | None):
        super().__init__()
        self.encoder, self.tokenizer = encoder, tokenizer
        hidden = encoder.config.hidden_size
        self.pooling = WeightedPooling(hidden) if pooling == "weighted" else None
        self.projection = nn.Linear(hidden, proj_dim) if proj_dim else None

    def forward(self, texts: Sequence[str], max_length: int, project: bool = True) -> torch.Tensor:
        """One vector per text, shape ``(len(texts), dim)``; ``project=False``: the pooled vector, before the
        projection."""
        device = next(self.parameters()).device
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                               return_tensors="pt").to(device)
        return self.embed(batch["input_ids"], batch["attention_mask"], project)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, project: bool = True) -> torch.Tensor:
        """One vector per row of token ids (padded, ``attention_mask`` 0 on padding); what ONNX export traces."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        vectors = self.pooling(hidden, attention_mask) if self.pooling else hidden[:, 0]
        return torch.tanh(self.projection(vectors)) if self.projection and project else vectors


class ResidualCrossing(nn.Module):
    """``x = max(q, d)``, ``h = relu(W2 relu(W1 x) + x)``, logit ``w·h + b``."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.w1, self.w2, self.out = nn.Linear(dim, width), nn.Linear(width, dim), nn.Linear(dim, 1)

    def forward(self, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        x = torch.maximum(q, d)
        return self.out(torch.relu(self.w2(torch.relu(self.w1(x))) + x)).squeeze(-1)


class CosineCrossing(nn.Module):
    """Logit ``w cos(q, d) + b``; starts at ``w = scale``, ``b = 0`` (a scaled cosine)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.out = nn.Linear(1, 1)
        nn.init.constant_(self.out.weight, scale)
        nn.init.zeros_(self.out.bias)

    def forward(self, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return self.out(nn.functional.cosine_similarity(q, d, dim=-1).unsqueeze(-1)).squeeze(-1)
