"""Operator features over HTTP and the CLI: feedback, API keys, the chat's own routes, filters."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import lxml.html
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from rag.cli import cli
from rag.errors import SettingsError
from rag.feedback import export_feedback, feedback_stats
from rag.index import Index
from rag.keys import create_key, keys_file, revoke_key
from rag.settings import Settings
from web.app import create_app
from web.auth import KeyRateLimit

SALARY = "How much do AI engineers earn in the US?"
SAME_SITE = {"origin": "http://testserver"}  # TestClient's requests go to http://testserver
FOREIGN = {"origin": "https://evil.example"}


@pytest.fixture(scope="module")
def settings(
    corpus_settings: Settings, corpus_index: Index, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """The session's real index, with this module's own (empty) data folder."""
    return corpus_settings.with_(data_dir=tmp_path_factory.mktemp("operator") / "data")


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    """One app for the module: each start loads the model and the index."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def answered(client: TestClient) -> dict:
    """A real answer to give feedback on."""
    response = client.post("/api/answer", json={"question": SALARY, "top_k": 3})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture()
def key(settings: Settings) -> Iterator[str]:
    """A key named ``test-app``: API keys are on until the test ends."""
    yield create_key(settings, "test-app")
    keys_file(settings).unlink(missing_ok=True)


def feedback_for(answer: dict, /, **changes: object) -> dict:
    quoted = [c["passage_id"] for c in answer["citations"] if c["highlights"]]
    body = {"question": answer["question"], "answer": answer["answer"], "passage_ids": quoted}
    return body | {"helpful": True} | changes


def exported(settings: Settings) -> dict[int, dict]:
    out = io.StringIO()
    export_feedback(settings, "jsonl", out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    return {row["id"]: row for row in rows}


def chat_token(client: TestClient) -> str:
    """The token the chat page embeds, as a browser would find it."""
    page = lxml.html.fromstring(client.get("/").text)
    return page.xpath("//meta[@name='chat-token']/@content")[0]


def from_page(client: TestClient) -> dict[str, str]:
    """The headers the chat page's script sends."""
    return SAME_SITE | {"x-chat-token": chat_token(client)}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


# Feedback


def test_feedback_is_stored_with_its_articles_and_counted(
    client: TestClient, settings: Settings, answered: dict
) -> None:
    before = feedback_stats(settings)
    payload = feedback_for(answered, helpful=False, comment="  Too vague.  ")
    response = client.post("/api/feedback", json=payload)
    assert response.status_code == 201, response.text
    assert set(response.json()) == {"id"}

    row = exported(settings)[response.json()["id"]]
    quoted = [c for c in answered["citations"] if c["highlights"]]
    assert row["question"] == SALARY
    assert row["helpful"] is False
    assert row["comment"] == "Too vague."
    assert row["passage_ids"] == [c["passage_id"] for c in quoted]
    assert row["articles"] == [c["article"] for c in quoted]
    assert row["sections"] == [c["section"] for c in quoted]
    assert row["api_key"] is None
    after = feedback_stats(settings)
    assert (after.votes, after.helpful) == (before.votes + 1, before.helpful)
    assert {r.article for r in after.by_article} >= {c["article"] for c in quoted}


def test_feedback_without_passages_or_comment_is_accepted(
    client: TestClient, settings: Settings, answered: dict
) -> None:
    payload = {"question": SALARY, "answer": "The articles don't say.", "passage_ids": []}
    response = client.post("/api/feedback", json=payload | {"helpful": True})
    assert response.status_code == 201, response.text
    row = exported(settings)[response.json()["id"]]
    assert (row["comment"], row["passage_ids"], row["helpful"]) == ("", [], True)


@pytest.mark.parametrize(
    ("changes", "status", "expected"),
    [
        ({"comment": "x" * 2001}, 422, "comment: String should have at most 2000 characters"),
        ({"passage_ids": ["no-such-passage"]}, 400, "passage_ids.0: no passage 'no-such-passage'"),
        ({"mood": "grumpy"}, 422, "mood: is not a known field"),
        ({"helpful": "yes"}, 422, "helpful: Input should be a valid boolean"),
        ({"helpful": None}, 422, "helpful: Input should be a valid boolean"),
        ({"question": " "}, 422, "question: is empty"),
        ({"answer": ""}, 422, "answer: String should have at least 1 character"),
        ({"passage_ids": "abc"}, 422, "passage_ids: Input should be a valid list"),
    ],
)
def test_bad_feedback_is_a_4xx_naming_the_field(
    client: TestClient,
    settings: Settings,
    answered: dict,
    changes: dict,
    status: int,
    expected: str,
) -> None:
    before = feedback_stats(settings).votes
    response = client.post("/api/feedback", json=feedback_for(answered, **changes))
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(expected), response.json()
    assert feedback_stats(settings).votes == before


def test_missing_helpful_is_named(client: TestClient, answered: dict) -> None:
    payload = feedback_for(answered)
    del payload["helpful"]
    response = client.post("/api/feedback", json=payload)
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "helpful: Field required"


def test_openapi_documents_feedback_and_the_bearer_key(client: TestClient, key: str) -> None:
    schema = client.get("/openapi.json").json()  # with keys on: see tests/test_openapi.py
    feedback = schema["paths"]["/api/feedback"]["post"]
    assert "201" in feedback["responses"]
    assert feedback["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/api/health"]["get"]
    assert not any(path.startswith("/chat") for path in schema["paths"])


# API keys


def test_without_keys_the_api_is_open(client: TestClient, settings: Settings) -> None:
    assert not keys_file(settings).exists()
    assert client.get("/api/articles").status_code == 200
    assert client.post("/api/answer", json={"question": SALARY}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", "/api/answer", {"question": SALARY}), ("GET", "/api/articles", None)],
)
def test_with_keys_each_api_route_needs_a_current_key(
    client: TestClient, key: str, method: str, path: str, body: dict | None
) -> None:
    missing = client.request(method, path, json=body)
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json() == {
        "detail": "this API needs a key: send the header 'Authorization: Bearer <key>'"
    }
    for wrong in (bearer(key + "x"), bearer("rag_guess"), {"authorization": f"Basic {key}"}):
        refused = client.request(method, path, json=body, headers=wrong)
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
    accepted = client.request(method, path, json=body, headers=bearer(key))
    assert accepted.status_code == 200, accepted.text


def test_feedback_with_a_key_records_its_name(
    client: TestClient, settings: Settings, answered: dict, key: str
) -> None:
    assert client.post("/api/feedback", json=feedback_for(answered)).status_code == 401
    response = client.post("/api/feedback", json=feedback_for(answered), headers=bearer(key))
    assert response.status_code == 201, response.text
    assert exported(settings)[response.json()["id"]]["api_key"] == "test-app"


def test_health_stays_open_with_keys(client: TestClient, key: str) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"


def test_a_revoked_key_is_refused(client: TestClient, settings: Settings, key: str) -> None:
    assert client.get("/api/articles", headers=bearer(key)).status_code == 200
    revoke_key(settings, "test-app")
    response = client.get("/api/articles", headers=bearer(key))
    assert response.status_code == 401, response.text
    assert response.json()["detail"] == "the API key is not valid (mistyped or revoked)"


def test_a_damaged_keys_file_keeps_the_api_closed(
    client: TestClient, settings: Settings, key: str
) -> None:
    keys_file(settings).write_text("{not json")
    response = client.get("/api/articles", headers=bearer(key))
    assert response.status_code == 503, response.text
    assert response.json() == {"detail": "API keys cannot be checked right now; try again later"}


def test_chat_routes_work_without_a_key_from_the_same_site(
    client: TestClient, settings: Settings, answered: dict, key: str
) -> None:
    page_headers = from_page(client)
    response = client.post("/chat/api/answer", json={"question": SALARY}, headers=page_headers)
    assert response.status_code == 200, response.text
    assert response.json()["answered"] is True
    response = client.post("/chat/api/feedback", json=feedback_for(answered), headers=page_headers)
    assert response.status_code == 201, response.text
    assert exported(settings)[response.json()["id"]]["api_key"] is None
    form = {"question": SALARY, "chat_token": chat_token(client)}
    page = client.post("/", data=form, headers=SAME_SITE)
    assert page.status_code == 200, page.text


@pytest.mark.parametrize(
    "headers",
    [
        FOREIGN,
        {"origin": "null"},
        {"origin": "http://testserver.evil.example"},
        {"origin": "http://testserver:8080"},
        {"referer": "https://evil.example/page"},
        {"origin": "https://evil.example", "referer": "http://testserver/"},
    ],
)
@pytest.mark.parametrize(
    ("path", "form", "body"),
    [
        ("/", {"question": SALARY}, None),
        ("/chat/api/answer", None, {"question": SALARY}),
        ("/chat/api/feedback", None, {"question": SALARY, "answer": "a", "passage_ids": []}),
    ],
)
def test_cross_site_posts_to_the_chat_are_forbidden(
    client: TestClient, headers: dict, path: str, form: dict | None, body: dict | None
) -> None:
    response = client.post(path, data=form, json=body, headers=headers)
    assert response.status_code == 403, response.text
    assert response.json() == {"detail": "cross-site posts are refused; use the page on this site"}


def test_a_same_site_referer_is_enough_without_origin(client: TestClient) -> None:
    headers = {"referer": "http://testserver/?from=chat", "x-chat-token": chat_token(client)}
    response = client.post("/chat/api/answer", json={"question": SALARY}, headers=headers)
    assert response.status_code == 200, response.text


def test_per_key_rate_limit_is_a_429_with_retry_after(settings: Settings, tmp_path: Path) -> None:
    limited = settings.with_(key_rate_limit_per_minute=2, data_dir=tmp_path / "data")
    key, other = create_key(limited, "tiny"), create_key(limited, "other")
    with TestClient(create_app(limited)) as client:
        for _ in range(2):
            assert client.get("/api/articles", headers=bearer(key)).status_code == 200
        response = client.get("/api/articles", headers=bearer(key))
        assert response.status_code == 429, response.text
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.json()["detail"].startswith("more than 2 requests a minute with this key")
        # Another key has its own allowance; health is never counted.
        assert client.get("/api/articles", headers=bearer(other)).status_code == 200
        assert client.get("/api/health").status_code == 200


def test_key_rate_limit_window_slides() -> None:
    limit = KeyRateLimit(per_minute=2)
    assert [limit.wait("a", now=t) for t in (0.0, 10.0)] == [0.0, 0.0]
    assert limit.wait("a", now=15.0) == 45.0
    assert limit.wait("b", now=15.0) == 0.0
    assert limit.wait("a", now=60.0) == 0.0  # the request at 0 s has left the window
    assert limit.wait("a", now=61.0) == 9.0
    assert KeyRateLimit(per_minute=0).wait("a") == 0.0


def test_key_rate_limit_setting_is_checked() -> None:
    with pytest.raises(SettingsError, match=r"key_rate_limit_per_minute must be 0 \(off\) or more"):
        Settings(key_rate_limit_per_minute=-1)
    assert Settings().key_rate_limit_per_minute == 600


# The article picker without JavaScript


def test_chat_lists_the_articles_to_limit_to(client: TestClient) -> None:
    page = lxml.html.fromstring(client.get("/").text)
    picker = page.xpath("//form[@id='ask']//details[@class='limit']")[0]
    assert " ".join(picker.xpath("./summary")[0].text_content().split()) == "Limit to articles"
    boxes = picker.xpath(".//input[@type='checkbox'][@name='articles']")
    slugs = [a["slug"] for a in client.get("/api/articles").json()]
    assert [b.get("value") for b in boxes] == slugs
    assert not any(b.checked for b in boxes)


def test_form_post_with_an_article_cites_only_that_article(client: TestClient) -> None:
    articles = client.get("/api/articles").json()
    chosen = next(a for a in articles if "architect" in a["slug"])
    form = {"question": SALARY, "articles": [chosen["slug"]], "chat_token": chat_token(client)}
    response = client.post("/", data=form, headers=SAME_SITE)
    assert response.status_code == 200, response.text
    page = lxml.html.fromstring(response.text)
    links = page.xpath("//li[contains(@class, 'turn-answer')]//a[@class='source']/@href")
    assert links and {link.split("#")[0] for link in links} == {chosen["url"]}
    checked = page.xpath("//input[@name='articles'][@checked]/@value")
    assert checked == [chosen["slug"]]


# rag ask with filters


Ask = Callable[..., Result]


@pytest.fixture(scope="module")
def run_ask(settings: Settings) -> Ask:
    """`rag ask SALARY ARGS...` over the session's index, as a user would run it."""

    def run(*args: str) -> Result:
        return CliRunner().invoke(
            cli, ["ask", SALARY, "--index", str(settings.index_dir), *args], catch_exceptions=False
        )

    return run


def test_rag_ask_with_an_article_cites_only_it(run_ask: Ask, corpus_index: Index) -> None:
    chosen = next(a for a in corpus_index.articles if "architect" in a.slug)
    result = run_ask("--article", chosen.url, "--top-k", "6", "--json")
    assert result.exit_code == 0, result.output
    citations = json.loads(result.output)["citations"]
    assert len(citations) == 6
    assert {c["article"] for c in citations} == {chosen.title}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--article", "no-such-article"),
            "Error: articles: no indexed article has the URL or slug 'no-such-article'",
        ),
        (("--after", "2025-13-01"), "Error: --after must be a day as YYYY-MM-DD, not '2025-13-01'"),
        (("--before", "soon"), "Error: --before must be a day as YYYY-MM-DD, not 'soon'"),
        (
            ("--after", "2025-02-01", "--before", "2025-01-01"),
            "Error: --after 2025-02-01 is later than --before 2025-01-01",
        ),
    ],
)
def test_rag_ask_bad_filters_exit_1_with_one_line(
    run_ask: Ask, args: tuple[str, ...], message: str
) -> None:
    result = run_ask(*args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output


def test_rag_ask_date_filter_excluding_everything_declines(run_ask: Ask) -> None:
    result = run_ask("--after", "2100-01-01")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("The articles don't")
