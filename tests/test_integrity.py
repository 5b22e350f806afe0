"""Index integrity: the manifest records every file's size and SHA-256, and loading checks them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rag.embedding import Embedder
from rag.errors import IndexMismatchError
from rag.index import build_index, load_index
from rag.settings import Settings
from web.app import create_app


def article(slug: str, topic: str) -> str:
    return (
        f"---\ntitle: {topic} careers\nurl: https://careers.example/{slug}/\n---\n\n"
        f"## Pay\n\n{topic} specialists in Porto earn about 51,000 euros a year.\n\n"
        f"## Skills\n\nA {topic} specialist writes tests and reviews designs every week.\n"
    )


@pytest.fixture()
def built(tiny_settings: Settings, embedder: Embedder) -> Settings:
    (tiny_settings.corpus_dir / "base.md").write_text(article("base", "Testing"))
    build_index(tiny_settings, embedder)
    return tiny_settings


def test_a_valid_bm25_vocabulary_of_another_index_is_refused(
    built: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    other = built.with_(corpus_dir=tmp_path / "other", index_dir=tmp_path / "other-index")
    other.corpus_dir.mkdir()
    (other.corpus_dir / "other.md").write_text(article("other", "Fortran"))
    build_index(other, embedder)
    shutil.rmtree(built.index_dir / "bm25")
    shutil.copytree(other.index_dir / "bm25", built.index_dir / "bm25")

    with pytest.raises(IndexMismatchError, match=r"the index file bm25/.* its manifest"):
        load_index(built, embedder)


def test_an_empty_article_list_is_refused(built: Settings, embedder: Embedder) -> None:
    (built.index_dir / "articles.json").write_text("[]")

    with pytest.raises(
        IndexMismatchError, match=r"the index file articles\.json is 2 bytes, its manifest says"
    ):
        load_index(built, embedder)


def test_a_crafted_faiss_file_is_refused_before_it_is_read(
    built: Settings, embedder: Embedder
) -> None:
    # A FAISS header claiming a billion vectors: reading it would allocate before failing.
    (built.index_dir / "dense.faiss").write_bytes(b"IxFI" + b"\x80\x01\x00\x00" + b"\xff" * 69)

    with pytest.raises(
        IndexMismatchError, match=r"the index file dense\.faiss is 77 bytes, its manifest says"
    ):
        load_index(built, embedder)


def test_a_missing_or_foreign_contexts_file_is_refused_and_the_index_is_kept(
    built: Settings, embedder: Embedder, tmp_path: Path
) -> None:
    """The units' vectors under their headings are checked like every other index file."""
    contexts = built.index_dir / "contexts.npy"
    kept = contexts.read_bytes()
    other = built.with_(corpus_dir=tmp_path / "other", index_dir=tmp_path / "other-index")
    other.corpus_dir.mkdir()
    (other.corpus_dir / "other.md").write_text(article("other", "Fortran"))
    build_index(other, embedder)
    contexts.write_bytes((other.index_dir / "contexts.npy").read_bytes())  # same shape

    with pytest.raises(IndexMismatchError, match=r"contexts\.npy does not match .* `rag index`"):
        load_index(built, embedder)
    contexts.unlink()
    with pytest.raises(IndexMismatchError, match=r"the index lacks contexts\.npy; run `rag index`"):
        load_index(built, embedder)
    contexts.write_bytes(kept)
    assert load_index(built, embedder).context_vectors.shape == (2, 384)


@pytest.mark.parametrize("field", ["articles", "passages"])
def test_a_manifest_without_a_count_leaves_health_a_clear_503(built: Settings, field: str) -> None:
    path = built.index_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["counts"][field]
    path.write_text(json.dumps(manifest))

    with TestClient(create_app(built)) as client:
        health = client.get("/api/health")

    assert health.status_code == 503, health.text
    assert health.json()["status"] == "unavailable"
    assert "lacks its counts" in health.json()["reason"]
    assert str(built.index_dir.parent) not in health.text
