"""Producer API for batches: many inputs through one model (a Celery group), or through a pipeline
of steps (a group of chains), with live progress and per-item results.

Job ids are derived from each item's content and the steps' settings, keyed with the installation's
secret (``worker/signing.py``), so submitting the same batch again resumes it (jobs that already
succeeded are not sent again, jobs still queued or running are waited for, and only the rest is
published), while nobody without the secret can tell a batch's ids from its content and send a job of
their own under one first. Each job's batch header is signed for that job, so a worker charges a batch's
budget only for the jobs its producer sent.

```python
from mediaconduit_worker.batch import Batch
batch = Batch.of(ECHO_URL, "upper")
for text in ["a", "b", "c"]:
    batch.add(text)
run = batch.submit(summary=True)
for item in run.iter_results():         # each job once, as it finishes; failures included
    print(item.key, item.status, item.result or item.error)
```
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions
from celery import Celery, chain, group
from celery.canvas import Signature

from ..errors import InvalidInputError
from ..payload import check_job, check_json
from ..worker.app import app as default_app
from ..worker.app import transform
from ..worker.headers import BATCH_HEADER
from ..worker.limits import get_state
from ..worker.redis_state import state_redis
from ..worker.signing import canonical, keyed_digest, sign_batch_header
from .recovery import LostJobs
from .states import JobState, Outcome, fetch_states, outcome

log = logging.getLogger(__name__)

SENT_PREFIX = "mediaconduit-sent-"
SUMMARY_TASK = "mediaconduit.batch_summary"
#: Seconds a batch waits without progress before it checks the broker for jobs it lost.
LOST_AFTER = 30.0


BatchBudget = tuple[str, float | None]
"""A batch's id and budget (USD, None: tracked, no budget), as its jobs' headers carry them."""


@dataclass(frozen=True)
class Step:
    """One transform of a pipeline: provider URL (or ``route:NAME``, with no model), model id and the options
    every item gets."""

    provider: str
    model: str | None
    options: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> list[Any]:
        return [self.provider, self.model, self.options]


def usd(value: float) -> str:
    """Dollars as people read them: cents from a cent up, six decimals below (API calls cost fractions)."""
    return f"${value:,.2f}" if value >= 0.01 else f"${value:.6f}"


def salted_id(purpose: str, text: str) -> str:
    """A UUID-shaped id of ``text``, keyed with the installation secret: the same in every run of this
    installation, unpredictable elsewhere (a different secret orphans the results of earlier runs)."""
    return str(uuid.UUID(hex=keyed_digest(purpose, text)[:32]))


def job_id(input: Any, steps: Sequence[Step]) -> str:
    """Deterministic task id of the last of ``steps`` applied to ``input``."""
    return salted_id("batch-job-id", canonical({"input": input, "steps": [s.as_json() for s in steps]}))


def refused_id(input: Any, steps: Sequence[Step], error: str) -> str:
    """Deterministic id of an item that cannot be sent (its content may not even be encodable)."""
    try:
        content = json.dumps({"input": input, "steps": [s.as_json() for s in steps]}, sort_keys=True)
    except (RecursionError, TypeError, ValueError):
        content = error
    return salted_id("batch-refused-id", content)


@dataclass
class Job:
    """One item of a batch: its input, its steps and one deterministic task id per step.

    ``error`` says why an item cannot be sent (not JSON, nested too deeply, a lone surrogate, too
    large); such an item is never queued and ends as a FAILURE naming the reason, like any failed job.
    """

    input: Any
    steps: list[Step]
    keys: list[Any] = field(default_factory=list)
    """Caller's labels for this item (line numbers, ids); several when identical items were added."""
    error: str | None = None

    def __post_init__(self) -> None:
        if self.error is None:
            try:
                check_job({"input": self.input, "options": self.steps[0].options}, "the item")
            except InvalidInputError as exc:
                self.error = str(exc)
        if self.error is not None:
            self.ids = [refused_id(self.input, self.steps, self.error)] * len(self.steps)
        else:
            self.ids = [job_id(self.input, self.steps[: k + 1]) for k in range(len(self.steps))]

    @property
    def id(self) -> str:
        """The final step's task id: where this job's result ends up."""
        return self.ids[-1]

    def signature(self, start: int = 0, input: Any = None, batch: BatchBudget | None = None) -> Signature:
        """The job from step ``start`` on (fed ``input``, else the item's own), as a task or a chain; with
        ``batch``, every step's message carries the batch header, signed for that step."""
        first = self.input if input is None else input
        sigs = [
            transform.signature(
                (first, s.provider, s.model, s.options) if k == start else (s.provider, s.model, s.options),
                task_id=self.ids[k], headers=batch_headers(batch, self.ids[k]),
            )
            for k, s in enumerate(self.steps) if k >= start
        ]
        return sigs[0] if len(sigs) == 1 else chain(*sigs)


@dataclass(frozen=True)
class ItemResult:
    """A finished job as reported per item: ``status`` is ``SUCCESS`` or ``FAILURE``, never raised."""

    job: Job
    status: str
    result: dict[str, Any] | None = None
    error: str | None = None
    step: int | None = None

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def key(self) -> Any:
        return self.job.keys[0] if self.job.keys else None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "keys": self.job.keys, "status": self.status}
        if self.status == "SUCCESS":
            out["result"] = self.result
        else:
            out["error"] = self.error
            if len(self.job.steps) > 1:
                out["step"] = self.step
        return out


@dataclass(frozen=True)
class Progress:
    """Counts while a batch runs; ``queued`` includes jobs between two steps of a pipeline."""

    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    queued: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.failed

    spent_usd: float | None = None
    """USD the batch's calls cost so far (kept in Redis by the workers)."""
    budget_usd: float | None = None

    def __str__(self) -> str:
        text = f"done {self.done}  failed {self.failed}  running {self.running}  queued {self.queued}"
        if self.spent_usd is not None:
            text += f"  spent {usd(self.spent_usd)}" + (f" of {usd(self.budget_usd)}" if self.budget_usd is not None else "")
        return text


class Batch:
    """Items through the same steps; ``submit`` publishes them as Celery groups (chains for pipelines).

    ``budget_usd``: the most the batch's calls may cost together. Workers hold each job's estimated cost
    against it before the call and refuse a job that does not fit (``BudgetExceededError``); spend is kept
    in Redis under the batch's id, so a resumed batch goes on with what it already spent.
    """

    def __init__(self, steps: Sequence[Step], app: Celery | None = None, budget_usd: float | None = None) -> None:
        if not steps:
            raise ValueError("a batch needs at least one step")
        check_json([s.as_json() for s in steps])  # every item gets them: a bad step is the whole batch's error
        if budget_usd is not None and budget_usd < 0:
            raise ValueError(f"budget_usd must be >= 0, got {budget_usd}")
        self.steps = list(steps)
        self.app = app or default_app
        self.budget_usd = budget_usd
        self.jobs: dict[str, Job] = {}

    @classmethod
    def of(cls, provider: str, model: str | None, options: dict[str, Any] | None = None, app: Celery | None = None,
           budget_usd: float | None = None) -> Batch:
        """Many inputs through one provider/model (or one ``route:NAME``, with model None)."""
        return cls([Step(provider, model, dict(options or {}))], app, budget_usd)

    def add(self, input: Any, options: dict[str, Any] | None = None, key: Any = None) -> Job:
        """Add an item (``options`` are merged into the first step's); identical items share one job."""
        steps = list(self.steps)
        if options:
            first = steps[0]
            steps[0] = Step(first.provider, first.model, {**first.options, **options})
        job = Job(input, steps)
        job = self.jobs.setdefault(job.id, job)
        if key is not None:
            job.keys.append(key)
        return job

    def add_refused(self, input: Any, error: str, key: Any = None) -> Job:
        """Add an item that cannot be sent (a file that is not media): never queued, it ends as a FAILURE
        naming ``error``, like any failed job."""
        job = Job(input, list(self.steps), error=error)
        job = self.jobs.setdefault(job.id, job)
        if key is not None:
            job.keys.append(key)
        return job

    @property
    def id(self) -> str:
        """Deterministic id of the whole batch (names its summary task)."""
        return salted_id("batch-id", canonical(sorted(self.jobs)))

    def submit(
        self,
        *,
        resume: bool = True,
        retry_failed: bool = False,
        skip: set[str] | frozenset[str] = frozenset(),
        summary: bool = False,
        chunk: int = 500,
        on_sent: Callable[[int], None] | None = None,
    ) -> BatchRun:
        """Publish what still has to run and return a handle to watch it.

        ``skip``: job ids the caller already holds results for (e.g. in a results file).
        ``resume``: ask the backend first; finished jobs and jobs queued or running are not re-sent.
        ``retry_failed``: failed jobs are sent again (from the failed step) instead of reported.
        ``summary``: also send a ``mediaconduit.batch_summary`` callback that returns the counts and
        the failures once every job is final (failed items do not stop it, unlike a Celery chord body).
        """
        jobs = [j for j in self.jobs.values() if j.id not in skip]
        for job in jobs:
            if job.error is not None:  # reported through the backend like any failed job, never sent
                self.app.backend.mark_as_failure(job.id, InvalidInputError(job.error))
        all_ids = [i for j in jobs if j.error is None for i in j.ids]
        known = fetch_states(self.app, all_ids) if resume else {}
        in_flight = _sent_markers(self.app, [j.ids[0] for j in jobs]) if resume else set()
        to_send: list[tuple[Job, int, Any]] = []
        to_forget: list[str] = []
        for job in jobs:
            out = outcome(job.ids, known)
            if job.error is not None or out.status == "done" or out.status == "running":
                continue
            if out.status == "failed":
                if not retry_failed:
                    continue
                start = out.step or 0
                to_forget += job.ids[start:]
            else:
                start = next_step(job, known)
                if start == 0 and job.ids[0] in in_flight:
                    continue  # published by an earlier run and still queued
            to_send.append((job, start, step_input(job, start, known)))
        for task_id in to_forget:
            self.app.backend.forget(task_id)
        sent = publish(self.app, to_send, (self.id, self.budget_usd), chunk, on_sent)
        summary_id = None
        if summary:
            summary_id = f"{self.id}-summary"
            if sent or fetch_states(self.app, [summary_id])[summary_id].state != "SUCCESS":
                self.app.backend.forget(summary_id)
                self.app.signature(SUMMARY_TASK, args=(self.id, [j.ids for j in jobs])).apply_async(task_id=summary_id)
        return BatchRun(self.app, jobs, sent=sent, summary_id=summary_id, batch_id=self.id, budget_usd=self.budget_usd)


_PENDING = JobState("", "PENDING")
_QUEUED = Outcome("queued")


def next_step(job: Job, known: dict[str, JobState]) -> int:
    """The step a job goes on from: the one after its last succeeded step."""
    done = [k for k, i in enumerate(job.ids) if known.get(i, _PENDING).state == "SUCCESS"]
    return done[-1] + 1 if done else 0


def step_input(job: Job, step: int, known: dict[str, JobState]) -> Any:
    """What step ``step`` is fed: the previous step's result (None for the first: the item's own input)."""
    return known[job.ids[step - 1]].result if step else None


def batch_headers(batch: BatchBudget | None, task_id: str) -> dict[str, Any]:
    """The message headers of a batch's job ``task_id``: its batch header, signed for it (none outside a batch)."""
    return {BATCH_HEADER: sign_batch_header(batch[0], batch[1], task_id)} if batch else {}


def publish(app: Celery, to_send: list[tuple[Job, int, Any]], batch: BatchBudget | None, chunk: int = 500,
            on_sent: Callable[[int], None] | None = None) -> int:
    """Publish each ``(job, first step, that step's input or None)`` of ``batch`` (its id and budget);
    how many were sent."""
    sent = 0
    with app.producer_or_acquire() as producer:
        for i in range(0, len(to_send), chunk):
            part = to_send[i : i + chunk]
            _mark_sent(app, [job.ids[start] for job, start, _ in part])
            # One Redis round trip per chunk: kombu buffers each job's LPUSH and task-sent event in a
            # pipeline (a transport without batches publishes one by one, as before).
            with producer.batch(max_size=4 * len(part)):
                group(job.signature(start, prev, batch) for job, start, prev in part).apply_async(producer=producer)
            sent += len(part)
            if on_sent:
                on_sent(sent)
    return sent


class BatchRun:
    """A submitted batch: progress counts and each job's result as it becomes final."""

    def __init__(self, app: Celery, jobs: list[Job], sent: int = 0, summary_id: str | None = None,
                 batch_id: str | None = None, budget_usd: float | None = None) -> None:
        self.app = app
        self.jobs = jobs
        self.sent = sent
        self.summary_id = summary_id
        self.batch_id = batch_id
        self.budget_usd = budget_usd
        self._open = {j.id: j for j in jobs}
        """Jobs not final yet, in the batch's order: a poll asks about these only."""
        self._outcomes: dict[str, Outcome] = {}
        self._finished = {"done": 0, "failed": 0}
        self._unreported: list[Job] = []
        self._known: dict[str, JobState] = {}
        self._spent: float | None = None
        self._lost = LostJobs(app)
        self.resent: list[str] = []
        """Ids of jobs the broker lost and this run sent again (``recovery.py``)."""

    def refresh(self) -> Progress:
        """Ask the backend about every job not final yet; return the counts."""
        open_jobs = list(self._open.values())
        self._known = fetch_states(self.app, [i for j in open_jobs for i in j.ids])
        for job in open_jobs:
            out = self._outcomes[job.id] = outcome(job.ids, self._known)
            if out.final:
                del self._open[job.id]
                self._finished[out.status] += 1
                self._unreported.append(job)
        return self.progress()

    def recover_lost(self) -> list[str] | None:
        """Send again the open jobs whose current step's message the broker lost; their ids (None while
        the second of the two looks this takes is not due yet)."""
        current: dict[str, tuple[Job, int]] = {}
        for job in self._open.values():
            if job.error is None:
                step = next_step(job, self._known)
                current[job.ids[step]] = (job, step)
        lost = self._lost.look(set(current))
        if not lost:
            return lost if lost is None else []
        now = fetch_states(self.app, lost)  # one may have finished since the states above were read
        to_send = []
        for task_id in sorted(lost):
            if not now[task_id].final:
                job, step = current[task_id]
                to_send.append((job, step, step_input(job, step, self._known)))
                log.warning("job %s (step %d) was lost by the broker; sending it again", job.id, step)
        if to_send:
            publish(self.app, to_send, (self.batch_id, self.budget_usd) if self.batch_id else None)
        sent = [job.id for job, _, _ in to_send]
        self.resent += sent
        return sent

    def progress(self) -> Progress:
        counts = {**self._finished, "running": 0, "queued": 0}
        for job_id in self._open:
            counts[self._outcomes.get(job_id, _QUEUED).status] += 1
        return Progress(total=len(self.jobs), **counts, spent_usd=self.spent_usd(), budget_usd=self.budget_usd)

    def spent_usd(self) -> float | None:
        """USD the batch's calls cost so far (None for a run without a batch id); through a Redis outage,
        the last figure read."""
        if not self.batch_id:
            return None
        try:
            self._spent = get_state().spend(f"batch:{self.batch_id}")[0]
        except redis.exceptions.ConnectionError:
            pass
        return self._spent

    def iter_results(
        self,
        poll_interval: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        lost_after: float | None = LOST_AFTER,
    ) -> Iterator[ItemResult]:
        """Yield every job once, when it is final; a failed item is yielded, never raised.

        ``lost_after``: seconds without progress before the broker is checked for jobs it lost, which are
        sent again (None: never).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last, changed = None, time.monotonic()
        while True:
            progress = self.refresh()
            if on_progress:
                on_progress(progress)
            counts = (progress.done, progress.failed, progress.running, progress.queued)
            if counts != last:
                last, changed = counts, time.monotonic()
                self._lost.reset()
            elif lost_after is not None and time.monotonic() - changed >= lost_after:
                if self.recover_lost() is not None:  # the next check only after another quiet ``lost_after``
                    changed = time.monotonic()
            reported, self._unreported = self._unreported, []
            for job in reported:
                yield _item_result(job, self._outcomes[job.id])
            if progress.finished == progress.total:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch not finished after {timeout}s: {progress}")
            time.sleep(poll_interval)

    def results(self, timeout: float | None = None) -> list[ItemResult]:
        return list(self.iter_results(timeout=timeout))

    def summary(self, timeout: float = 60.0) -> dict[str, Any]:
        """The summary callback's result (submit with ``summary=True``)."""
        if not self.summary_id:
            raise RuntimeError("submitted without summary=True")
        return self.app.AsyncResult(self.summary_id).get(timeout=timeout)


def _item_result(job: Job, out: Outcome) -> ItemResult:
    if out.status == "done":
        return ItemResult(job, "SUCCESS", result=out.result)
    return ItemResult(job, "FAILURE", error=out.error, step=out.step)


def _sent_markers(app: Celery, first_ids: list[str]) -> set[str]:
    """First-step ids an earlier run published (marker set just before publishing)."""
    client = state_redis(app.conf.result_backend)
    found: set[str] = set()
    for i in range(0, len(first_ids), 1000):
        part = first_ids[i : i + 1000]
        values = client.mget([SENT_PREFIX + t for t in part])
        found.update(t for t, v in zip(part, values) if v is not None)
    return found


def _mark_sent(app: Celery, first_ids: list[str]) -> None:
    """Remember that these jobs were published, so a re-run waits for them instead of sending twice."""
    expires = app.conf.result_expires
    ttl = int(expires.total_seconds()) if hasattr(expires, "total_seconds") else int(expires or 86400)
    with state_redis(app.conf.result_backend).pipeline(transaction=False) as pipe:
        for t in first_ids:
            pipe.set(SENT_PREFIX + t, "1", ex=ttl)
        pipe.execute()
