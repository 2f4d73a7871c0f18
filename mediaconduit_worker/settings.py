"""Configuration from the environment (``MEDIACONDUIT_*``), read once per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the worker system; each field is ``MEDIACONDUIT_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MEDIACONDUIT_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".mediaconduit")
    broker_url: str | None = None
    """Any kombu URL; unset means the embedded Redis under ``home``."""
    result_backend: str | None = None
    """Defaults to the broker URL."""
    sentinel_master: str = "mymaster"
    """The master Redis Sentinel names, for ``sentinel://h1:26379;sentinel://h2:26379`` URLs."""
    wait_replicas: int = 0
    """Replicas that must hold a publish, an acknowledgement and a result write before it returns (Redis
    ``WAIT``, ``worker/replicas.py``): none is lost when a replica takes over. 0: Redis' asynchronous
    replication."""
    embedded_port: int = 6390
    """Loopback port of the embedded Redis."""
    visibility_timeout: int = 3600
    """Seconds before a job held by a worker of kombu's own transport is redelivered (``broker/README.md``)."""
    worker_lease: float = 15.0
    """Seconds a worker that stopped renewing its lease is taken for dead: its jobs then run elsewhere."""
    broker_transport: Literal["mediaconduit", "kombu"] = "mediaconduit"
    """``kombu``: kombu's own Redis transport instead of MediaConduit's (the benchmarks' yardstick)."""
    task_time_limit: int = 1800
    """Hard per-job time limit in seconds; held in every pool (``worker/deadlines.py``)."""
    max_stuck_threads: int = 16
    """A thread-pool worker recycles itself when this many calls are stuck past their deadline (0: never)."""
    cache_ttl: int = 24 * 3600
    """Seconds a cached result is kept (``options.cache`` or ``cache: true`` on a manifest model)."""
    result_expires: int = 7 * 24 * 3600
    """Seconds results are kept; a cancel's record is kept as long."""
    events_maxlen: int = 10_000
    """About how many entries a job's event stream keeps (the oldest go first); 0 turns event streams off."""
    events_ttl: int = 24 * 3600
    """Seconds a job's event stream is kept after its last event."""
    shutdown_grace: float = 25.0
    """Seconds a worker told to stop (SIGTERM) lets its running jobs finish before it hands the rest back
    to the queue; under Kubernetes' default 30 s ``terminationGracePeriodSeconds`` with time to exit."""
    provider_allow: str | None = None
    """Comma-separated URL prefixes a worker may load providers from; unset allows all."""
    max_job_bytes: int = 8 * 1024 * 1024
    """Largest job (its JSON arguments) a producer sends or a worker runs; a job from a submitter must
    not fill Redis or a worker's memory."""
    max_inline_bytes: int = 4 * 1024 * 1024
    """Largest inline input asset (base64 ``data`` or a ``data:`` URL), decoded."""
    max_output_bytes: int = 1024 * 1024 * 1024
    """Largest asset a job writes into the blob store: a provider's streamed response stops at it and an
    in-memory output over it is refused, with nothing partial kept (a 20 KB FLAC of an hour of silence
    converts to 691 MB of WAV)."""
    max_media_seconds: float = 1800.0
    """Longest input media (decoded duration) a job may hand a media engine; read from the file's header
    before anything is decoded, and bounded again by the engine where it cannot be read."""
    max_media_pixels: int = 50_000_000
    """Most pixels (width x height of one frame) of an input image or video; read from the header before
    decoding (a 0.75 MB PNG of 16000 x 16000 pixels took 1.67 GiB to decode)."""
    service_memory: str = "2g"
    """Memory limit of a service container whose manifest sets none (Docker's units: 512m, 2g)."""
    service_cpus: float = 1.0
    """CPU limit of a service container whose manifest sets none (cores, may be fractional)."""
    service_pids: int = 256
    """Most processes and threads in a service container whose manifest sets none."""
    blob_gc_grace: int = 24 * 3600
    """Seconds a blob is kept after it was last written or read, whether or not anything refers to it;
    after that only a reference in Redis (a result, a cached result, a queued job) keeps it."""
    blob_gc_interval: int = 3600
    """Seconds between blob garbage collections on workers (one worker of the fleet per interval); 0: never."""
    input_url_allow: str | None = None
    """Comma-separated URL prefixes a job's input asset may be fetched from; unset allows none. Never
    loopback, private, link-local or metadata addresses, whatever the prefix."""
    input_url_max_bytes: int = 100 * 1024 * 1024
    """Largest input asset fetched from an allowed URL."""
    input_url_timeout: float = 60.0
    """Seconds one input URL download may take in all (connect, redirects, body)."""
    provider_refresh: int = 0
    """Seconds after which a branch/tag pin is fetched again; 0 keeps pins until `providers update`."""
    source_fetch_interval: int = 60
    """Seconds within which a repository is fetched at most once for refs it lacks (random commits), and
    at most once to refresh branch pins; `providers update` always fetches."""
    blob_dir: Path | None = None
    """Content-addressed blob store; defaults to ``home/blobs``. Share it to span machines."""
    service_idle_timeout: int = 1800
    """Seconds after its last use before a worker stops a service container."""
    base_image: str = "mediaconduit/base:bookworm"
    """``BASE_IMAGE`` build argument for service Dockerfiles."""
    docker_network: str | None = None
    """When set, workers reach services by container name on this Docker network."""
    routes: Path | None = None
    """The routes file (``route:NAME`` jobs) producers and workers read; defaults to ``home/routes.yml``."""
    installation_secret: SecretStr | None = None
    """Keys this installation's HMACs (cache keys, batch headers, batch ids); the same on every producer and
    worker. Unset: a random one created once in ``home/installation-secret``."""
    gateway_max_body_bytes: int = 16 * 1024 * 1024
    """Largest request body the HTTP gateway reads, uploads apart (a job's JSON is capped again at
    ``max_job_bytes``)."""
    gateway_max_upload_bytes: int = 512 * 1024 * 1024
    """Largest file ``POST /v1/files`` stores; the upload stops at it and nothing of it is kept."""
    gateway_auth_failures: int = 10
    """Bad API keys one client address may send per minute before the gateway answers 429 to it."""
    gateway_events_keepalive: float = Field(default=10.0, gt=0)
    """Seconds an idle event stream (``GET /v1/jobs/{id}/events``) waits for an event before it sends a
    keep-alive comment (proxies drop connections silent for long; the API promises one every 15 s at most)."""
    gateway_events_max_streams: int = Field(default=4096, ge=1)
    """Most event streams one gateway process serves at once: each holds a connection to the state Redis
    while it waits (and two file descriptors); past it, 503 with ``Retry-After``."""
    webhook_allow: str | None = None
    """Comma-separated URL prefixes a job's ``webhook`` may be under; unset allows none. Never loopback,
    private, link-local or metadata addresses (also as a name resolves at send time) unless a prefix names
    that address itself (``http://127.0.0.1:9000/``)."""
    gateway_webhooks: bool = True
    """Whether each gateway process runs a webhook dispatcher; ``false`` where dispatchers run apart
    (``mediaconduit webhooks``)."""
    webhook_timeout: float = 10.0
    """Seconds one webhook delivery attempt may take (connect, send, answer)."""
    webhook_retry_base: float = 5.0
    """Seconds before a failed delivery's first retry; each further one waits twice as long (with jitter),
    at most 15 minutes."""
    webhook_retry_horizon: int = 24 * 3600
    """Seconds a ``start``, ``output`` or ``logs`` event is retried before it is recorded as failed;
    ``completed`` is retried as long as results are kept (``result_expires``)."""
    log_format: Literal["text", "json"] = "text"
    """``json``: a worker's log lines as JSON objects, with the running job's task id, provider, model, route,
    tenant and trace id (``worker/logformat.py``)."""
    c2pa_cert: Path | None = None
    """PEM certificate chain (signer first) that signs outputs' Content Credentials; with ``c2pa_key``. Unset:
    the development pair ``mediaconduit credentials init`` made under ``home/credentials``, if any."""
    c2pa_key: Path | None = None
    """PEM private key (ES256 on P-256, or Ed25519) of ``c2pa_cert``; never shown."""
    c2pa_tsa_url: str | None = None
    """An RFC 3161 time-stamp authority the signatures are time-stamped by (none when unset)."""
    c2pa_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    """Largest media output signed with Content Credentials; larger ones are stored unsigned, the record
    saying why. c2pa-python holds the signed file in memory while it writes it (measured: 830-900 MB of peak
    RSS for a 500 MB AVI), so this bounds what signing adds to a worker's memory. 0: every size is signed."""
    flower_auth: str | None = None
    """``user:password`` for Flower's basic auth."""
    flower_address: str = "127.0.0.1"
    metrics_port: int | None = None
    """Port a worker command or a gateway serves its Prometheus metrics on (``mediaconduit worker
    --metrics-port``, ``mediaconduit gateway --metrics-port``); unset: no metrics recorded."""
    metrics_address: str = "127.0.0.1"
    """Address the metrics port listens on (``0.0.0.0`` for a Prometheus on another host or container)."""
    flower_port: int = 5555

    @property
    def credentials_dir(self) -> Path:
        return self.home / "credentials"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or f"redis://127.0.0.1:{self.embedded_port}/0"

    @property
    def effective_result_backend(self) -> str:
        return self.result_backend or self.effective_broker_url

    @property
    def uses_embedded_broker(self) -> bool:
        return self.broker_url is None

    @property
    def blobs(self) -> Path:
        return self.blob_dir or self.home / "blobs"

    @property
    def cache_dir(self) -> Path:
        """Provider and service sources, their installs and locks (not the result cache, which is in Redis)."""
        return self.home / "cache"

    @property
    def routes_file(self) -> Path:
        return self.routes or self.home / "routes.yml"


@lru_cache
def get_settings() -> Settings:
    return Settings()
