"""The compose/ stack for real: images built here, Redis with a password, two worker pools in
containers starting a provider service through the host's engine, Flower with basic auth, and the git
service holding the reference providers and services (nothing else is served: offline from the start),
the HTTP gateway, and Debian's Prometheus scraping the workers and the gateway.

The command `make up` prints runs a job from the host, as printed, for a text provider (echo) and a
Docker-service provider (cowsay). Then 200 jobs from the host, the text pool scaled to 2 (the stack's
Prometheus then scrapes three worker containers) and one worker container SIGKILLed mid-batch: every job
ends with exactly one final result, Flower lists them all, and nothing is left running afterwards.

A job through the stack's gateway, with a key made in the gateway's container, answers succeeded, and the
stack's Prometheus counts it in the worker's series and the gateway's.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import redis
from conftest import REPO, RUN_DIR, free_port

pytestmark = pytest.mark.docker
JOBS = 200
PRODUCER = r"""
import json, sys
from celery.result import AsyncResult
from mediaconduit_worker.celery_app import app
from mediaconduit_worker import transform
cmd, arg = sys.argv[1], sys.argv[2]
if cmd == "send":
    jobs = json.loads(arg)
    print(json.dumps([transform.delay(*job).id for job in jobs]))
else:
    import time
    out, deadline = {}, time.monotonic() + 300  # one deadline for all: a lost job shows as PENDING, not a hang
    for task_id in json.loads(arg):
        r = AsyncResult(task_id, app=app)
        try:
            value = r.get(timeout=max(1.0, deadline - time.monotonic()))
            out[task_id] = ["SUCCESS", value["asset"]["content"], value["metadata"]["worker"]]
        except Exception as exc:
            out[task_id] = [r.state, str(exc), None]
    print(json.dumps(out))
"""


class Stack:
    """One compose project with its own name, ports, network and secrets."""

    def __init__(self) -> None:
        self.project = f"mctest{uuid.uuid4().hex[:8]}"
        self.dir = RUN_DIR / self.project
        self.dir.mkdir()
        self.password = secrets.token_hex(12)
        self.flower_auth = ("admin", secrets.token_hex(8))
        self.redis_port, self.flower_port, self.git_port = free_port(), free_port(), free_port()
        self.gateway_port, self.prometheus_port = free_port(), free_port()
        self.network = self.project
        env = {
            "MEDIACONDUIT_REDIS_PASSWORD": self.password,
            "MEDIACONDUIT_FLOWER_AUTH": ":".join(self.flower_auth),
            "MEDIACONDUIT_REDIS_PORT": str(self.redis_port),
            "MEDIACONDUIT_FLOWER_PORT": str(self.flower_port),
            "MEDIACONDUIT_GIT_PORT": str(self.git_port),
            "MEDIACONDUIT_GATEWAY_PORT": str(self.gateway_port),
            "MEDIACONDUIT_PROMETHEUS_PORT": str(self.prometheus_port),
            "MEDIACONDUIT_VERSION": self.project,  # an image tag of its own: other stacks building at once keep theirs
            "MEDIACONDUIT_NETWORK": self.network,
            "MEDIACONDUIT_BLOB_DIR": str(self.dir / "blobs"),
            "MEDIACONDUIT_VISIBILITY_TIMEOUT": "20",
        }
        self.env_file = self.dir / ".env"
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        self.base = ["docker-compose", "-p", self.project, "--env-file", str(self.env_file),
                     "-f", str(REPO / "compose" / "docker-compose.yml")]

    def provider_url(self, name: str) -> str:
        """A reference provider, from the stack's git service."""
        return f"git+http://127.0.0.1:{self.git_port}/reference.git#subdirectory=providers/{name}-provider"

    def hello_command(self) -> str:
        """The command `make up` prints for this stack's env file."""
        out = subprocess.run(["bash", str(REPO / "scripts" / "stack-command.sh"), str(self.env_file)],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def run_in_shell(self, command: str) -> dict:
        """``command`` as a user runs it in a shell at the repository root; the result it prints."""
        env = {**os.environ, "MEDIACONDUIT_HOME": str(self.dir / "home")}
        env.pop("MEDIACONDUIT_BROKER_URL", None)
        env.pop("MEDIACONDUIT_RESULT_BACKEND", None)
        proc = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        return json.loads(proc.stdout)

    @property
    def broker_url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.redis_port}/0"

    def compose(self, *args: str, timeout: float = 900) -> str:
        proc = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout

    def urls(self) -> dict[str, str]:
        """The gateway's and Prometheus's URLs as `make up` prints them for this stack's env file."""
        out = subprocess.run(["bash", str(REPO / "scripts" / "stack-urls.sh"), str(self.env_file)],
                             capture_output=True, text=True, check=True).stdout
        return {line.split(" ", 1)[0]: line.split("http://", 1)[1].split(" ", 1)[0] for line in out.splitlines()}

    def producer(self, cmd: str, arg: object) -> object:
        env = {**os.environ, "MEDIACONDUIT_BROKER_URL": self.broker_url, "MEDIACONDUIT_HOME": str(self.dir / "home"),
               "MEDIACONDUIT_BLOB_DIR": str(self.dir / "blobs")}
        env.pop("MEDIACONDUIT_RESULT_BACKEND", None)
        proc = subprocess.run([sys.executable, "-c", PRODUCER, cmd, json.dumps(arg)], capture_output=True,
                              text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.splitlines()[-1])

    def containers(self, service: str | None = None) -> list[str]:
        filters = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        out = subprocess.run(["docker", "ps", "-q", *filters], capture_output=True, text=True, check=True).stdout
        return out.split()

    def service_containers(self) -> list[str]:
        out = subprocess.run(["docker", "ps", "-aq", "--filter", "label=org.mediaconduit.managed=1",
                              "--filter", f"network={self.network}"], capture_output=True, text=True, check=True)
        return out.stdout.split()

    def down(self) -> None:
        ids = self.service_containers()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        self.compose("down", "-v", "--remove-orphans")
        subprocess.run(["docker", "rmi", "-f", f"mediaconduit/worker:{self.project}", f"mediaconduit/prometheus:{self.project}"],
                       capture_output=True)

    def wait_workers(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                [sys.executable, "-c", "from mediaconduit_worker.celery_app import app; "
                 "print(len(app.control.ping(timeout=1)))"],
                capture_output=True, text=True, env={**os.environ, "MEDIACONDUIT_BROKER_URL": self.broker_url},
            )
            if out.returncode == 0 and int(out.stdout.strip() or 0) >= count:
                return
            time.sleep(1)
        raise TimeoutError(f"{count} workers did not answer:\n{self.compose('logs', '--tail=40')}")


def wait_http(url: str, what: str, timeout: float = 180) -> None:
    """Until ``url`` answers 200 (a container's server is up some seconds after `up -d` returns)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{what} did not answer 200 at {url} within {timeout:g}s"
        time.sleep(1)


def prometheus_query(base: str, promql: str) -> dict[str, float]:
    """The instant vector ``promql`` evaluates to on the Prometheus at ``base``, as {labels rendered: value}."""
    reply = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "success", body
    return {",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())): float(r["value"][1])
            for r in body["data"]["result"]}


def wait_scraped(base: str, promql: str, want: dict[str, float], timeout: float = 120) -> None:
    """Until ``promql`` evaluates to ``want`` (the stack scrapes every 5 s)."""
    deadline = time.monotonic() + timeout
    while (got := prometheus_query(base, promql)) != want:
        assert time.monotonic() < deadline, f"{promql} is {got}, not {want}, after {timeout:g}s"
        time.sleep(1)


@pytest.fixture
def stack(docker_engine):
    if shutil.which("docker-compose") is None:
        from conftest import _no_docker

        _no_docker("docker-compose is not installed (apt-get install docker-compose)")
    build = subprocess.run(["make", "-C", str(REPO), "wheelhouse", "prometheus-debs"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    s = Stack()
    try:
        s.compose("up", "-d", "--build")
        yield s
    finally:
        s.down()


def test_the_printed_command_runs_jobs_and_the_stack_survives_a_killed_worker_container(stack):
    assert (REPO / ".venv" / "bin" / "mediaconduit").exists(), "the printed command runs .venv/bin/mediaconduit"
    stack.wait_workers(2)
    command = stack.hello_command()
    echo, cowsay = stack.provider_url("echo"), stack.provider_url("cowsay")
    assert f'--provider "{echo}" --model upper' in command and stack.password not in command
    result = stack.run_in_shell(command)
    assert result["asset"]["content"] == "HELLO STACK"
    source = result["metadata"]["generation_prompt"]["source"]
    assert result["metadata"]["generation_prompt"]["provider_url"] == echo and source["subdirectory"] == "providers/echo-provider" and len(source["commit"]) == 40
    # The same command for the Docker-service provider: its service comes from the same repository and commit,
    # built and started by a worker container on the host's engine (this also warms it before the batch).
    moo = stack.run_in_shell(command.replace(echo, cowsay).replace("--model upper", "--model cowsay-default"))
    assert "hello stack" in moo["asset"]["content"] and "(oo)" in moo["asset"]["content"]
    assert moo["metadata"]["generation_prompt"]["service"]["commit"] == source["commit"]
    jobs = [[f"job {i}", echo, "upper"] if i % 2 else [f"moo {i}", cowsay, "cowsay-default"] for i in range(JOBS)]
    ids = stack.producer("send", jobs[: JOBS // 2])
    stack.compose("up", "-d", "--no-recreate", "--scale", "worker-text=2")
    stack.wait_workers(3)
    # The stack's Prometheus finds the new container by Docker's DNS and scrapes the scaled pool whole.
    wait_scraped(f"http://{stack.urls()['Prometheus']}", 'sum by (job) (up{job="mediaconduit-workers"})',
                 {"job=mediaconduit-workers": 3})
    ids += stack.producer("send", jobs[JOBS // 2 :])
    text_pool = stack.containers("worker-text")
    assert len(text_pool) == 2
    victim = text_pool[0]
    # Kill once every job has left the queue for a worker's in-flight list: the killed worker's jobs come
    # back when its lease lapses (broker/README.md).
    client = redis.Redis.from_url(stack.broker_url)
    deadline = time.monotonic() + 120
    while client.llen("text-to-text") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.llen("text-to-text") == 0, "the text pool did not take the jobs from the queue"
    subprocess.run(["docker", "kill", "--signal", "KILL", victim], check=True, capture_output=True)
    results = stack.producer("wait", ids)

    assert len(ids) == len(set(ids)) == JOBS
    states = {tid: r[0] for tid, r in results.items()}
    assert states == {tid: "SUCCESS" for tid in ids}, {t: results[t] for t in ids if results[t][0] != "SUCCESS"}
    for tid, (job_input, _, _) in zip(ids, jobs):
        content = results[tid][1]
        assert (job_input.upper() == content) if "job" in job_input else (job_input in content and "(oo)" in content)

    # One final result per job in the backend, and nothing else queued or left unacknowledged.
    assert len(client.keys("celery-task-meta-*")) == JOBS + 2
    # A job the killed worker finished but had not acknowledged comes back when its lease lapses (its stored
    # SUCCESS is returned, the provider is not called again): wait for such redeliveries to drain.
    def held() -> int:
        return sum(client.llen(k) for k in client.scan_iter("mediaconduit:inflight:*"))

    deadline = time.monotonic() + 120
    while client.llen("text-to-text") or held():
        assert time.monotonic() < deadline, f"left: queue {client.llen('text-to-text')}, in flight {held()}"
        time.sleep(1)
    assert len(client.keys("celery-task-meta-*")) == JOBS + 2
    auth = httpx.BasicAuth(*stack.flower_auth)
    base = f"http://127.0.0.1:{stack.flower_port}"
    assert httpx.get(f"{base}/api/tasks", timeout=10).status_code == 401
    # A worker sends its task events in batches: one killed after storing a result takes that job's
    # task-succeeded event with it, so Flower shows the job as it last heard of it (the backend has it).
    by_victim = {t for t in ids if results[t][2].endswith("@" + victim[:12])}

    def unsettled(listed: dict) -> list[str]:
        return [t for t in ids if t not in listed or (listed[t].get("state") != "SUCCESS" and t not in by_victim)]

    deadline = time.monotonic() + 60
    listed: dict = {}
    while time.monotonic() < deadline:
        listed = httpx.get(f"{base}/api/tasks", params={"limit": 100000}, auth=auth, timeout=30).json()
        if not unsettled(listed):
            break
        time.sleep(2)
    missing = unsettled(listed)
    assert not missing, f"{len(missing)} jobs not SUCCESS in Flower: {[(t, listed.get(t), results[t]) for t in missing][:3]}"
    assert {listed[t]["name"] for t in ids} == {"mediaconduit.transform"}
    # The Docker-service provider ran in a container on the stack's network, reached by name.
    assert stack.service_containers()

    stack.down()
    assert stack.containers() == [] and stack.service_containers() == []


def test_a_job_through_the_stacks_gateway_is_counted_by_the_stacks_prometheus(stack):
    urls = stack.urls()
    assert urls == {"Gateway": f"127.0.0.1:{stack.gateway_port}", "Prometheus": f"127.0.0.1:{stack.prometheus_port}"}
    gateway, prometheus = f"http://{urls['Gateway']}", f"http://{urls['Prometheus']}"
    stack.wait_workers(2)
    wait_http(f"{gateway}/openapi.json", "the gateway")
    wait_http(f"{prometheus}/-/ready", "Prometheus")
    # Every worker container and the gateway found through Docker's DNS and scraped.
    wait_scraped(prometheus, "sum by (job) (up)", {"job=mediaconduit-workers": 2, "job=mediaconduit-gateway": 1})

    tenant = f"stack-{uuid.uuid4().hex[:6]}"
    made = json.loads(stack.compose("exec", "-T", "gateway", "mediaconduit", "keys", "create", "--tenant", tenant, "--json"))
    assert made["tenant"] == tenant
    auth = {"Authorization": f"Bearer {made['key']}"}
    echo = stack.provider_url("echo")
    created = httpx.post(f"{gateway}/v1/jobs", headers={**auth, "Prefer": "wait=60"}, timeout=90,
                         json={"input": "through the stack", "provider": echo, "model": "upper"})
    assert created.status_code == 201, created.text
    job = httpx.get(f"{gateway}/v1/jobs/{created.json()['id']}", headers=auth, timeout=30).json()
    assert job["status"] == "succeeded", job
    assert job["result"]["asset"]["content"] == "THROUGH THE STACK"
    assert job["result"]["metadata"]["generation_prompt"]["provider_url"] == echo
    # The stack's gateway refuses what its allow-list does not name (the stack's reference providers only).
    foreign = httpx.post(f"{gateway}/v1/jobs", headers=auth, timeout=30,
                         json={"input": "x", "provider": echo.replace(str(stack.git_port), "1"), "model": "upper"})
    assert foreign.status_code == 422 and "MEDIACONDUIT_PROVIDER_ALLOW" in foreign.text, foreign.text

    workers = 'job="mediaconduit-workers"'
    wait_scraped(prometheus, f"sum by (provider, model, tenant) (mediaconduit_calls_total{{{workers}}})",
                 {f"model=upper,provider=echo-provider,tenant={tenant}": 1})
    wait_scraped(prometheus, f"sum by (queue, outcome) (mediaconduit_jobs_total{{{workers}}})",
                 {"outcome=succeeded,queue=text-to-text": 1})
    gw = 'job="mediaconduit-gateway"'
    wait_scraped(prometheus, f'sum by (route, method, status, tenant) (mediaconduit_gateway_requests_total{{{gw},'
                             f'route=~"/v1/jobs.*"}})',
                 {f"method=POST,route=/v1/jobs,status=201,tenant={tenant}": 1,
                  f"method=POST,route=/v1/jobs,status=422,tenant={tenant}": 1,
                  f"method=GET,route=/v1/jobs/{{job_id}},status=200,tenant={tenant}": 1})
    wait_scraped(prometheus, f"sum by (tenant) (mediaconduit_gateway_jobs_created_total{{{gw}}})", {f"tenant={tenant}": 1})
