"""Every error a job can end with. Each message names the culprit: the URL, the field, the model id.

The tree::

    MediaConduitError                 permanent: the job fails, nothing is retried
    ├── InvalidInputError             a job's input or options are malformed (also a ValueError)
    │   └── MediaLimitError           media over a cap: output bytes, decoded seconds or pixels (names the setting)
    ├── ProviderSourceError           a provider/service URL that cannot be fetched or is malformed
    │   └── ProviderNotAllowedError   a URL outside MEDIACONDUIT_PROVIDER_ALLOW (raised by producers too)
    ├── ManifestError                 a manifest that is missing, unparsable or has a wrong field
    ├── ProviderLoadError             provider code that cannot be installed or imported
    ├── UnknownModelError             a model id the provider does not offer (also a KeyError)
    ├── ConfigurationError            a provider setting (API key, base URL) that is missing
    ├── ServiceError                  a Docker service that cannot be built, started or made healthy
    ├── PoisonJobError                a job that crashed its worker process on every delivery
    ├── ReplayError                   a record that cannot be run again as it was (no commit, blob gone)
    ├── RouteError                    a routes file or route name that is wrong (names the route and candidate)
    ├── BudgetExceededError           a job whose estimated cost exceeds what its route's or batch's budget has left
    ├── TimeLimitError                a job that ran past its hard time limit (names provider and model)
    ├── ReplicationError              a publish its Redis replicas did not confirm in time (MEDIACONDUIT_WAIT_REPLICAS)
    ├── ProviderExecutionError        the provider's own code raised while transforming
    │   ├── ProviderHTTPError         an API answered 4xx: wrong key, bad request, unknown model
    │   ├── ProviderResponseError     an API answered something it should not have (bad JSON, no fields)
    │   └── StreamBrokenError         a model's stream broke transiently after its first chunk left (never retried)
    └── TransientError                retried: 429/5xx, a restarting service, a broker blip
        ├── RouteUnavailableError     every candidate of a route failed transiently, cooled down or at its limit
        └── BudgetHeldError           an estimate a budget can take only once the jobs in flight settle

What is retried (``worker/reliability.py``'s ``TRANSIENT_EXCEPTIONS``): ``TransientError`` and its
subclasses (``RouteUnavailableError``, ``BudgetHeldError``), and the plumbing's own passing failures
that provider code lets through: ``ConnectionError`` (refused or reset while a service restarts),
``socket.timeout``, kombu's ``OperationalError``, redis's ``ConnectionError`` and ``TimeoutError``,
httpx's ``TransportError``. The task retries them with backoff (``retry_after`` when given, else 1, 2,
4 … 60 s) until its retries are used up. A job whose worker process died is delivered again as well,
until it ends with ``PoisonJobError``.

What fails over (``worker/failover.py``'s ``FAILOVER_EXCEPTIONS``): in a ``route:NAME`` job the same
kinds and ``ServiceError`` (a Docker service that will not start) move the job to the route's next
candidate within the same delivery; a candidate whose estimate a budget refuses (``BudgetExceededError``,
``BudgetHeldError``) is skipped. Any other error ends the job at once. A streamed job whose stream broke
after its first chunk was written is never retried: its reader holds part of one candidate's output, which
neither a retry nor another candidate may silently continue. A transient error there becomes
``StreamBrokenError``; a permanent one ends the job as it is.
"""

from __future__ import annotations


class MediaConduitError(Exception):
    """Base class; permanent unless it is a ``TransientError``."""


class InvalidInputError(MediaConduitError, ValueError):
    """A job input or option that is malformed; the message names the field."""


class MediaLimitError(InvalidInputError):
    """Media over one of the caps (``MEDIACONDUIT_MAX_OUTPUT_BYTES``, ``_MAX_MEDIA_SECONDS``,
    ``_MAX_MEDIA_PIXELS``); the message names the asset, the cap and its setting."""


class ProviderSourceError(MediaConduitError):
    """A provider or service URL that cannot be fetched or is not allowed."""


class ProviderNotAllowedError(ProviderSourceError):
    """A URL that ``MEDIACONDUIT_PROVIDER_ALLOW`` does not admit; a producer raises it before queueing."""


class ManifestError(MediaConduitError):
    """A manifest that is missing, unparsable or has a field of the wrong type."""


class ProviderLoadError(MediaConduitError):
    """Provider code that cannot be installed or imported."""


class UnknownModelError(MediaConduitError, KeyError):
    """A model id the provider does not offer."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigurationError(MediaConduitError):
    """A provider setting (API key, base URL) that is missing or wrong; the message names the variable."""


class ServiceError(MediaConduitError):
    """A Docker service that cannot be built, started or made healthy."""


class PoisonJobError(MediaConduitError):
    """A job that crashed its worker process on every delivery; it is not delivered again."""


class ReplayError(MediaConduitError):
    """A record that cannot be replayed as it was; the message names the step and why."""


class RouteError(MediaConduitError):
    """A routes file that cannot be used, or a job naming a route it does not hold; the message names
    the route, the candidate and the field."""


class BudgetExceededError(MediaConduitError):
    """A job refused before any call: its estimated cost exceeds what its route's or batch's budget has left."""


class TimeLimitError(MediaConduitError):
    """A job that ran past its hard time limit; raised in every pool, the message names provider and model."""


class ReplicationError(MediaConduitError):
    """A job published with ``MEDIACONDUIT_WAIT_REPLICAS`` that too few replicas confirmed in time. It may
    be queued on the primary alone; it is not sent again, since a second copy would run twice."""


class ProviderExecutionError(MediaConduitError):
    """The provider's own code raised while transforming."""


class ProviderHTTPError(ProviderExecutionError):
    """A permanent HTTP failure: wrong key (401), bad request (400), unknown model (404), ..."""

    def __init__(self, message: str, status: int | None = None, api_message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.api_message = api_message


class ProviderResponseError(ProviderExecutionError):
    """A response the API should not have sent: malformed JSON, missing fields, an error in a stream."""


class StreamBrokenError(ProviderExecutionError):
    """A model's stream that broke after its first chunk reached the job's reader: permanent, since a retry
    or another candidate would start a second output after part of the first."""


class TransientError(MediaConduitError):
    """Worth retrying with backoff: a restarting service, HTTP 429/5xx, a broker blip.

    ``status`` is the HTTP status when an API answered one (routes record it per attempt).
    """

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class RouteUnavailableError(TransientError):
    """No candidate of a route could serve this delivery; the job is retried with backoff.

    ``attempts`` are the per-candidate records (the same shape results carry).
    """

    def __init__(self, message: str, retry_after: float | None = None, attempts: list[dict] | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.attempts = attempts or []


class BudgetHeldError(TransientError):
    """The estimate fits what a budget has left once the jobs in flight settle, not before: try again soon."""
