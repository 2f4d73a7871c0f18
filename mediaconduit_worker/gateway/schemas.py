"""The request and response bodies of the jobs API, as the OpenAPI document shows them.

Request bodies forbid unknown fields: a field the API does not know is refused naming it, so nothing
a tenant sends travels anywhere unnoticed (least of all into Celery's options).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

WebhookEvent = Literal["start", "output", "logs", "completed"]
Status = Literal["queued", "running", "succeeded", "failed", "canceled", "expired"]


class StepIn(BaseModel):
    """One transform: a provider URL (or a route by name), its model and the model's options."""

    model_config = ConfigDict(extra="forbid")
    provider: str | None = Field(None, description="Provider URL, admitted by MEDIACONDUIT_PROVIDER_ALLOW.")
    route: str | None = Field(None, description="A route of the operator's routes file, instead of a provider.")
    model: str | None = Field(None, description="Model id (a route chooses its own).")
    options: dict[str, Any] = Field(default_factory=dict, description="The model's options.")


class JobIn(StepIn):
    """A job: its input and first step, then ``steps`` fed each previous step's result (a chain)."""

    input: Any = Field(..., description="Text, an asset object (`{\"type\": \"image\", \"uri\": \"blob://sha256/…\"}`) or a list.")
    steps: list[StepIn] = Field(default_factory=list, description="Further steps, each fed the previous result.")
    webhook: str | None = Field(None, description="URL called with the job's events (MEDIACONDUIT_WEBHOOK_ALLOW).")
    webhook_events_filter: list[WebhookEvent] | None = Field(None, description="Events sent to the webhook (default: all).")
    cancel_after: float | None = Field(None, gt=0, description="Seconds after creation at which the job is canceled, "
                                                                "queued or running.")


class StepOut(BaseModel):
    task_id: str
    status: Status
    retries: int
    worker: str | None
    completed_at: str | None
    attempts: list[dict[str, Any]] | None


class JobUrls(BaseModel):
    get: str
    cancel: str
    events: str


class ErrorOut(BaseModel):
    type: str | None
    message: str


class JobOut(BaseModel):
    """A job as the API shows it; ``result`` is the last step's TransformResult (docs/record.md)."""

    id: str
    status: Status
    provider: str
    model: str | None
    created_at: str
    completed_at: str | None
    queue_position: int | None = Field(None, description="Queued jobs only: 1 is the next to run (0: taken by a "
                                                         "worker, about to start).")
    result: dict[str, Any] | None
    error: ErrorOut | None
    cost_usd: float | None
    attempts: int = Field(..., description="Deliveries of all steps, retries included.")
    steps: list[StepOut]
    urls: JobUrls
    warnings: list[str] = Field(default_factory=list)


class JobList(BaseModel):
    jobs: list[JobOut]
    next: str | None = Field(None, description="URL of the next page, None on the last.")
