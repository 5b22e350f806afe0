"""The limiting middleware on its own, around a small app whose answering route is slow on cue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request

from rag.errors import SettingsError
from rag.settings import Settings
from web import limits

ANSWER_SECONDS = 0.3


def make_app(**changes: object) -> FastAPI:
    """An app with the real limits and an answering route that takes ANSWER_SECONDS.

    Its routes carry the marks of the real app's routes of the same paths.
    """
    app = FastAPI()
    limits.install(app, Settings().with_(**changes))

    async def answer(request: Request) -> dict:
        body = await request.body()
        await asyncio.sleep(ANSWER_SECONDS)
        return {"received": len(body)}

    app.post("/api/answer", dependencies=[limits.ANSWERING])(answer)
    for path in ("/chat/api/answer", "/"):
        app.post(path, dependencies=[limits.ANSWERING, limits.CHAT])(answer)

    async def feedback(request: Request) -> dict:
        return {"received": len(await request.body())}

    app.post("/api/feedback", status_code=201, dependencies=[limits.FEEDBACK])(feedback)
    marks = [limits.FEEDBACK, limits.CHAT]
    app.post("/chat/api/feedback", status_code=201, dependencies=marks)(feedback)

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok"}

    return app


async def post_all(
    app: FastAPI,
    count: int,
    path: str = "/api/answer",
    base_url: str = "http://localhost",
    **request: object,
) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        return await asyncio.gather(
            *(client.post(path, **request) for _ in range(count))  # type: ignore[arg-type]
        )


def statuses(responses: list[httpx.Response]) -> list[int]:
    return sorted(r.status_code for r in responses)


def test_a_body_over_the_limit_by_its_length_is_refused_with_413() -> None:
    app = make_app(max_body_bytes=2048)
    [response] = asyncio.run(post_all(app, 1, content=b"x" * 2049))
    assert response.status_code == 413, response.text
    assert response.json() == {"detail": "the request body is larger than 2048 bytes"}


def test_a_body_at_the_limit_is_accepted() -> None:
    app = make_app(max_body_bytes=2048)
    [response] = asyncio.run(post_all(app, 1, content=b"x" * 2048))
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 2048}


def test_a_streamed_body_is_cut_off_as_soon_as_it_passes_the_limit() -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for n in range(100):  # 100 KB in all, with no Content-Length
            sent.append(n)
            yield b"x" * 1024

    app = make_app(max_body_bytes=4096)
    [response] = asyncio.run(post_all(app, 1, content=chunks()))
    assert response.status_code == 413, response.text
    assert response.json()["detail"] == "the request body is larger than 4096 bytes"
    assert len(sent) <= 6, "the body was read well past the limit"


def test_an_unreadable_content_length_is_refused() -> None:
    app = make_app()
    [response] = asyncio.run(post_all(app, 1, content=b"{}", headers={"content-length": "-1"}))
    assert response.status_code == 413, response.text


def test_the_queue_refuses_at_once_when_slots_and_queue_are_full() -> None:
    app = make_app(max_concurrency=1, max_queue=1, queue_timeout_seconds=5)
    responses = asyncio.run(post_all(app, 3, content=b"{}"))
    assert statuses(responses) == [200, 200, 503]
    [busy] = [r for r in responses if r.status_code == 503]
    assert busy.json() == {"detail": "the server is busy; try again shortly"}
    assert busy.headers["retry-after"] == "5"


@pytest.mark.parametrize("path", ["/api/answer", "/chat/api/answer", "/"])
def test_every_answering_route_is_queued_and_rate_limited(path: str) -> None:
    queued = make_app(max_concurrency=1, max_queue=0)
    assert statuses(asyncio.run(post_all(queued, 2, path, content=b"{}"))) == [200, 503]
    limited = make_app(rate_limit_per_minute=1)
    assert statuses(asyncio.run(post_all(limited, 2, path, content=b"{}"))) == [200, 429]


def test_a_request_waiting_longer_than_the_queue_timeout_is_refused() -> None:
    app = make_app(max_concurrency=1, max_queue=4, queue_timeout_seconds=0.05)
    responses = asyncio.run(post_all(app, 2, content=b"{}"))
    assert statuses(responses) == [200, 503]
    assert [r.headers["retry-after"] for r in responses if r.status_code == 503] == ["1"]


def test_the_queue_lets_through_as_many_as_it_holds() -> None:
    app = make_app(max_concurrency=2, max_queue=2, queue_timeout_seconds=5)
    assert statuses(asyncio.run(post_all(app, 4, content=b"{}"))) == [200] * 4


def test_other_routes_are_not_queued() -> None:
    async def health_during_answers(app: FastAPI) -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            answering = asyncio.create_task(client.post("/api/answer", content=b"{}"))
            await asyncio.sleep(0.05)
            health = await client.get("/api/health")
            return [health.status_code, (await answering).status_code]

    app = make_app(max_concurrency=1, max_queue=0)
    assert asyncio.run(health_during_answers(app)) == [200, 200]


def test_the_rate_limit_refuses_with_429_and_retry_after() -> None:
    app = make_app(rate_limit_per_minute=3)
    responses = asyncio.run(post_all(app, 5, content=b"{}"))
    assert statuses(responses) == [200, 200, 200, 429, 429]
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["detail"].startswith("more than 3 questions a minute; try again in")
    assert 1 <= int(refused.headers["retry-after"]) <= 20


def test_the_rate_limit_is_off_by_default() -> None:
    app = make_app(max_concurrency=20)
    assert statuses(asyncio.run(post_all(app, 20, content=b"{}"))) == [200] * 20


def test_the_rate_limit_counts_each_client_address_apart() -> None:
    async def from_two_addresses(app: FastAPI) -> list[int]:
        codes = []
        for address in ("10.0.0.1", "10.0.0.2", "10.0.0.1"):
            transport = httpx.ASGITransport(app=app, client=(address, 1234))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://localhost"
            ) as client:
                codes.append((await client.post("/api/answer", content=b"{}")).status_code)
        return codes

    assert asyncio.run(from_two_addresses(make_app(rate_limit_per_minute=1))) == [200, 200, 429]


@pytest.mark.parametrize(
    ("origins", "expected"), [((), None), (("https://careers.example",), "https://careers.example")]
)
def test_cors_headers_only_when_origins_are_configured(
    origins: tuple[str, ...], expected: str | None
) -> None:
    async def preflight_and_get(app: FastAPI) -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            origin = {"origin": "https://careers.example"}
            preflight = await client.options(
                "/api/answer", headers={**origin, "access-control-request-method": "POST"}
            )
            return preflight, await client.get("/api/health", headers=origin)

    preflight, response = asyncio.run(preflight_and_get(make_app(cors_origins=origins)))
    assert response.headers.get("access-control-allow-origin") == expected
    assert preflight.headers.get("access-control-allow-origin") == expected


# A stalled body holds no answering slot.


def test_a_stalled_body_gets_a_408_and_holds_no_answering_slot() -> None:
    async def stalled_then_whole(app: FastAPI) -> list[int]:
        async def stalls() -> AsyncIterator[bytes]:
            yield b'{"qu'
            await asyncio.sleep(3600)

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            stalled = asyncio.create_task(client.post("/api/answer", content=stalls()))
            await asyncio.sleep(0.2)
            whole = await client.post("/api/answer", content=b"{}")
            refused = await asyncio.wait_for(stalled, timeout=30)
            assert refused.json() == {"detail": "the request body did not arrive within 1 s"}
            return [whole.status_code, refused.status_code]

    app = make_app(max_concurrency=1, max_queue=0, body_timeout_seconds=1)
    assert asyncio.run(stalled_then_whole(app)) == [200, 408]


# Feedback is limited like answers, and its stored size per client per day.


@pytest.mark.parametrize("path", ["/api/feedback", "/chat/api/feedback"])
def test_feedback_is_rate_limited_like_answers(path: str) -> None:
    app = make_app(rate_limit_per_minute=5)
    responses = asyncio.run(post_all(app, 8, path, content=b"{}"))
    assert statuses(responses) == [201] * 5 + [429] * 3
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["detail"].startswith("more than 5 feedback posts a minute; try again in")
    assert int(refused.headers["retry-after"]) >= 1


def test_feedback_has_its_own_allowance_beside_questions() -> None:
    async def ask_then_send_feedback(app: FastAPI) -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            asked = await client.post("/api/answer", content=b"{}")
            told = await client.post("/api/feedback", content=b"{}")
            return [asked.status_code, told.status_code]

    assert asyncio.run(ask_then_send_feedback(make_app(rate_limit_per_minute=1))) == [200, 201]


def test_stored_feedback_is_capped_per_client_per_day() -> None:
    app = make_app(feedback_bytes_per_client_per_day=10_000, max_body_bytes=4096)
    comment = b"x" * 3000
    responses = asyncio.run(post_all(app, 5, "/chat/api/feedback", content=comment))
    assert statuses(responses) == [201, 201, 201, 429, 429]
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["detail"] == (
        "more than 10000 bytes of feedback from this address today; try again tomorrow (UTC)"
    )
    assert 1 <= int(refused.headers["retry-after"]) <= 86_400

    async def from_elsewhere() -> int:
        transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return (await client.post("/api/feedback", content=comment)).status_code

    assert asyncio.run(from_elsewhere()) == 201


def test_refused_feedback_does_not_use_up_the_allowance() -> None:
    app = make_app(feedback_bytes_per_client_per_day=2048, max_body_bytes=4096)
    assert statuses(asyncio.run(post_all(app, 1, "/api/feedback", content=b"x" * 3000))) == [429]
    assert statuses(asyncio.run(post_all(app, 2, "/api/feedback", content=b"x" * 1000))) == [
        201,
        201,
    ]


# Hosts


@pytest.mark.parametrize(
    "base_url",
    ["http://localhost", "http://127.0.0.1:8000", "http://LOCALHOST:9000"],
)
def test_the_default_hosts_are_answered(base_url: str) -> None:
    [response] = asyncio.run(post_all(make_app(), 1, base_url=base_url, content=b"{}"))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/api/answer", "/chat/api/answer", "/"])
def test_another_host_is_refused_against_dns_rebinding(path: str) -> None:
    headers = {"origin": "http://rebound.example:8000"}
    [response] = asyncio.run(
        post_all(make_app(), 1, path, "http://rebound.example:8000", content=b"{}", headers=headers)
    )
    assert response.status_code == 400, response.text
    assert response.json() == {
        "detail": "this server does not answer to the host 'rebound.example:8000'"
    }


def test_trusted_hosts_are_configurable() -> None:
    app = make_app(trusted_hosts=("careers.example",))
    [allowed] = asyncio.run(post_all(app, 1, base_url="https://careers.example", content=b"{}"))
    [refused] = asyncio.run(post_all(app, 1, base_url="http://localhost", content=b"{}"))
    assert (allowed.status_code, refused.status_code) == (200, 400)
    [anyone] = asyncio.run(
        post_all(make_app(trusted_hosts=("*",)), 1, base_url="http://x.example", content=b"{}")
    )
    assert anyone.status_code == 200


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trusted_hosts": ()}, r"trusted_hosts must name at least one host"),
        ({"body_timeout_seconds": 0}, r"body_timeout_seconds must be above 0"),
        ({"max_connections_per_client": -1}, r"max_connections_per_client must be 0 \(no cap\)"),
        ({"chat": "open"}, r"chat must be one of public, keys, off \(got 'open'\)"),
        ({"chat_rate_limit_per_minute": 0}, r"chat_rate_limit_per_minute must be at least 1"),
        ({"feedback_bytes_per_client_per_day": -1}, r"feedback_bytes_per_client_per_day"),
    ],
)
def test_the_new_limits_settings_are_checked(changes: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings().with_(**changes)
