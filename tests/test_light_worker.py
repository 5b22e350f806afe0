"""Light serving: questions are encoded by the index's ONNX export, without PyTorch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import CORPUS, ROOT, TEST_HOSTS, one_article_index
from fastapi.testclient import TestClient

from rag.cli import cli
from rag.embedding import Embedder
from rag.encoder import load_question_encoder
from rag.index import MANIFEST, build_index, index_is_current, load_index, read_manifest
from rag.ingest import read_articles
from rag.settings import Settings
from web.app import create_app

ARTICLE = (
    "---\ntitle: Data engineering careers\nurl: https://careers.example/data-engineering/\n---\n\n"
    "## Pay\n\nData engineers in Lisbon earn about 48,000 euros a year.\n\n"
    "## Skills\n\nA data engineer builds pipelines with SQL and Python every day.\n"
)
QUESTION = "How much do data engineers in Lisbon earn?"
HEAVY = ("torch", "sentence_transformers", "transformers")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Settings:
    return one_article_index(
        tmp_path_factory.mktemp("light"), ARTICLE, embedder, trusted_hosts=TEST_HOSTS
    )


def real_sentences(count: int = 60) -> list[str]:
    """Lines of the product's own articles, spread over the whole feed, and two long texts."""
    [feed] = sorted(CORPUS.glob("*.xml"))
    lines = [line for a in read_articles(feed) for s in a.sections for line in s.lines]
    step = max(1, len(lines) // count)
    longest = sorted(lines, key=len)[-1]
    return [*lines[::step][:count], longest, " ".join(lines[:80])]  # the last one is truncated


def test_the_light_encoder_gives_the_torch_models_vectors(
    built: Settings, embedder: Embedder
) -> None:
    index = load_index(built)
    encoder = load_question_encoder(index.path, index.manifest)
    texts = [*real_sentences(), QUESTION, "salry of an mlops enginer?", "Ünïcödé — naïve café 😀"]
    light = encoder.encode(texts)
    heavy = embedder.encode(texts)
    cosines = (light * heavy).sum(axis=1)
    assert light.shape == heavy.shape == (len(texts), 384)
    assert np.abs(np.linalg.norm(light, axis=1) - 1).max() < 1e-5
    assert cosines.min() > 1 - 1e-5, texts[int(cosines.argmin())]


def test_the_manifest_records_the_encoder(built: Settings) -> None:
    manifest = read_manifest(built.index_dir)
    record = manifest["question_encoder"]
    assert record["model"] == manifest["model"] == "all-MiniLM-L6-v2"
    assert (record["dimension"], record["pooling"], record["normalize"]) == (384, "mean", "l2")
    assert record["max_tokens"] == 256
    assert (record["file"], record["tokenizer"]) == ("encoder/model.onnx", "encoder/tokenizer.json")
    for name, sha256 in (
        (record["file"], record["sha256"]),
        (record["tokenizer"], record["tokenizer_sha256"]),
    ):
        assert manifest["files"][name]["sha256"] == sha256
        assert manifest["files"][name]["bytes"] == (built.index_dir / name).stat().st_size


def serving_child(settings: Settings, code: str) -> dict:
    """Run ``code`` in a fresh python over these settings; it prints one JSON line last."""
    env = {
        **os.environ,
        "RAG_CORPUS_DIR": str(settings.corpus_dir),
        "RAG_INDEX_DIR": str(settings.index_dir),
        "RAG_DATA_DIR": str(settings.data_dir),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


HEAVY_LOADED = f"sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r})"


def test_a_serving_worker_answers_without_torch(built: Settings) -> None:
    # The app exactly as `rag serve` builds it, its lifespan loading index and encoder.
    code = f"""
import json, sys
from fastapi.testclient import TestClient
from rag.settings import Settings
from web.app import create_app
with TestClient(create_app(Settings.from_env(trusted_hosts=("testserver",)))) as client:
    response = client.post("/api/answer", json={{"question": {QUESTION!r}}})
print(json.dumps({{"status": response.status_code, "answer": response.json().get("answer"),
                  "heavy": {HEAVY_LOADED}}}))
"""
    result = serving_child(built, code)
    assert result["status"] == 200, result
    assert "48,000 euros" in result["answer"]
    assert result["heavy"] == []


def test_rag_ask_answers_without_torch(built: Settings) -> None:
    code = f"""
import json, sys
from rag.cli import cli
cli.main(["ask", {QUESTION!r}, "--json"], standalone_mode=False)
print(json.dumps({{"heavy": {HEAVY_LOADED}}}))
"""
    result = serving_child(built, code)
    assert result["heavy"] == []


@pytest.fixture()
def older(tmp_path: Path, embedder: Embedder) -> Settings:
    """An index as builds before the question encoder wrote it: no encoder in its manifest."""
    settings = one_article_index(tmp_path, ARTICLE, embedder, trusted_hosts=TEST_HOSTS)
    path = settings.index_dir / MANIFEST
    manifest = json.loads(path.read_text())
    del manifest["question_encoder"]
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("encoder/")}
    path.write_text(json.dumps(manifest))
    return settings


def test_an_index_without_an_encoder_is_served_as_a_clear_503(older: Settings) -> None:
    with TestClient(create_app(older)) as client:
        health = client.get("/api/health")
        answer = client.post("/api/answer", json={"question": QUESTION})
    assert health.status_code == 503, health.text
    assert re.fullmatch(
        r"the index at \S+ was built without a question encoder \(by an earlier version\); "
        r"run `rag index` to rebuild it",
        health.json()["reason"],
    ), health.json()
    assert answer.status_code == 503
    assert answer.json()["detail"] == health.json()["reason"]


def test_an_index_without_an_encoder_is_rebuilt_by_index_if_needed(
    older: Settings, embedder: Embedder
) -> None:
    assert not index_is_current(older)
    build_index(older, embedder)
    assert index_is_current(older)
    assert "question_encoder" in read_manifest(older.index_dir)


def test_rag_ask_still_answers_from_an_index_without_an_encoder(
    older: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (
        ("RAG_CORPUS_DIR", older.corpus_dir),
        ("RAG_INDEX_DIR", older.index_dir),
        ("RAG_DATA_DIR", older.data_dir),
    ):
        monkeypatch.setenv(name, str(value))
    result = CliRunner().invoke(cli, ["ask", QUESTION])
    assert result.exit_code == 0, result.output
    assert "48,000 euros" in result.output


def test_a_damaged_export_is_exported_again(tmp_path: Path, embedder: Embedder) -> None:
    settings = one_article_index(tmp_path, ARTICLE, embedder)
    first = read_manifest(settings.index_dir)["question_encoder"]
    [export] = [p for p in settings.model_cache_dir.iterdir() if p.is_dir()]
    network = export / "model.onnx"
    damaged = network.read_bytes()[:1000]
    network.unlink()  # the builds keep their own link to the file
    network.write_bytes(damaged)
    build_index(settings, embedder)
    again = read_manifest(settings.index_dir)["question_encoder"]
    assert again["sha256"] == first["sha256"]
    assert network.stat().st_size == (settings.index_dir / again["file"]).stat().st_size
    index = load_index(settings)
    assert load_question_encoder(index.path, index.manifest).encode_query(QUESTION).shape == (384,)
