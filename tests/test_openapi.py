"""The OpenAPI document and the server agree: security, refusals, examples, each field's values."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from conftest import one_article_index
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from rag.embedding import Embedder
from rag.keys import create_key
from rag.settings import Settings
from web.app import create_app

ARTICLE = """---
title: Machine learning engineer careers
url: https://careers.example/ml-engineering/
date: 2025-03-01
---

## Pay

Machine learning engineers in Berlin earn about 75,000 euros a year.
"""
KEYED = [("post", "/api/answer"), ("post", "/api/feedback"), ("get", "/api/articles")]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Settings:
    return one_article_index(
        tmp_path_factory.mktemp("openapi"),
        ARTICLE,
        embedder,
        trusted_hosts=("testserver", "localhost", "127.0.0.1"),
        feedback_bytes_per_client_per_day=0,  # generated feedback is large and plentiful
    )


@pytest.fixture()
def settings(built: Settings, tmp_path: Path) -> Settings:
    return built.with_(data_dir=tmp_path / "data")


@pytest.fixture()
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200, response.text
    return response.json()


def request_schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return {**doc["components"]["schemas"][name], "components": doc["components"]}


# Security as the server behaves


def test_without_keys_the_document_declares_no_security(client: TestClient) -> None:
    doc = document(client)
    for method, path in KEYED:
        operation = doc["paths"][path][method]
        assert "security" not in operation, path
        assert "401" not in operation["responses"], path
    assert "securitySchemes" not in doc.get("components", {})
    assert client.get("/api/articles").status_code == 200


def test_with_keys_the_keyed_routes_declare_bearer_and_401(
    client: TestClient, settings: Settings
) -> None:
    assert "security" not in document(client)["paths"]["/api/answer"]["post"]
    create_key(settings, "partner")  # keys on while the server runs
    doc = document(client)
    for method, path in KEYED:
        operation = doc["paths"][path][method]
        assert operation["security"] == [{"HTTPBearer": []}], path
        assert "401" in operation["responses"], path
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" not in doc["paths"]["/api/health"]["get"]
    assert client.get("/api/articles").status_code == 401


@pytest.mark.parametrize("path", ["/api/answer", "/api/feedback"])
def test_posts_document_every_refusal_the_server_makes(client: TestClient, path: str) -> None:
    responses = document(client)["paths"][path]["post"]["responses"]
    assert set(responses) >= {"400", "408", "413", "415", "422", "429", "503"}
    assert "429" in document(client)["paths"]["/api/articles"]["get"]["responses"]


# Examples and values


def test_every_documented_example_is_accepted(client: TestClient) -> None:
    doc = document(client)
    tried = 0
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            content = operation.get("requestBody", {}).get("content", {})
            ref = content.get("application/json", {}).get("schema", {}).get("$ref")
            if ref is None:
                continue
            component = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
            for example in component.get("examples", []):
                response = client.request(method, path, json=example)
                assert 200 <= response.status_code < 300, (path, response.text)
                tried += 1
    assert tried == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("articles", [""]),
        ("question", "   "),
        ("question", "\t\n"),
        ("published_after", 0),
        ("published_before", 1_700_000_000),
        ("published_after", "2025-03-01T00:00:00"),
        ("top_k", 21),
        ("top_k", True),
        ("top_k", 1.5),
    ],
)
def test_values_the_server_refuses_are_outside_the_schema(
    client: TestClient, field: str, value: object
) -> None:
    body = {"question": "What do machine learning engineers earn?", field: value}
    schema = request_schema(document(client), "AnswerRequest")
    checker = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
    assert not checker.is_valid(body), f"the schema allows {field}={value!r}"
    response = client.post("/api/answer", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"].split(".")[0] == field


@pytest.mark.parametrize(("field", "value"), [("top_k", 1.0), ("top_k", 20), ("question", " a ")])
def test_values_the_schema_allows_are_accepted(
    client: TestClient, field: str, value: object
) -> None:
    body = {"question": "What do machine learning engineers earn?", field: value}
    schema = request_schema(document(client), "AnswerRequest")
    jsonschema_rs.Draft202012Validator(schema, validate_formats=True).validate(body)
    response = client.post("/api/answer", json=body)
    assert response.status_code == 200, response.text


# Generated requests: what the schema allows is accepted, what it does not is refused.

# Valid by the schema, refused only for what no schema can know: the loaded index's contents.
DATA_DEPENDENT = ("articles.", "articles:", "passage_ids.")


def accepted_when_valid(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """A request the schema allows is answered (2xx), or refused for a documented reason."""
    if not case.meta or not case.meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if 200 <= status < 300 or status in (401, 429, 503):
        return None
    detail = response.json().get("detail", "")
    if status == 400 and detail.startswith(DATA_DEPENDENT):
        return None
    raise AssertionError(f"valid data was refused with {status}: {detail}")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    accepted_when_valid,
]
CASES_PER_OPERATION = 40  # per generation mode: a few hundred in all, seeded and derandomized


def test_generated_requests_agree_with_the_schema(settings: Settings) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} == {
        "POST /api/answer",
        "POST /api/feedback",
        "GET /api/articles",
        "GET /api/health",
    }
    cases = 0
    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if operation.method.upper() == "POST":
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @seed(20260101)
            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(
                max_examples=CASES_PER_OPERATION,
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case: schemathesis.Case) -> None:
                nonlocal cases
                cases += 1
                case.call_and_validate(checks=CHECKS)

            call()
    assert cases >= 100
