"""The message headers a transform job may carry beside its arguments, set by trusted producers only
(the HTTP API, when it comes, strips any a request did not get from it)."""

EXEC_HEADER = "mediaconduit_exec"
"""A job's execution options (a JSON object): ``capability``, ``cache``, ``service_commit``."""
BATCH_HEADER = "mediaconduit_batch"
"""A batch's job: ``{"id": batch id, "budget_usd": float or None, "sig": HMAC}``, signed for the job by the
batch's producer and checked by the worker before anything is charged (``signing.py``)."""
SENT_HEADER = "mediaconduit_sent"
"""When the job was sent (unix seconds, the producer's clock), set at every send: its queue wait is
measured from it (or from its ETA, when later)."""
EVENTS_HEADER = "mediaconduit_events"
"""True on a job whose event stream has a reader (every step the HTTP gateway sends; any producer may set
it): the worker writes the status events of its stored states only for such jobs, since writing them costs
every job a Redis round trip per state (``events.py``)."""
TENANT_HEADER = "mediaconduit_tenant"
"""The HTTP gateway's tenant of a job, for its log lines, metrics and traces (set by the gateway only)."""
