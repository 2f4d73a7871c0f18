"""``POST /v1/files`` and ``GET /v1/files/{sha256}``: media in and out of the blob store, per tenant.

An upload is streamed into the store as it arrives (hashed while written, never whole in memory), as
the raw request body with its ``Content-Type``, or as the first file part of a ``multipart/form-data``
body; ``MEDIACONDUIT_GATEWAY_MAX_UPLOAD_BYTES`` caps it. A file is served (``Range`` too) only to a tenant
that uploaded it or whose job produced it: any other tenant, and any digest not stored, gets 404.

Redis keys (``docs/http.md``), kept as long as results:
- ``mediaconduit:gateway:file:<sha256>``: hash ``{uri, content_type, size}`` (its ``blob://`` URI keeps the
  blob from garbage collection, ``worker/blobgc.py``);
- ``mediaconduit:gateway:file:<sha256>:tenants``: set of the tenants it is served to.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ..blobs import BlobStore
from ..errors import MediaLimitError
from .auth import tenant
from .context import Gateway, gateway_of
from .problems import Problem, not_found
from .records import JobRecord, jobs_index
from .tenants import PREFIX, Tenant

router = APIRouter(tags=["files"])
SCAN_JOBS = 1000
"""A file not granted yet is looked for in the results of the tenant's latest jobs, at most this many."""


class FileOut(BaseModel):
    uri: str
    sha256: str
    size: int
    content_type: str
    url: str


def file_key(sha256: str) -> str:
    return f"{PREFIX}:file:{sha256}"


def grant(gw: Gateway, tenant_name: str, sha256: str, content_type: str | None = None, size: int | None = None) -> None:
    """Serve ``sha256`` to ``tenant_name`` from now on (an upload, or an output of one of its jobs)."""
    ttl = gw.settings.result_expires
    fields: dict[str, Any] = {"uri": f"blob://sha256/{sha256}"}
    if content_type:
        fields["content_type"] = content_type
    if size is not None:
        fields["size"] = str(size)
    with gw.redis.pipeline() as pipe:
        pipe.hset(file_key(sha256), mapping=fields)
        pipe.expire(file_key(sha256), ttl)
        pipe.sadd(file_key(sha256) + ":tenants", tenant_name)
        pipe.expire(file_key(sha256) + ":tenants", ttl)
        pipe.execute()


def grant_outputs(gw: Gateway, tenant_name: str, result: Any) -> None:
    """Every blob a job's result names (its asset, and assets inside lists), served to the job's tenant."""
    for asset in _assets(result):
        digest = asset.get("sha256") or str(asset.get("uri", "")).removeprefix("blob://sha256/")
        if isinstance(digest, str) and len(digest) == 64:
            grant(gw, tenant_name, digest, asset.get("mime_type"), asset.get("size"))


def _assets(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        found = [value] if str(value.get("uri", "")).startswith("blob://sha256/") else []
        for key in ("asset", "assets", "items"):
            if key in value:
                found += _assets(value[key])
        return found
    if isinstance(value, list):
        return [a for v in value for a in _assets(v)]
    return []


def owns_blob(gw: Gateway, tenant: Tenant, sha256: str) -> bool:
    """Whether ``tenant`` may read (and send jobs) the blob ``sha256``; looks through its latest jobs' results
    once before saying no, so a result learnt from a webhook is servable before the job was read."""
    if gw.redis.sismember(file_key(sha256) + ":tenants", tenant.name):
        return True
    from ..worker.app import app

    for job_id in gw.redis.zrevrange(jobs_index(tenant.name), 0, SCAN_JOBS - 1):
        record = JobRecord.load(gw.redis, job_id)
        if record is None:
            continue
        meta = app.backend.get_task_meta(record.steps[-1])
        if meta.get("status") == "SUCCESS" and sha256 in json.dumps(meta.get("result")):
            grant_outputs(gw, tenant.name, meta.get("result"))
            return bool(gw.redis.sismember(file_key(sha256) + ":tenants", tenant.name))
    return False


async def _chunks(request: Request) -> Any:
    """The upload's bytes: the raw body, or the first file part of a multipart body (spooled by the form
    parser, within the body cap the middleware holds), and its content type."""
    kind = request.headers.get("content-type", "application/octet-stream")
    if kind.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=10)
        part = next((v for v in form.values() if not isinstance(v, str)), None)
        if part is None:
            raise Problem(422, "invalid", "Invalid request", "the multipart body holds no file part", field="body",
                          value=None)

        async def parts() -> Any:
            while chunk := await part.read(1 << 20):
                yield chunk

        return parts(), part.content_type or "application/octet-stream"
    return request.stream(), kind


@router.post("/v1/files", operation_id="uploadFile", status_code=201, response_model=FileOut, summary="Upload a file into the blob store")
async def upload(request: Request, who: Tenant = Depends(tenant)) -> FileOut:
    gw = gateway_of(request)
    cap = gw.settings.gateway_max_upload_bytes
    chunks, content_type = await _chunks(request)
    store = BlobStore(gw.settings.blobs)
    writer = await run_in_threadpool(store.writer, cap, "the upload")
    try:
        async for chunk in chunks:
            if chunk:
                await run_in_threadpool(writer.write, chunk)
    except MediaLimitError:
        raise Problem(413, "too-large", "Upload too large", f"the upload is over {cap:,} bytes "
                      "(MEDIACONDUIT_GATEWAY_MAX_UPLOAD_BYTES); nothing was kept", field="body", value=None) from None
    except BaseException as exc:
        writer.__exit__(type(exc), exc, None)
        raise
    await run_in_threadpool(writer.__exit__, None, None, None)
    await run_in_threadpool(grant, gw, who.name, writer.sha256, content_type, writer.size)
    return FileOut(uri=writer.uri, sha256=writer.sha256, size=writer.size, content_type=content_type,
                   url=f"{request.base_url}v1/files/{writer.sha256}")


@router.get("/v1/files/{sha256}", operation_id="downloadFile", summary="Download a file (Range supported)",
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "Partial content"}})
def download(sha256: str, request: Request, who: Tenant = Depends(tenant)) -> FileResponse:
    return served(gateway_of(request), who, sha256)


def served(gw: Gateway, who: Tenant, sha256: str) -> FileResponse:
    """The blob ``sha256`` with its content type, if ``who`` may read it (else 404): the API's download and
    the job page's previews (``pages.py``)."""
    store = BlobStore(gw.settings.blobs)
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256) or not owns_blob(gw, who, sha256):
        raise not_found("file", sha256, "sha256")
    if not store.claim(sha256):
        raise not_found("file", sha256, "sha256")
    content_type = gw.redis.hget(file_key(sha256), "content_type") or "application/octet-stream"
    return FileResponse(store.path_for(sha256), media_type=content_type)
