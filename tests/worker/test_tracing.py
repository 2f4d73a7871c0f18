"""Traces through OpenTelemetry and JSON log lines. A job's span is checked with the SDK's in-memory
exporter; end to end, real producer and worker processes export over OTLP/HTTP to a receiver in this test
that decodes what it gets: a chain's steps and a route's failover attempts in one trace each, the
provider's HTTP calls inside them, GenAI attributes, and no secret or input anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import REPO, RUN_DIR, WorkerProcess, free_port
from support.remote import publish_remote_providers
from support.standin_apis import Reply, StandInAPIs

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

ECHO = str(REPO / "providers" / "echo-provider")
SECRET = "sk-trace-secret-0123456789abcdef"
INPUT = "private words nobody may trace"


def test_a_job_span_carries_genai_attributes_and_no_secret(monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from test_pipeline import a_run

    from mediaconduit_worker.errors import UnknownModelError
    from mediaconduit_worker.worker import pipeline, tracing
    from mediaconduit_worker.worker.pipeline import run_steps

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    monkeypatch.setattr(tracing, "_decided", True)
    run = a_run(INPUT, ECHO, "upper", {"api_key": SECRET})
    run.request.delivery_info = {"routing_key": "text-to-text"}
    assert run_steps(pipeline.STEPS, run)["asset"]["content"] == INPUT.upper()
    (span,) = exporter.get_finished_spans()
    assert span.name == "transform text-to-text" and span.kind.name == "CONSUMER"
    assert span.attributes["gen_ai.operation.name"] == "chat"
    assert span.attributes["gen_ai.request.model"] == "upper"
    assert span.attributes["gen_ai.provider.name"] == "echo-provider"
    assert SECRET not in repr(dict(span.attributes)) and INPUT not in repr(dict(span.attributes))

    failing = a_run("x", ECHO, "no-such-model", {"api_key": SECRET})
    failing.request.delivery_info = {"routing_key": "text-to-text"}
    with pytest.raises(UnknownModelError):
        run_steps(pipeline.STEPS, failing)
    span = exporter.get_finished_spans()[-1]
    assert span.status.status_code.name == "ERROR" and "no-such-model" in span.status.description
    assert span.attributes["error.type"] == "UnknownModelError"


def test_a_thread_that_asks_during_set_up_waits_for_the_tracer(monkeypatch):
    """The first jobs of a worker start together: none may find the set-up half done and run untraced."""
    from mediaconduit_worker.worker import tracing

    started, made = threading.Event(), object()

    def slow_set_up() -> None:
        started.set()
        assert tracing.tracer() is None  # a log line written during the set-up, on its thread
        time.sleep(0.3)
        monkeypatch.setattr(tracing, "_tracer", made)

    monkeypatch.setattr(tracing, "_make_tracer", slow_set_up)
    monkeypatch.setattr(tracing, "_decided", False)
    monkeypatch.setattr(tracing, "_tracer", None)
    got: list[Any] = []
    first = threading.Thread(target=lambda: got.append(tracing.tracer()))
    first.start()
    started.wait(5)
    second = tracing.tracer()
    first.join(5)
    assert got == [made] and second is made


class _Receiver(BaseHTTPRequestHandler):
    spans: list[dict[str, Any]]

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.server.spans.append({  # type: ignore[attr-defined]
                        "service": service, "name": span.name, "trace": span.trace_id.hex(), "id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "status": span.status.message,
                        "attributes": {a.key: _value(a.value) for a in span.attributes}})
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


PRODUCER = """
import json, sys
from celery import chain
from mediaconduit_worker import transform
queue, echo, secret, text = sys.argv[1:5]
first = transform.si(text, echo, "upper", {"api_key": secret}).set(queue=queue)
second = transform.s(echo, "reverse", {"api_key": secret}).set(queue=queue)
chained = chain(first, second).apply_async()
routed = transform.apply_async((text, "route:traced", None, {"api_key": secret}), queue=queue)
print(json.dumps({"chain": chained.get(timeout=90)["asset"]["content"],
                  "route": routed.get(timeout=90)["metadata"]["candidate"]["index"]}))
"""


def test_traces_follow_a_chain_and_a_route_from_producer_to_provider_call(tmp_path):
    import yaml

    from mediaconduit_worker.worker.limits import PREFIX, candidate_id
    from mediaconduit_worker.worker.redis_state import state_redis

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Receiver)
    server.spans = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    apis = StandInAPIs().start()
    urls = publish_remote_providers()
    candidates = [{"provider": urls["openrouter"], "model": "openai/gpt-4o-mini"},
                  {"provider": urls["together"], "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo"}]
    apis.script("POST", "/openrouter/api/v1/chat/completions", Reply(503, {"error": {"code": 503, "message": "busy"}}))
    for candidate in candidates:  # earlier tests' failures must not have cooled a candidate down
        cid = candidate_id(candidate["provider"], candidate["model"])
        for key in state_redis().scan_iter(f"{PREFIX}:cand:{cid}:*"):
            state_redis().delete(key)
    routes = RUN_DIR / "routes-traced.yml"
    routes.write_text(yaml.safe_dump({"routes": {"traced": {"candidates": candidates}}}))
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "OTEL_BSP_SCHEDULE_DELAY": "100",
            "MEDIACONDUIT_ROUTES": str(routes)}
    queue = "traced-jobs"
    env = {**otel, **apis.env(), "OTEL_SERVICE_NAME": "worker"}
    worker = WorkerProcess(queue=queue, pool="threads", concurrency=4, env=env)
    try:
        worker.wait_ready()
        out = subprocess.run([sys.executable, "-c", PRODUCER, queue, ECHO, SECRET, INPUT], capture_output=True,
                             text=True, timeout=180, env={**os.environ, **otel, "OTEL_SERVICE_NAME": "producer"})
        assert out.returncode == 0, out.stderr[-3000:]
        assert json.loads(out.stdout) == {"chain": INPUT.upper()[::-1], "route": 2}
        deadline = time.monotonic() + 180  # a loaded machine exports late

        def count(prefix: str) -> int:
            return sum(s["name"].startswith(prefix) for s in server.spans)  # type: ignore[attr-defined]

        while count("transform") < 3 or count("attempt") < 2 or count("send") < 3:  # each process exports in batches
            got = Counter(f"{s['service']}: {s['name']}" for s in server.spans)  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, f"spans received after 180 s: {dict(got)}"
            time.sleep(0.2)
    finally:
        worker.stop()
        apis.stop()
        server.shutdown()
    spans: list[dict[str, Any]] = server.spans  # type: ignore[attr-defined]
    by_id = {s["id"]: s for s in spans}
    jobs = [s for s in spans if s["name"].startswith("transform")]
    sends = [s for s in spans if s["name"] == "send mediaconduit.transform"]
    assert {s["service"] for s in sends} == {"producer", "worker"}  # the chain's second step is sent by the worker
    for job in jobs:  # each delivery is the child of the publish that sent it
        assert by_id[job["parent"]]["name"] == "send mediaconduit.transform"
    chained = [j for j in jobs if j["attributes"].get("gen_ai.request.model") in ("upper", "reverse")]
    assert len(chained) == 2 and len({j["trace"] for j in chained}) == 1  # one trace across the chain

    (routed,) = [j for j in jobs if j["attributes"].get("mediaconduit.route") == "traced"]
    attempts = sorted((s for s in spans if s["parent"] == routed["id"] and s["name"].startswith("attempt")),
                      key=lambda s: s["name"])
    assert [a["name"] for a in attempts] == ["attempt 1", "attempt 2"]
    assert attempts[0]["attributes"]["mediaconduit.outcome"] == "TransientError"  # the 503
    assert attempts[1]["attributes"]["mediaconduit.outcome"] == "served"
    calls = [s for s in spans if s["parent"] in {a["id"] for a in attempts} and s["name"] == "POST"]
    assert len(calls) == 2 and all("?" not in c["attributes"]["http.url"] for c in calls)
    assert routed["attributes"]["gen_ai.provider.name"] == "together-provider"  # its manifest id
    assert routed["attributes"]["gen_ai.usage.input_tokens"] > 0 and routed["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert routed["attributes"]["mediaconduit.attempts"] == 2
    text = json.dumps(spans)
    assert SECRET not in text and INPUT not in text and INPUT.upper() not in text


def test_json_log_lines_name_the_job(tmp_path):
    worker = WorkerProcess(queue="json-logs", pool="threads", concurrency=2, env={"MEDIACONDUIT_LOG_FORMAT": "json"})
    try:
        worker.wait_ready()
        from mediaconduit_worker import transform
        from mediaconduit_worker.celery_app import app

        try:
            r = transform.apply_async(("hello", ECHO, "upper", {"api_key": SECRET}), queue="json-logs")
        finally:
            app.amqp.queues.pop("json-logs", None)
        assert r.get(timeout=60)["asset"]["content"] == "HELLO"
    finally:
        worker.stop()
    lines = [json.loads(line) for line in worker.log_text().splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    mine = [line for line in lines if line.get("task_id") == r.id]
    assert mine and all(line["model"] == "upper" and line["provider"] == ECHO for line in mine), lines[-5:]
    assert SECRET not in worker.log_text()
