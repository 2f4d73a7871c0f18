"""The job pages: server-rendered HTML for a tenant's browser (``render.py`` builds it; no JavaScript build).

- ``GET /jobs``: the tenant's jobs, newest first, paged and filtered by status as ``GET /v1/jobs`` is;
- ``GET /jobs/{id}``: one job, its status followed live (``/jobs/{id}/events``, the API's event stream
  under the session), its result previewed (text, ``<img>``, ``<audio>``, ``<video>`` from ``/files/{sha256}``),
  its steps with their failover attempts, and its generation-prompt chain as a tree;
- ``GET /login``, ``POST /login`` (the key, sent in the form's body, never in a URL), ``POST /logout``.

A browser session (``sessions.py``) stands in for the bearer key; another tenant's job or file is the same
404 as one that never existed. Sign-in counts bad keys with the API's brake (``auth.py``), and a sign-in or
sign-out posted from another origin is refused (no login CSRF). Every page carries a CSP that runs only its
own nonce's script and style, is never framed, and is not cached. A file is served with ``nosniff`` and a
sandboxing CSP, and as an attachment unless it is an image, audio or video a page previews.
"""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from . import events, files, render, sessions
from .auth import TENANT_KEY, count_failure, refuse_if_guessing
from .context import gateway_of
from .jobs import PAGE_MAX, listing, own_job, view
from .problems import Problem
from .tenants import Tenant

router = APIRouter(include_in_schema=False)
NEXT_PATH = re.compile(r"/jobs(?:/[A-Za-z0-9_.-]{1,64})?")
"""Where a sign-in may send the browser next: the job list or a job page, never another site."""
INLINE = re.compile(r"(?:image/(?!svg)[\w.+-]+|audio/[\w.+-]+|video/[\w.+-]+)")
"""Content types a file is served inline as (previews); SVG and everything else go as attachments."""


def _csp(nonce: str) -> str:
    return (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self'; "
            "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _page(build: Any, code: int = 200, headers: dict[str, str] | None = None, **kwargs: Any) -> HTMLResponse:
    """``build(nonce, **kwargs)`` as a page with a fresh CSP nonce and the pages' headers."""
    nonce = secrets.token_urlsafe(16)
    return HTMLResponse(build(nonce, **kwargs), status_code=code, headers={
        "Content-Security-Policy": _csp(nonce), "Cache-Control": "no-store", "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", **(headers or {})})


def _problem_page(problem: Problem, tenant: str | None) -> HTMLResponse:
    retry = {k: v for k, v in problem.headers.items() if k.lower() == "retry-after"}
    return _page(render.error_page, problem.status, retry, tenant=tenant, status=problem.status, title=problem.title,
                 detail=problem.detail)


def session_tenant(request: Request) -> Tenant | None:
    """The tenant of the request's session cookie, or None (a FastAPI dependency)."""
    gw = gateway_of(request)
    found = sessions.tenant_of(gw.redis, gw.keys, request.cookies.get(sessions.COOKIE))
    if found is not None:
        setattr(request.state, TENANT_KEY, found.name)
    return found


def _sign_in_first(request: Request) -> RedirectResponse:
    path = request.url.path
    return RedirectResponse("/login?" + urlencode({"next": path if NEXT_PATH.fullmatch(path) else "/jobs"}), 303)


def _same_origin(request: Request) -> bool:
    """Whether a form was posted from this gateway's own pages: a browser's ``Sec-Fetch-Site`` says so, or
    (a browser that sends none over plain HTTP) its ``Origin`` is this gateway's. A client that sends neither
    is no browser, so no other site's page made it post."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


@router.get("/login")
def login_form(request: Request, next: str = Query("/jobs"), who: Tenant | None = Depends(session_tenant)) -> Response:
    target = next if NEXT_PATH.fullmatch(next) else "/jobs"
    if who is not None:
        return RedirectResponse(target, 303)
    return _page(render.login_page, next_path=target)


@router.post("/login")
def login(request: Request, key: str = Form(""), next: str = Form("/jobs")) -> Response:
    gw = gateway_of(request)
    target = next if NEXT_PATH.fullmatch(next) else "/jobs"
    if not _same_origin(request):
        return _page(render.error_page, 403, tenant=None, status=403, title="Forbidden",
                     detail="a sign-in must come from this gateway's own sign-in page")
    try:
        refuse_if_guessing(gw, request)
    except Problem as exc:
        return _problem_page(exc, None)
    found = gw.keys.lookup(key.strip())
    if found is None:
        count_failure(gw, request)
        return _page(render.login_page, 401, next_path=target, error="That key is unknown or revoked.")
    token = sessions.start(gw.redis, key.strip(), found)
    reply = RedirectResponse(target, 303)
    reply.set_cookie(sessions.COOKIE, token, max_age=sessions.SESSION_TTL, path="/", httponly=True, samesite="strict",
                     secure=request.url.scheme == "https")
    return reply


@router.post("/logout")
def logout(request: Request) -> Response:
    if not _same_origin(request):
        return _page(render.error_page, 403, tenant=None, status=403, title="Forbidden",
                     detail="a sign-out must come from this gateway's own pages")
    sessions.end(gateway_of(request).redis, request.cookies.get(sessions.COOKIE))
    reply = RedirectResponse("/login", 303)
    reply.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="strict")
    return reply


@router.get("/jobs")
def jobs_page(request: Request, who: Tenant | None = Depends(session_tenant),
              status: list[str] | None = Query(None), limit: int = Query(20, ge=1, le=PAGE_MAX),
              cursor: str | None = Query(None)) -> Response:
    if who is None:
        return _sign_in_first(request)
    try:
        found, following = listing(gateway_of(request), who, request, status, limit, cursor)
    except Problem as exc:
        return _problem_page(exc, who.name)
    return _page(render.list_page, tenant=who.name, jobs=found, status=status, next_cursor=following, limit=limit)


@router.get("/jobs/{job_id}")
def job_page(job_id: str, request: Request, who: Tenant | None = Depends(session_tenant)) -> Response:
    if who is None:
        return _sign_in_first(request)
    gw = gateway_of(request)
    try:
        record = own_job(gw, who, job_id)
    except Problem as exc:
        return _problem_page(exc, who.name)
    job = view(gw, record, request)
    return _page(render.job_page, tenant=who.name, job=job, events_url=render.job_href(job_id) + "/events")


def _tenant_or_401(who: Tenant | None = Depends(session_tenant)) -> Tenant:
    if who is None:
        raise Problem(401, "unauthorized", "Unauthorized", "sign in at /login first", field="Cookie", value=None)
    return who


@router.get("/jobs/{job_id}/events")
async def job_page_events(job_id: str, request: Request, who: Tenant = Depends(_tenant_or_401),
                          last_event_id: str | None = Header(None, alias="Last-Event-ID")) -> Response:
    return await events.follow(request, who, job_id, last_event_id)


@router.get("/files/{sha256}")
def file_preview(sha256: str, request: Request, who: Tenant = Depends(_tenant_or_401)) -> Response:
    reply = files.served(gateway_of(request), who, sha256)
    reply.headers["X-Content-Type-Options"] = "nosniff"
    reply.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    reply.headers["Cache-Control"] = "private"
    if not INLINE.fullmatch((reply.media_type or "").split(";")[0].strip()):
        reply.headers["Content-Disposition"] = f'attachment; filename="{sha256}"'
    return reply
