"""The transform task's body as an ordered list of steps around one ``Job``.

Each step is a small module with one contract (``run.py`` says what a step is). In order, outermost
first; a step's work after ``proceed()`` happens in the reverse order:

1. ``scrub``: errors leave with the job's secrets scrubbed;
2. ``interrupt``: a cancelled job ends REVOKED, one a shutdown interrupted goes back to the queue;
3. ``validate``: the message becomes a ``Job``;
4. ``observe``: the job's labels for log lines, and its span when tracing is on;
5. ``retry``: a transient failure goes back to the queue with backoff;
6. ``deadline``: the rest runs under the job's hard time limit;
7. ``pin``: a replayed job's service at its recorded commit;
8. ``signature``: the result record is signed (a detached signature);
9. ``cached``: the opt-in result cache answers, or stores what the rest made;
10. ``result``: the result record is built;
11. ``credentials``: a media output is signed with Content Credentials embedded;
12. ``provenance``: the generation prompt is completed;
13. ``serve``: the provider's model runs, directly or through a route.
"""

from .cached import answer_from_cache
from .credentials import sign_media
from .deadline import hold_deadline
from .interrupt import stop_when_interrupted
from .job import LEGACY_OPTIONS, Execution, Job, named_arguments, split_options
from .observe import observe
from .pin import pin_service
from .provenance import complete_provenance
from .result import build_result
from .retry import retry_transient
from .run import Run, Step, run_steps
from .scrub import job_secrets, scrub_secrets
from .serve import serve
from .signature import sign_record
from .validate import validate

STEPS: tuple[Step, ...] = (
    scrub_secrets,
    stop_when_interrupted,
    validate,
    observe,
    retry_transient,
    hold_deadline,
    pin_service,
    sign_record,
    answer_from_cache,
    build_result,
    sign_media,
    complete_provenance,
    serve,
)
"""The transform task's steps, outermost first."""

__all__ = [
    "LEGACY_OPTIONS",
    "STEPS",
    "Execution",
    "Job",
    "Run",
    "Step",
    "answer_from_cache",
    "build_result",
    "complete_provenance",
    "hold_deadline",
    "job_secrets",
    "named_arguments",
    "observe",
    "pin_service",
    "retry_transient",
    "run_steps",
    "scrub_secrets",
    "serve",
    "sign_media",
    "sign_record",
    "split_options",
    "stop_when_interrupted",
    "validate",
]
