"""Errors as RFC 9457 problem details (``application/problem+json``), each naming its field and value.

Every error the API returns goes through here, so a client parses one shape: ``type``, ``title``,
``status``, ``detail``, and, when one field is at fault, ``field`` (a JSON pointer into the request, or a
header or path parameter by name) and ``value`` (what was sent, redacted: a secret is never echoed).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import MediaConduitError
from ..redaction import is_secret_key, redact, redact_text

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://mediaconduit.dev/problems/"
#: Longest ``value`` echoed back: a problem names what was sent, it does not return a huge body.
VALUE_MAX = 200


class Problem(Exception):
    """An error answered as problem+json. ``kind`` is the last part of its ``type`` URI."""

    def __init__(self, status: int, kind: str, title: str, detail: str, *, field: str | None = None,
                 value: Any = None, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail
        self.field, self.value, self.headers, self.extra = field, value, headers or {}, extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": TYPE_BASE + self.kind, "title": self.title, "status": self.status,
                               "detail": redact_text(self.detail)}
        if instance:
            out["instance"] = instance
        if self.field is not None:
            out["field"] = self.field
            out["value"] = shown_value(self.field, self.value)
        out.update(self.extra)
        return out


def shown_value(field: str, value: Any) -> Any:
    """What a problem echoes of a sent value: redacted, a secret-named field's value hidden, long ones cut."""
    if is_secret_key(field.rsplit("/", 1)[-1]):
        return "[redacted]"
    value = redact(value)
    if isinstance(value, str) and len(value) > VALUE_MAX:
        return value[:VALUE_MAX] + "…"
    if not isinstance(value, str | int | float | bool | type(None)):
        text = repr(value)
        return text[:VALUE_MAX] + "…" if len(text) > VALUE_MAX else value
    return value


def not_found(what: str, value: str, field: str = "id") -> Problem:
    """A job or file this tenant does not have; another tenant's answers the same (never 403)."""
    return Problem(404, "not-found", "Not found", f"no {what} {value!r} for this key", field=field, value=value)


def invalid(field: str, value: Any, detail: str, status: int = 422) -> Problem:
    return Problem(status, "invalid", "Invalid request", detail, field=field, value=value)


def from_error(exc: MediaConduitError, field: str | None = None, value: Any = None) -> Problem:
    """A check of the producer's own (a bad provider, model, option, input) as a 422 naming the culprit."""
    return Problem(422, "job-refused", f"Job refused: {type(exc).__name__}", str(exc), field=field, value=value)


def response(problem: Problem, instance: str | None = None) -> JSONResponse:
    return JSONResponse(problem.body(instance), status_code=problem.status, media_type=MEDIA_TYPE,
                        headers=problem.headers)


def _pointer(loc: tuple[Any, ...] | list[Any]) -> str:
    """FastAPI's error location as the field a client knows: ``/input`` for the body, the name otherwise."""
    where, *path = loc or ("body",)
    if where == "body":
        return "/" + "/".join(str(p) for p in path)
    return "/".join(str(p) for p in path) or str(where)


def install(app: FastAPI) -> None:
    """Every error of ``app`` as problem+json: ours, request validation's and Starlette's own (404, 405)."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request", "input": None}
        field = _pointer(tuple(first.get("loc") or ()))
        detail = f"{field}: {first.get('msg', 'invalid')}"
        problem = Problem(422, "invalid", "Invalid request", detail, field=field, value=first.get("input"),
                          errors=len(exc.errors()))
        return response(problem, request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        """A bug or an outage (Redis away): 500 naming only the kind of failure; the log has the rest."""
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        problem = Problem(500, "internal", "Internal error", f"the gateway failed on this request ({type(exc).__name__}); "
                          "its log says more")
        return response(problem, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed"}
        problem = Problem(exc.status_code, "http", titles.get(exc.status_code, "HTTP error"), str(exc.detail),
                          headers=dict(exc.headers or {}))
        return response(problem, request.url.path)
