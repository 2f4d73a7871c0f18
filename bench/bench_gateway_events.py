"""What idle event streams cost one gateway process (``GET /v1/jobs/{id}/events``): memory per stream (the
gateway's RSS with N streams open against one, and the Redis server's), the CPU it spends while they idle,
and the delay of one event reaching every one of them, beside the same event reaching one stream alone (the
yardstick, measured in the same run). All streams follow one job, so one ``XADD`` wakes them all; the
event is written from this process as a worker writes it (``events.add``). The clients are raw asyncio
sockets in this process, one connection each.

    python bench/bench_gateway_events.py [--streams 1000] [--events 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import isolated_environment, percentile, row, rss_mb, stop_process

HOME = isolated_environment()


class Awaited:
    """The event being timed: how many streams it has still to reach, and a flag set when none is left."""

    def __init__(self, mark: int, streams: int) -> None:
        self.mark, self.left, self.done = mark, streams, asyncio.Event()


class Stream:
    """One client of the job's events: a socket, and when each numbered event reached it."""

    awaited: Awaited | None = None

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.task: asyncio.Task[None] | None = None

    async def open(self, port: int, job_id: str, key: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode()
        if " 200 " not in status:
            raise SystemExit(f"error: the gateway answered {status!r} to GET /v1/jobs/{job_id}/events")
        self.writer = writer
        self.task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buffered = b""
        while chunk := await reader.read(65536):
            now = time.perf_counter()
            buffered = buffered[-64:] + chunk
            start = 0
            while (at := buffered.find(b'"bench":', start)) >= 0:
                end = buffered.find(b"}", at)
                if end < 0:
                    break
                mark = int(buffered[at + 8:end])
                if mark not in self.arrived:
                    self.arrived[mark] = now
                    awaited = Stream.awaited
                    if awaited is not None and awaited.mark == mark:
                        awaited.left -= 1
                        if awaited.left == 0:
                            awaited.done.set()
                start = end
            buffered = buffered[start:]

    def close(self) -> None:
        self.writer.close()
        if self.task:
            self.task.cancel()


async def deliveries(streams: list[Stream], task_id: str, events: int) -> tuple[list[float], list[float]]:
    """For each of ``events`` events written one after another: ms until it reached every stream, and ms
    until it reached each one (all of them pooled)."""
    from mediaconduit_worker.worker import events as job_events

    every, each = [], []
    for _ in range(events):
        mark = uuid.uuid4().int % 10**12
        awaited = Stream.awaited = Awaited(mark, len(streams))
        sent = time.perf_counter()
        await asyncio.to_thread(job_events.add, task_id, job_events.LOG, {"line": "tick", "bench": mark})
        await asyncio.wait_for(awaited.done.wait(), 60)
        times = [(s.arrived[mark] - sent) * 1000 for s in streams]
        every.append(max(times))
        each += times
        await asyncio.sleep(0.05)
    return every, each


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(streams_count: int, events: int, idle: float) -> None:
    from mediaconduit_worker.gateway.records import JobRecord
    from mediaconduit_worker.gateway.tenants import KeyStore
    from mediaconduit_worker.worker.redis_state import state_redis

    redis = state_redis()
    _, key, _ = KeyStore(redis).create(f"bench-{uuid.uuid4().hex[:6]}")
    task_id = str(uuid.uuid4())
    tenant = KeyStore(redis).lookup(key)
    assert tenant is not None
    JobRecord(task_id, tenant.name, time.time(), [task_id], "text-to-text", "bench", None).save(redis, 3600)

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(HOME / "gateway.log", "wb")
    gateway = subprocess.Popen([sys.executable, "-m", "mediaconduit_worker.cli", "gateway", "--port", str(port),
                                "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(600):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        warm = [Stream() for _ in range(5)]  # imports and pools made, then gone: the baseline is a warm gateway
        for s in warm:
            await s.open(port, task_id, key)
        await deliveries(warm, task_id, 3)
        for s in warm:
            s.close()
        await asyncio.sleep(1)

        one = Stream()
        await one.open(port, task_id, key)
        every_one, _ = await deliveries([one], task_id, events)
        await asyncio.sleep(1)
        rss_one = rss_mb(gateway.pid)
        redis_one = int(redis.info("memory")["used_memory"])

        rest = [Stream() for _ in range(streams_count - 1)]
        t = time.perf_counter()
        for k in range(0, len(rest), 100):
            await asyncio.gather(*(s.open(port, task_id, key) for s in rest[k:k + 100]))
        opened = time.perf_counter() - t
        streams = [one, *rest]
        await asyncio.sleep(2)
        rss_all = rss_mb(gateway.pid)
        redis_all = int(redis.info("memory")["used_memory"])
        name = f"mediaconduit-gateway-events-{gateway.pid}"

        cpu = cpu_seconds(gateway.pid)
        await asyncio.sleep(idle)
        idle_cpu = (cpu_seconds(gateway.pid) - cpu) / idle * 100
        held = [c for c in redis.client_list() if c["name"] == name]
        waiting = sum(1 for c in held if "b" in c["flags"])

        every_all, each_all = await deliveries(streams, task_id, events)
        for s in streams:
            s.close()
    finally:
        stop_process(gateway)

    n = streams_count
    print(f"{n} idle event streams on one gateway process (one job; {events} events each way; "
          f"keep-alive {os.environ.get('MEDIACONDUIT_GATEWAY_EVENTS_KEEPALIVE', '10')} s)")
    row("gateway RSS, 1 stream (yardstick)", rss_one, "MiB")
    row(f"gateway RSS, {n} streams", rss_all, "MiB")
    row("gateway memory per stream", (rss_all - rss_one) * 1024 / (n - 1), "KiB")
    row("Redis server memory per stream (its connection)", (redis_all - redis_one) / 1024 / (n - 1), "KiB")
    row(f"Redis connections the gateway holds for {n} streams", len(held), "")
    row("of them blocked in XREAD (after the idle time)", waiting, "")
    row(f"gateway CPU while {n} streams idle ({idle:g} s)", idle_cpu, "%")
    row(f"time to open {n - 1} streams, 100 at a time", opened, "s")
    row("one event reaching 1 stream, p50 (yardstick)", percentile(every_one, 50), "ms")
    row("one event reaching 1 stream, max", max(every_one), "ms")
    row(f"one event reaching all {n} streams, p50", percentile(every_all, 50), "ms")
    row(f"one event reaching all {n} streams, max", max(every_all), "ms")
    row(f"one event reaching each of {n} streams, p50", percentile(each_all, 50), "ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="event streams held open at once (at least 2)")
    parser.add_argument("--events", type=int, default=20, help="events timed with 1 stream and with all")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds the streams idle while CPU is measured")
    args = parser.parse_args()
    if args.streams < 2 or args.events < 1:
        parser.error("--streams must be at least 2 and --events at least 1")
    asyncio.run(run(args.streams, args.events, args.idle))


if __name__ == "__main__":
    main()
