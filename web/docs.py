"""Web docs: the interactive API reference at ``/docs``, from files installed with the package.

Swagger UI's script and style come from the PyPI package ``fastapi-offline``
and are served here under ``/docs/assets``; nothing is fetched from a CDN.
The page starts Swagger UI with ``static/docs.js``, not an inline script, so
it keeps to the site's Content-Security-Policy.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from web.pages import templates

SWAGGER_UI = Path(str(files("fastapi_offline") / "static"))

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
def reference(request: Request) -> HTMLResponse:
    """Swagger UI over this app's ``/openapi.json``."""
    context = {"title": request.app.title, "openapi_url": request.app.openapi_url}
    return templates.TemplateResponse(request, "docs.html", context)


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets (the app is made with ``docs_url=None``)."""
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI), name="docs-assets")
    app.include_router(router)
