"""Web pages: the chat, rendered with Jinja2, working with and without JavaScript."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
