"""Shared fixtures: the real model, the real corpus index built once, the app and its client.

Fixtures chain settings -> index -> app -> client. Everything is built in
temporary folders; nothing depends on files left by an earlier run.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rag.embedding import Embedder
from rag.index import Index, build_index, load_index
from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The packaged all-MiniLM-L6-v2, loaded once (offline)."""
    return Embedder(Settings().model)


@pytest.fixture(scope="session")
def corpus_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings over a copy of the real corpus, with the index in a temporary folder."""
    root = tmp_path_factory.mktemp("real")
    shutil.copytree(CORPUS, root / "corpus")
    return Settings(corpus_dir=root / "corpus", index_dir=root / "index", data_dir=root / "data")


@pytest.fixture(scope="session")
def corpus_index(corpus_settings: Settings, embedder: Embedder) -> Index:
    """The real corpus embedded with the real model into a real FAISS index, once a session."""
    build_index(corpus_settings, embedder)
    return load_index(corpus_settings, embedder)


@pytest.fixture()
def tiny_settings(tmp_path: Path) -> Settings:
    """Settings over an empty corpus folder in ``tmp_path``; tests write their own articles."""
    (tmp_path / "corpus").mkdir()
    return Settings(
        corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", data_dir=tmp_path / "data"
    )


@pytest.fixture(scope="session")
def app_settings(corpus_settings: Settings, corpus_index: Index) -> Settings:
    """Settings of an app serving the real corpus index (built before the app starts)."""
    return corpus_settings


@pytest.fixture()
def client(app_settings: Settings) -> Iterator[TestClient]:
    """A TestClient over the real app (lifespan runs: the index loads as in production)."""
    from web.app import create_app

    with TestClient(create_app(app_settings)) as test_client:
        yield test_client
