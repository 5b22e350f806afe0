"""The web layer's shape: its modules import each other as a tree, and answering routes queue."""

from __future__ import annotations

import ast
import asyncio
import dis
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FunctionType

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from rag.settings import Settings
from web import limits, service
from web.app import create_app
from web.limits import AnswerQueue, iter_route_contexts

WEB = Path(__file__).resolve().parent.parent / "web"
# Only these start the app; every other module is imported by it, never the other way round.
ENTRY_POINTS = {"web.app", "web.serve"}


def web_imports(path: Path) -> set[str]:
    """The ``web.*`` modules a file imports anywhere in it (inside functions too)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names if a.name.startswith("web.")}
        elif isinstance(node, ast.ImportFrom) and node.module == "web":
            imported |= {f"web.{a.name}" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("web."):
            imported.add(node.module)  # type: ignore[arg-type]
    return imported


def web_graph() -> dict[str, set[str]]:
    return {f"web.{p.stem}": web_imports(p) for p in sorted(WEB.glob("*.py"))}


def test_no_web_module_imports_the_app() -> None:
    importers = {m for m, imports in web_graph().items() if "web.app" in imports}
    assert importers - ENTRY_POINTS == set()


def test_web_modules_import_each_other_without_a_cycle() -> None:
    graph = web_graph()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def reaches(function: Callable, target: Callable, seen: set[Callable] | None = None) -> bool:
    """Whether ``function`` calls ``target``, itself or through the web functions it calls."""
    seen = set() if seen is None else seen
    if function is target:
        return True
    if not isinstance(function, FunctionType) or function in seen:
        return False
    seen.add(function)
    codes = [function.__code__]
    names: set[str] = set()  # the globals it loads (an attribute's name is no call)
    while codes:
        code = codes.pop()
        names |= {i.argval for i in dis.get_instructions(code) if i.opname == "LOAD_GLOBAL"}
        codes += [c for c in code.co_consts if inspect.iscode(c)]
    called = (function.__globals__.get(name) for name in names)
    return any(
        reaches(f, target, seen)
        for f in called
        if f is target or (isinstance(f, FunctionType) and f.__module__.startswith("web."))
    )


@pytest.fixture()
def busy_app(tiny_settings: Settings) -> Iterator[tuple[FastAPI, TestClient]]:
    """The real app with its one answering slot taken and no room to wait."""
    app = create_app(tiny_settings.with_(max_concurrency=1, max_queue=0))
    with TestClient(app) as client:
        client.get("/api/health")  # builds the middleware stack
        layer = app.middleware_stack
        while not isinstance(layer, AnswerQueue):
            layer = layer.app  # type: ignore[union-attr]
        asyncio.run(layer.slots.acquire())
        yield app, client


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every route with a handler of ours, included routers' routes too."""
    return [
        route
        for route in iter_route_contexts(app.routes)
        if isinstance(getattr(route, "original_route", route), APIRoute)
    ]


def answering(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) whose handler answers a question."""
    return sorted(
        (method, route.path)
        for route in api_routes(app)
        if reaches(route.endpoint, service.ask)
        for method in route.methods
    )


def test_every_route_that_answers_a_question_is_queued(
    busy_app: tuple[FastAPI, TestClient],
) -> None:
    app, client = busy_app
    routes = answering(app)
    assert ("POST", "/api/answer") in routes and ("GET", "/") in routes
    for method, path in routes:
        response = client.request(method, path, params={"q": "What do engineers earn?"})
        assert response.status_code == 503, (method, path, response.text)
        if method != "HEAD":
            assert response.json() == {"detail": "the server is busy; try again shortly"}


def test_no_other_route_is_queued(busy_app: tuple[FastAPI, TestClient]) -> None:
    app, client = busy_app
    routes = answering(app)
    others = [
        (method, route.path)
        for route in api_routes(app)
        for method in route.methods
        if (method, route.path) not in routes
    ]
    assert ("GET", "/api/health") in others and ("POST", "/api/feedback") in others
    for method, path in others:
        response = client.request(method, path, headers={"origin": "http://testserver"})
        assert "the server is busy" not in response.text, (method, path)


def test_the_routes_carry_the_limits_they_always_had(tiny_settings: Settings) -> None:
    table = limits.route_marks(create_app(tiny_settings).routes)
    named = {route: sorted(mark.name for mark in marks) for route, marks in table.items()}
    assert named == {
        ("POST", "/api/answer"): ["answering"],
        ("POST", "/api/feedback"): ["feedback"],
        ("GET", "/"): ["answering", "chat"],
        ("POST", "/"): ["answering", "chat"],
        ("POST", "/chat/api/answer"): ["answering", "chat"],
        ("POST", "/chat/api/feedback"): ["chat", "feedback"],
    }


def test_a_marked_route_must_have_a_fixed_path() -> None:
    app = FastAPI()
    app.post("/api/answer/{kind}", dependencies=[limits.ANSWERING])(lambda kind: kind)
    with pytest.raises(
        TypeError, match=r"a marked route needs a fixed path .*/api/answer/\{kind\}"
    ):
        limits.route_marks(app.routes)
