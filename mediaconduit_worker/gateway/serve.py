"""The app uvicorn serves for ``mediaconduit gateway``: ``create_app`` with this process's settings."""

from __future__ import annotations

from fastapi import FastAPI

from ..settings import get_settings
from .app import create_app


def app() -> FastAPI:
    """uvicorn's factory (``--factory``): each gateway process makes its own app."""
    return create_app(get_settings())
