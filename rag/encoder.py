"""Question encoder: the model's network in ONNX with its tokenizer, exported at index time.

Building an index (which has PyTorch) exports the transformer of the
sentence-transformers model once to ONNX, beside its tokenizer, into a
content-addressed folder under ``<index>.builds/models/``; every build gets
that folder's files under ``encoder/`` and its manifest records them. Serving
loads only these files: ONNX Runtime and the ``tokenizers`` library run the
network, numpy mean-pools and normalises, and neither PyTorch nor
sentence-transformers is imported.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag.errors import IndexMismatchError

if TYPE_CHECKING:
    from rag.embedding import Embedder
    from rag.index import Index
    from rag.settings import Settings

ENCODER_DIR = "encoder"  # inside a build folder
NETWORK = "model.onnx"
TOKENIZER = "tokenizer.json"
DESCRIPTION = "encoder.json"
# 1: the transformer's last hidden state, opset 17; tokenizer without padding, truncating
# at the model's max_seq_length
EXPORT_VERSION = 1
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_exported: dict[str, Path] = {}  # export key -> a complete folder this process wrote


class QuestionEncoder:
    """One question to one unit vector, with ONNX Runtime and the tokenizers library only.

    Runs on one thread: concurrent requests each get a core instead of fighting
    over both. The vectors equal the sentence-transformers model's (mean
    pooling over the attention mask, then L2 normalisation) to float precision.
    """

    def __init__(self, folder: Path, description: dict) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.model_name: str = description["model"]
        self.dimension: int = int(description["dimension"])
        self.network_sha256: str = description.get("sha256", "")
        self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # one short question at a time: no arena to keep
        self._session = onnxruntime.InferenceSession(
            str(folder / NETWORK), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = [i.name for i in self._session.get_inputs()]
        width = self._session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != self.dimension:
            raise IndexMismatchError(
                f"the question encoder gives {width}-dimensional vectors, its record says "
                f"{self.dimension}; run `rag index` to rebuild"
            )

    def encode_query(self, text: str) -> np.ndarray:
        """One unit vector (float32) for one question."""
        encoding = self._tokenizer.encode(text)
        arrays = {
            "input_ids": encoding.ids,
            "attention_mask": encoding.attention_mask,
            "token_type_ids": encoding.type_ids,
        }
        feeds = {name: np.array([arrays[name]], dtype=np.int64) for name in self._inputs}
        hidden = self._session.run(None, feeds)[0][0]
        mask = np.asarray(encoding.attention_mask, dtype=np.float32)[:, None]
        vector = (hidden * mask).sum(0) / max(float(mask.sum()), 1e-9)
        return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)

    def encode(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """Rows of unit vectors, one question at a time (serving never needs batches)."""
        rows = [self.encode_query(t) for t in texts]
        return np.stack(rows) if rows else np.zeros((0, self.dimension), dtype=np.float32)


def open_export(folder: Path) -> QuestionEncoder:
    """The question encoder of an export folder (see `exported_encoder`)."""
    description = json.loads((folder / DESCRIPTION).read_text())
    return QuestionEncoder(folder, {**description, "sha256": description["sha256"][NETWORK]})


def index_encoder(settings: Settings, index: Index, reuse: object | None = None) -> QuestionEncoder:
    """The question encoder of a loaded index.

    A build in files carries its export. A generation in the database carries no
    files: each machine uses its own export of the same model under its
    ``model_cache_dir``, made once by `rag index` there or, failing that, on the first
    load (the one time serving there loads PyTorch).
    """
    if not settings.database_url:
        return load_question_encoder(index.path, index.manifest, reuse=reuse)
    if isinstance(reuse, QuestionEncoder) and reuse.model_name == index.manifest.get("model"):
        return reuse

    def model() -> Embedder:
        from rag.embedding import Embedder

        return Embedder(settings.model)

    encoder = open_export(exported_encoder(settings.model_cache_dir, settings.model, model))
    if encoder.dimension != index.manifest.get("dimension"):
        raise IndexMismatchError(
            f"the database's index holds {index.manifest.get('dimension')}-dimensional "
            f"vectors but this machine's question encoder gives {encoder.dimension}; "
            "run `rag index` with the same RAG_MODEL"
        )
    return encoder


def load_question_encoder(
    path: Path, manifest: dict, reuse: object | None = None
) -> QuestionEncoder:
    """The question encoder an index build records, checked against its manifest.

    ``reuse`` (an encoder already loaded) is returned when it is the same
    network, so a rebuilt index does not load the model again.
    """
    record = manifest.get("question_encoder")
    if not isinstance(record, dict):
        raise IndexMismatchError(
            f"the index at {path} was built without a question encoder (by an earlier "
            "version); run `rag index` to rebuild it"
        )
    files = manifest.get("files", {})
    listed = {
        f"{ENCODER_DIR}/{NETWORK}": (record.get("file"), record.get("sha256")),
        f"{ENCODER_DIR}/{TOKENIZER}": (record.get("tokenizer"), record.get("tokenizer_sha256")),
    }
    if any(
        name not in files or recorded != (name, files[name].get("sha256"))
        for name, recorded in listed.items()
    ):
        raise IndexMismatchError(
            f"the index manifest at {path} names a question encoder it does not list; "
            "run `rag index` to rebuild"
        )
    if record.get("model") != manifest.get("model") or record.get("dimension") != manifest.get(
        "dimension"
    ):
        raise IndexMismatchError(
            f"the index holds {manifest.get('dimension')}-dimensional vectors of "
            f"{manifest.get('model')!r} but its question encoder gives "
            f"{record.get('dimension')}-dimensional vectors of {record.get('model')!r}; "
            "run `rag index` to rebuild"
        )
    if isinstance(reuse, QuestionEncoder) and reuse.network_sha256 == record["sha256"]:
        return reuse
    try:
        return QuestionEncoder(path / ENCODER_DIR, record)
    except IndexMismatchError:
        raise
    except Exception as exc:  # onnxruntime and tokenizers raise their own kinds on a bad file
        raise IndexMismatchError(
            f"the question encoder of the index at {path} cannot be loaded "
            f"({type(exc).__name__}); run `rag index` to rebuild"
        ) from None


def export_key(model_dir: Path) -> str:
    """The content address of an export: the model's files, the exporting libraries, the format."""
    return _export_key(str(model_dir.resolve()))


@functools.cache  # once a process: the model's files do not change under it
def _export_key(model_dir_name: str) -> str:
    model_dir = Path(model_dir_name)
    digest = hashlib.sha256(f"export {EXPORT_VERSION}".encode())
    for package in ("torch", "transformers", "sentence-transformers", "onnx"):
        try:
            digest.update(f"|{package}={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"|{package}=-".encode())
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        if path.suffix in (".md", ".onnx") or path.name.startswith("."):
            continue
        digest.update(f"|{path.relative_to(model_dir).as_posix()}".encode())
        with open(path, "rb") as stored:
            while block := stored.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:20]


def exported_encoder(cache_dir: Path, model: str, embedder: Callable[[], Embedder]) -> Path:
    """The folder holding the exported encoder of ``model`` (exported first when missing).

    ``embedder`` gives the loaded model, called only when an export is needed.
    The folder appears whole or not at all (written aside, then renamed).
    """
    from rag.embedding import resolve_model

    key = export_key(Path(resolve_model(model)))
    folder = cache_dir / key
    if _complete(folder):
        return folder
    earlier = _exported.get(key)  # a folder this process exported for another index
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".export-{os.getpid()}-", dir=cache_dir))
    try:
        if earlier is not None and _complete(earlier):
            for name in (NETWORK, TOKENIZER, DESCRIPTION):
                shutil.copyfile(earlier / name, scratch / name)
        else:
            export(embedder(), scratch)
        if folder.exists() and not _complete(folder):
            shutil.rmtree(folder)  # damaged (a file changed or removed by hand): replaced
        try:
            os.rename(scratch, folder)
        except OSError:
            if not _complete(folder):  # another process won the race with a whole folder
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _exported.setdefault(key, folder)
    return folder


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds a whole export, its files as they were written."""
    try:
        description = json.loads((folder / DESCRIPTION).read_text())
        return all(
            _sha256(folder / name) == description["sha256"][name] for name in (NETWORK, TOKENIZER)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stored:
        while block := stored.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def install_encoder(source: Path, build: Path) -> dict:
    """Put the exported encoder's files into a build folder; the manifest's record of it.

    Files are hard-linked when they can be (one copy on disk for every build)
    and made read-only, so no build can change another's encoder in place.
    """
    target = build / ENCODER_DIR
    target.mkdir()
    for name in (NETWORK, TOKENIZER):
        try:
            os.link(source / name, target / name)
        except OSError:
            shutil.copyfile(source / name, target / name)
        os.chmod(target / name, 0o444)
    description = json.loads((source / DESCRIPTION).read_text())
    hashes = description.pop("sha256")
    return {
        "file": f"{ENCODER_DIR}/{NETWORK}",
        "sha256": hashes[NETWORK],
        "tokenizer": f"{ENCODER_DIR}/{TOKENIZER}",
        "tokenizer_sha256": hashes[TOKENIZER],
        **description,
    }


def export(embedder: Embedder, folder: Path) -> None:
    """Export the transformer of ``embedder``'s model and its tokenizer into ``folder``.

    Only a Transformer → mean Pooling (→ Normalize) pipeline is exported; any
    other is refused with a clear message.
    """
    import warnings

    import torch
    from tokenizers import Tokenizer

    model = embedder.sentence_transformer
    modules = [type(m).__name__ for m in model]
    pooling = model[1] if len(modules) > 1 else None
    mean = getattr(pooling, "pooling_mode", None) == "mean" or getattr(
        pooling, "pooling_mode_mean_tokens", False
    )
    if (
        modules[:2] != ["Transformer", "Pooling"]
        or not mean
        or modules[2:] not in ([], ["Normalize"])
    ):
        raise IndexMismatchError(
            f"model {embedder.model_name!r} is not a transformer with mean pooling "
            f"({' → '.join(modules)}); it cannot be served without PyTorch"
        )
    network = model[0].auto_model.eval()

    class Hidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = model.tokenizer(["a sample question"], return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in [*_INPUTS, "hidden"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Hidden(network),
            tuple(sample[n] for n in _INPUTS),
            str(folder / NETWORK),
            input_names=list(_INPUTS),
            output_names=["hidden"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    # The model's own tokenizer file pads and truncates at 128; sentence-transformers
    # tokenises one text unpadded and truncates at max_seq_length.
    tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(int(model.max_seq_length))
    tokenizer.save(str(folder / TOKENIZER))
    description = {
        "sha256": {name: _sha256(folder / name) for name in (NETWORK, TOKENIZER)},
        "model": embedder.model_name,
        "dimension": embedder.dimension,
        "pooling": "mean",
        "normalize": "l2",
        "max_tokens": int(model.max_seq_length),
        "export_version": EXPORT_VERSION,
    }
    (folder / DESCRIPTION).write_text(json.dumps(description, indent=1))
