"""Cross-encoder: the model (its reranker: :mod:`ranker.rerank.cross_encoder`; training: :mod:`ranker.train.teacher`).

A cross-encoder reads query and passage together and gives one raw logit per pair (``score_type: logit``).
Two heads:

* ``cls``: a Hugging Face sequence-classification model (``[CLS] q [SEP] p [SEP]``, one output). Any such
  folder or hub name (e.g. ``cross-encoder/ms-marco-MiniLM-L-6-v2``) loads with this head.
* ``span-cos``: ``scale * cos(mean(query-span vectors), mean(passage-span vectors))`` over the joint input's
  last layer, with a learnable scale. Two input layouts:

  - ``joint``: ``[CLS] q [SEP] p [SEP]``, as the ``cls`` head reads it;
  - ``gated``: ``[CLS] q [SEP] [CLS] p [SEP]``, positions restarting at the passage, and a learnable
    attention bias per layer and head added wherever a token attends across the two segments. With a
    very negative bias the model is exactly the mean-pooling bi-encoder it starts from (all-MiniLM-L6-v2
    scores 0.64 nDCG@10 zero-shot on DL19), so training starts from the bi-encoder and learns how much
    cross-attention to open.

A model folder holds the encoder in Hugging Face layout (``config.json``, ``model.safetensors``, tokenizer
files), ``head.safetensors`` for the ``span-cos`` parameters, ``ranker.json`` (:mod:`ranker.io.artifact`: type
``cross-encoder``, ``score_type``, ``head``, ``layout``, lengths) and ``training.json`` (how it was trained).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ranker.errors import RankerError
from ranker.io.artifact import metadata_file, read_metadata, write_metadata
from ranker.io.atomic import atomic_dir, write_json
from ranker.models.config import CrossEncoderConfig
from ranker.models.hf import auto_device, length_order, load_tokenizer, loading, mean_pool, resolve_checkpoint

TRAINING = "training.json"
HEAD_WEIGHTS = "head.safetensors"
class CrossEncoder(nn.Module):
    """A cross-encoder scoring ``(query, passage)`` pairs with one raw logit each.

    Build one with :meth:`from_pretrained`; ``forward`` takes tokenised batches from :meth:`tokenize`.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, config: CrossEncoderConfig, metadata: dict | None = None):
        super().__init__()
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.metadata = metadata or {}
        if config.head == "span-cos":
            self.log_scale = nn.Parameter(torch.tensor(math.log(config.scale)))
            if config.layout == "gated":
                shape = (model.config.num_hidden_layers, model.config.num_attention_heads)
                self.segment_bias = nn.Parameter(torch.full(shape, float(config.segment_bias)))

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, config: CrossEncoderConfig | None = None,
                        max_length: int | None = None, device: str | None = None) -> CrossEncoder:
        """Load a :meth:`save` folder or any HF sequence-classification model, or put a new head on an encoder.

        Args:
            path: Folder or hub name, or ``minilm`` (the bundled all-MiniLM-L6-v2, the default) or ``mpnet``.
            config: The head to put on a plain encoder (default :class:`CrossEncoderConfig`); ignored for a saved
                cross-encoder (its ``ranker.json`` says) and for a sequence-classification model (``cls``).
            max_length: Override the tokens kept per pair.
            device: Default: CUDA when available.
        """
        from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

        path = resolve_checkpoint(path)
        with loading(path):
            saved = Path(path).is_dir() and metadata_file(path) is not None
            hf_config = AutoConfig.from_pretrained(path)
            metadata: dict = {}
            if saved:
                metadata = read_metadata(path, "cross-encoder")
                names = {f.name for f in dataclasses.fields(CrossEncoderConfig)}
                config = CrossEncoderConfig(**{k: v for k, v in metadata.items() if k in names})
            elif any(a.endswith("ForSequenceClassification") for a in hf_config.architectures or []):
                if hf_config.num_labels != 1:
                    raise RankerError(f"{path}: a cross-encoder has one output; this model has {hf_config.num_labels}")
                config = CrossEncoderConfig(head="cls", layout="joint",
                                            max_length=min(512, hf_config.max_position_embeddings))
            config = config or CrossEncoderConfig()
            if max_length is not None:
                config = dataclasses.replace(config, max_length=max_length)
            if config.head == "cls":
                model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
            else:
                model = AutoModel.from_pretrained(path, dtype=torch.float32, add_pooling_layer=False)
            encoder = cls(model, load_tokenizer(path, hf_config), config, _training(Path(path), metadata))
            if saved and config.head == "span-cos":
                encoder.load_state_dict(load_file(Path(path) / HEAD_WEIGHTS), strict=False)
            return encoder.to(auto_device(device)).eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def head_parameters(self) -> list[nn.Parameter]:
        """The ``span-cos`` scale and segment bias (trained with their own learning rate)."""
        return [p for name, p in self.named_parameters() if not name.startswith("model.")]

    def tokenize(self, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """Input tensors for ``(query, passage)`` pairs, padded to the longest; ``segment`` is 0/1 per token."""
        queries, passages = [q for q, _ in pairs], [p for _, p in pairs]
        if self.config.layout == "joint":
            enc = self.tokenizer(queries, passages, truncation="longest_first", max_length=self.config.max_length,
                                 padding=True, return_tensors="pt", return_token_type_ids=True)
            batch = dict(enc)
            batch["segment"] = enc["token_type_ids"]
            return batch
        config = self.config
        q_ids = self.tokenizer(queries, truncation=True, max_length=config.query_max_length)["input_ids"]
        p_len = config.max_length - config.query_max_length
        p_ids = self.tokenizer(passages, truncation=True, max_length=p_len)["input_ids"]
        width = max(len(q) + len(p) for q, p in zip(q_ids, p_ids))
        batch = {k: torch.zeros(len(pairs), width, dtype=torch.long)
                 for k in ("input_ids", "attention_mask", "position_ids", "segment")}
        for i, (q, p) in enumerate(zip(q_ids, p_ids)):
            n = len(q) + len(p)
            batch["input_ids"][i, :n] = torch.tensor(q + p)
            batch["attention_mask"][i, :n] = 1
            batch["position_ids"][i, :n] = torch.tensor([*range(len(q)), *range(len(p))])
            batch["segment"][i, len(q):n] = 1
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        return batch

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One raw logit per pair, shape ``(batch,)``."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.config.head == "cls":
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
            return self.model(**inputs).logits[:, 0]
        valid, segment = batch["attention_mask"].bool(), batch["segment"]
        hidden = self.model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                                       position_ids=batch.get("position_ids"))
        pad = torch.zeros(valid.shape, dtype=hidden.dtype, device=self.device)
        pad = pad.masked_fill(~valid, torch.finfo(hidden.dtype).min)[:, None, None, :]
        cross = (segment[:, :, None] != segment[:, None, :]).to(hidden.dtype)[:, None]
        for i, layer in enumerate(self.model.encoder.layer):
            mask = pad + cross * self.segment_bias[i][None, :, None, None] if self.config.layout == "gated" else pad
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        q = mean_pool(hidden, valid & (segment == 0))
        p = mean_pool(hidden, valid & (segment == 1))
        return self.log_scale.exp() * nn.functional.cosine_similarity(q, p, dim=-1)

    def logits(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """Logits of ``pairs`` in the order given, computed in batches of similar length (little padding)."""
        order = length_order([q + " " + p for q, p in pairs])
        chunks = [self(self.tokenize([pairs[i] for i in order[start:start + batch_size]]))
                  for start in tqdm(range(0, len(order), batch_size), desc="score", unit="batch", disable=not progress)]
        return torch.cat(chunks)[torch.tensor(order).argsort()]

    @torch.inference_mode()
    def score_pairs(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32,
                    progress: bool = False) -> np.ndarray:
        """Raw logits for ``(query text, passage text)`` pairs, as float32, in the order given."""
        was_training = self.training
        self.eval()
        scores = self.logits(pairs, batch_size, progress).float().cpu().numpy()
        self.train(was_training)
        return scores

    def save(self, path: str | Path, dtype: torch.dtype = torch.float16, metadata: dict | None = None) -> Path:
        """Write a model folder (weights in ``dtype``), replacing ``path`` once complete; returns ``path``.

        ``metadata`` (default: what the model was loaded with) goes to ``training.json``. Loading gives float32
        weights.
        """
        with atomic_dir(path) as tmp:
            state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in self.model.state_dict().items()}
            self.model.save_pretrained(tmp, state_dict=state)
            self.tokenizer.save_pretrained(tmp)
            if self.config.head == "span-cos":
                save_file({n: p.detach().cpu().float().contiguous() for n, p in self.named_parameters()
                           if not n.startswith("model.")}, tmp / HEAD_WEIGHTS)
            write_metadata(tmp, "cross-encoder", score_type="logit", **dataclasses.asdict(self.config),
                           dtype=str(dtype).removeprefix("torch."))
            write_json(tmp / TRAINING, metadata if metadata is not None else self.metadata)
        return Path(path)


def _training(path: Path, metadata: dict) -> dict:
    """How a saved model was trained: ``training.json``, or the ``training`` key of an older metadata file."""
    if (path / TRAINING).is_file():
        return json.loads((path / TRAINING).read_text())
    return metadata.get("training") or {}
