"""Worker-side half of batches: the summary callback that runs once every job of a batch is final."""

from __future__ import annotations

from typing import Any

from celery import Task

from ..worker.app import app
from ..worker.limits import get_state
from .api import SUMMARY_TASK
from .states import fetch_states, outcome


@app.task(name=SUMMARY_TASK, bind=True, max_retries=None, acks_late=True)
def batch_summary(self: Task, batch_id: str, jobs: list[list[str]]) -> dict[str, Any]:
    """Counts and per-item errors of a batch; re-checks later (like Celery's ``chord_unlock``) until all
    jobs are final. A Celery chord body would be skipped when any item fails; this one never is."""
    known = fetch_states(app, [i for ids in jobs for i in ids])
    outcomes = {ids[-1]: outcome(ids, known) for ids in jobs}
    pending = sum(not o.final for o in outcomes.values())
    if pending:
        raise self.retry(countdown=min(2 + len(jobs) / 1000, 30))
    failures = {jid: o.error for jid, o in outcomes.items() if o.status == "failed"}
    return {
        "batch": batch_id,
        "total": len(outcomes),
        "succeeded": len(outcomes) - len(failures),
        "failed": len(failures),
        "failures": failures,
        "spent_usd": get_state().spend(f"batch:{batch_id}")[0],
    }
