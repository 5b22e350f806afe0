"""The JSON API and the no-JavaScript chat page, over the real index and model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lxml.html
import pytest
from fastapi.testclient import TestClient

import web.service
from rag.settings import Settings
from web.app import create_app

SALARY = "How much do AI engineers earn in the US?"
OFF_TOPIC = "What is the best pizza topping in Naples?"
SITE = "http://testserver"  # TestClient's requests go to http://testserver


@pytest.fixture(scope="session")
def app_settings(any_app_settings: Settings) -> Settings:
    """Every API test runs over the file store and over PostgreSQL."""
    return any_app_settings


@pytest.fixture(scope="module")
def client(app_settings: Settings) -> Iterator[TestClient]:
    """conftest's `client`, started once for this module: each start loads the model and index."""
    with TestClient(create_app(app_settings)) as test_client:
        yield test_client


def css(root: lxml.html.HtmlElement, selector: str) -> list[lxml.html.HtmlElement]:
    """Elements matching a small CSS subset: descendant steps of ``tag.class`` (no cssselect)."""
    path = ""
    for step in selector.split():
        tag, *classes = step.split(".")
        tests = [f"contains(concat(' ', normalize-space(@class), ' '), ' {c} ')" for c in classes]
        path += f"//{tag or '*'}" + "".join(f"[{t}]" for t in tests)
    return root.xpath("." + path)


def form_post(client: TestClient, data: dict) -> Any:
    """The chat's form posted as a browser does: from its page, with the page's token."""
    page = lxml.html.fromstring(client.get("/").text)
    token = page.xpath("//form[@id='ask']/input[@name='chat_token']/@value")[0]
    return client.post("/", data=data | {"chat_token": token}, headers={"origin": SITE})


def page_of(response: Any) -> lxml.html.HtmlElement:
    assert response.headers["content-type"].startswith("text/html"), response.text
    return lxml.html.fromstring(response.text)


def texts(elements: list[lxml.html.HtmlElement]) -> list[str]:
    return [" ".join(e.text_content().split()) for e in elements]


def test_answer_quotes_and_cites_the_articles(client: TestClient) -> None:
    response = client.post("/api/answer", json={"question": SALARY, "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "question",
        "answered",
        "answer",
        "quotes",
        "citations",
        "took_ms",
        "probability",
        "model",
    }
    assert body["question"] == SALARY
    assert body["answered"] is True
    assert isinstance(body["took_ms"], float) and body["took_ms"] > 0
    assert [c["n"] for c in body["citations"]] == [1, 2, 3]
    quoted = [c for c in body["citations"] if c["highlights"]]
    assert quoted, body
    for citation in body["citations"]:
        assert set(citation) == {
            "n", "passage_id", "article", "section", "url", "text", "score", "highlights"
        }  # fmt: skip
        assert citation["url"].startswith("https://")
        for start, end in citation["highlights"]:
            assert 0 <= start < end <= len(citation["text"])
            # Every highlighted span is quoted verbatim in the answer.
            assert citation["text"][start:end] in body["answer"]


def test_off_topic_question_is_declined_with_the_closest_sections(client: TestClient) -> None:
    response = client.post("/api/answer", json={"question": OFF_TOPIC})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answered"] is False
    assert "The articles don't" in body["answer"]
    assert len(body["citations"]) == 5
    assert all(c["highlights"] == [] for c in body["citations"])


def test_follow_up_with_history_is_answered(client: TestClient) -> None:
    response = client.post(
        "/api/answer", json={"question": "and senior ones?", "history": [SALARY]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["question"] == "and senior ones?"


def test_question_is_trimmed_before_answering(client: TestClient) -> None:
    response = client.post("/api/answer", json={"question": f"   {SALARY}  \n"})
    assert response.status_code == 200, response.text
    assert response.json()["question"] == SALARY


@pytest.mark.parametrize(
    ("payload", "status", "expected"),
    [
        ({"question": ""}, 422, "question: is empty"),
        ({"question": "   \n\t "}, 422, "question: is empty"),
        ({"question": "x" * 1001}, 422, "question: String should have at most 1000 characters"),
        ({}, 422, "question: Field required"),
        ({"question": 42}, 422, "question: Input should be a valid string"),
        ({"question": ["a"]}, 422, "question: Input should be a valid string"),
        ({"question": "salary", "top_k": 0}, 422, "top_k: Input should be greater than or"),
        ({"question": "salary", "top_k": 21}, 422, "top_k: Input should be less than or"),
        ({"question": "salary", "top_k": "5"}, 422, "top_k: Input should be a valid integer"),
        ({"question": "salary", "top_k": True}, 422, "top_k: Input should be a valid integer"),
        ({"question": "salary", "history": "earlier"}, 422, "history: Input should be a valid"),
        ({"question": "salary", "history": ["q"] * 11}, 422, "history: List should have at most"),
        ({"question": "salary", "history": ["x" * 1001]}, 422, "history.0: String should have"),
        ({"question": "salary", "model": "gpt"}, 422, "model: is not a known field"),
        ({"question": "salary", "published_after": "soon"}, 422, "published_after: must be a day"),
        (["salary"], 400, "body: must be a JSON object"),
        ("salary", 400, "body: must be a JSON object"),
    ],
)
def test_bad_json_input_is_a_4xx_that_names_the_problem(
    client: TestClient, payload: Any, status: int, expected: str
) -> None:
    response = client.post("/api/answer", json=payload)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"].startswith(expected), response.json()


@pytest.mark.parametrize(
    ("content", "headers", "status", "expected"),
    [
        ('{"question": "salary"', {"content-type": "application/json"}, 400, "body: is not valid"),
        ("", {"content-type": "application/json"}, 400, "body: must be a JSON object"),
        ('{"question": "salary"}', {"content-type": "text/plain"}, 415, "send the request as JSON"),
        ("question=salary", {"content-type": "application/x-www-form-urlencoded"}, 415, "send"),
    ],
)
def test_malformed_body_or_content_type_is_a_4xx_with_a_json_reason(
    client: TestClient, content: str, headers: dict[str, str], status: int, expected: str
) -> None:
    response = client.post("/api/answer", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(expected), response.json()


def test_health_and_articles_describe_the_index(client: TestClient) -> None:
    health = client.get("/api/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"
    assert health.json()["passages"] > 0
    response = client.get("/api/articles")
    assert response.status_code == 200, response.text
    articles = response.json()
    assert len(articles) == health.json()["articles"] == 6
    assert sum(a["passages"] for a in articles) == health.json()["passages"]
    for article in articles:
        assert set(article) == {"title", "url", "slug", "published", "sections", "passages"}
        assert article["url"].rstrip("/").endswith(article["slug"])
        assert article["published"] is None or len(article["published"]) == 10
        assert article["sections"] > 0 and article["passages"] > 0


def test_articles_filter_keeps_citations_in_that_article(client: TestClient) -> None:
    articles = client.get("/api/articles").json()
    chosen = next(a for a in articles if "architect" in a["slug"])
    response = client.post(
        "/api/answer", json={"question": SALARY, "top_k": 8, "articles": [chosen["slug"]]}
    )
    assert response.status_code == 200, response.text
    citations = response.json()["citations"]
    assert len(citations) == 8
    assert {c["url"].split("#")[0] for c in citations} == {chosen["url"]}
    assert {c["article"] for c in citations} == {chosen["title"]}


def test_unknown_article_is_a_400_naming_the_field(client: TestClient) -> None:
    response = client.post("/api/answer", json={"question": SALARY, "articles": ["no-such"]})
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("articles: no indexed article has the URL or slug")


def test_date_filter_that_excludes_everything_declines(client: TestClient) -> None:
    response = client.post(
        "/api/answer", json={"question": SALARY, "published_after": "2100-01-01"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["answered"] is False
    assert response.json()["citations"] == []


def test_unexpected_error_is_a_json_500_without_internals(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internal state /srv/index")

    monkeypatch.setattr(web.service, "answer_question", broken)
    response = client.post("/api/answer", json={"question": SALARY})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; it has been logged"}


def test_openapi_documents_the_typed_answer_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    answer = schema["paths"]["/api/answer"]["post"]
    request_ref = answer["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request_schema = schema["components"]["schemas"][request_ref.rsplit("/", 1)[1]]
    assert request_schema["additionalProperties"] is False
    assert request_schema["required"] == ["question"]
    assert set(answer["responses"]) == {"200", "400", "408", "413", "415", "422", "429", "503"}
    assert "/api/articles" in schema["paths"] and "/api/health" in schema["paths"]
    assert "/" not in schema["paths"]
    assert client.get("/docs").status_code == 200


def test_empty_chat_offers_example_questions_and_a_labelled_form(client: TestClient) -> None:
    page = page_of(client.get("/"))
    examples = page.xpath("//*[@id='examples']//button[@name='question']")
    assert len(examples) == 4
    assert all(b.get("value") == b.text_content() for b in examples)
    form = page.get_element_by_id("ask")
    assert (form.get("method"), form.get("action")) == ("post", "/")
    box = form.xpath(".//textarea[@name='question']")[0]
    assert page.xpath(f"//label[@for='{box.get('id')}']")[0].text_content() == "Your question"
    assert page.get_element_by_id("transcript").get("aria-live") == "polite"
    assert css(page, ".turn") == []


def test_form_post_renders_the_answer_without_javascript(client: TestClient) -> None:
    earlier = "Which skills does an MLOps engineer need?"
    response = form_post(client, {"question": SALARY, "history": [earlier]})
    assert response.status_code == 200, response.text
    page = page_of(response)
    api = client.post("/api/answer", json={"question": SALARY, "history": [earlier]}).json()

    assert texts(css(page, ".turn-user .question")) == [
        f"You asked: {earlier}",
        f"You asked: {SALARY}",
    ]
    # The earlier question is answered again: the whole conversation is on the page.
    first, card = css(page, ".turn-answer .answer")
    assert first.get("data-question") == earlier
    assert card.get("data-answered") == "true"
    used = [c for c in api["citations"] if c["highlights"]]
    quoted = [c["text"][s:e] for c in used for s, e in c["highlights"]]
    # Sentences and list items read as text, table rows as rows of their table.
    rows = [q for q in api["quotes"] if q["kind"] == "table_row"]
    assert texts(css(card, ".quote .sentence")) == [
        q["text"] for q in api["quotes"] if q["kind"] != "table_row"
    ]
    assert len(css(card, ".quote-table tbody tr")) == len(rows)
    # Each quote's source chip shows its passage with every span the answer quotes from it.
    for chip_of_quote in css(card, ".cite"):
        marks = texts(css(chip_of_quote, "mark"))
        assert marks and any(marks == [c["text"][s:e] for s, e in c["highlights"]] for c in used)
    assert list(dict.fromkeys(texts(css(card, ".cite mark")))) == quoted
    chip = css(card, ".cite summary.chip")[0]
    assert chip.text_content() == "1"
    link = css(card, ".cite .passage-link")[0]
    assert (link.get("href"), link.get("target"), link.get("rel")) == (
        used[0]["url"],
        "_blank",
        "noopener",
    )
    sources = card.xpath("./ol[@class='sources']/li/a")
    assert [a.get("href") for a in sources] == [c["url"] for c in used]
    related = css(card, "details.related a.source")
    assert [a.get("href") for a in related] == [
        c["url"] for c in api["citations"] if not c["highlights"]
    ]
    hidden = page.xpath("//form[@id='ask']//input[@type='hidden'][@name='history']")
    assert [i.get("value") for i in hidden] == [earlier, SALARY]


def test_form_post_of_an_off_topic_question_shows_the_closest_sections(
    client: TestClient,
) -> None:
    page = page_of(form_post(client, {"question": OFF_TOPIC}))
    card = css(page, ".turn-answer .answer")[0]
    assert card.get("data-answered") == "false"
    assert texts(css(card, ".declined-text"))[0].startswith("The articles don't")
    assert texts(css(card, ".sources-title")) == ["Closest sections"]
    assert len(css(card, ".sources a.source")) == 5
    assert css(card, "mark") == []


def test_form_post_of_a_blank_question_shows_the_error_on_the_page(client: TestClient) -> None:
    response = form_post(client, {"question": "   "})
    assert response.status_code == 400
    alert = page_of(response).get_element_by_id("form-error")
    assert alert.get("role") == "alert" and alert.get("hidden") is None
    assert alert.text_content() == "question: is empty; type a question about AI careers"


def test_script_in_a_question_comes_back_as_text(client: TestClient) -> None:
    question = "<script>alert(1)</script> AI engineer salary <b>now</b>"
    response = form_post(client, {"question": question, "history": ['"><img src=x>']})
    assert response.status_code == 200, response.text
    page = page_of(response)
    # The only script is the page's own, and the question is shown as typed.
    assert [s.get("src") for s in page.iter("script")] == ["/static/chat.js"]
    assert css(page, ".turn-user img") + css(page, ".turn-user b") == []
    assert texts(css(page, ".turn-user .question")) == [
        'You asked: "><img src=x>',
        f"You asked: {question}",
    ]
    hidden = page.xpath("//form[@id='ask']//input[@name='history']")
    assert [i.get("value") for i in hidden] == ['"><img src=x>', question]


def test_explain_adds_what_each_stage_saw_and_keeps_the_answer(client) -> None:
    question = {"question": "What skills does an MLOps engineer need?"}
    plain = client.post("/api/answer", json=question).json()
    explained = client.post("/api/answer", json={**question, "explain": True}).json()
    assert "explain" not in plain
    assert explained["answer"] == plain["answer"]
    explain = explained["explain"]
    assert set(explain) >= {"analysis", "candidates", "probability", "threshold", "decided"}
    assert explain["probability"] == plain["probability"]


def test_a_filter_leaving_no_passage_is_a_decline_not_a_500(client) -> None:
    body = {
        "question": "What skills does an MLOps engineer need?",
        "published_before": "1970-01-01",
    }
    response = client.post("/api/answer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["answered"] is False
