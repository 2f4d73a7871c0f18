"""Docker services benchmark: attach to a running service, cold start of a built image, skipped rebuild.

    python bench/bench_services.py [--service services/cowsay-service] [--attach 200] [--cold 5]

Targets: attach < 20 ms, cold start to healthy < 1.5 s, no rebuild when nothing changed.
Needs a Docker engine and the base image (`make base-image`). Everything it starts is removed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, percentile, row

os.environ["MEDIACONDUIT_HOME"] = tempfile.mkdtemp(prefix="mediaconduit-bench-services-")


def timed(fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    value = fn()
    return (time.perf_counter() - t) * 1000, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service", default=str(REPO / "services" / "cowsay-service"))
    parser.add_argument("--attach", type=int, default=200, help="attach round trips to time")
    parser.add_argument("--cold", type=int, default=5, help="cold starts to time")
    args = parser.parse_args()

    from mediaconduit_worker.services import ServiceRegistry, docker_client
    from mediaconduit_worker.services.images import ensure_image, image_exists

    client = docker_client()
    url = args.service
    registry = ServiceRegistry(client)
    print(f"service {url} on Docker {client.version().get('Version')}")
    try:
        prebuilt = image_exists(client, registry.spec_for(url).built_image)
        first_ms, info = timed(lambda: registry.ensure(url))
        row("first ensure: " + ("start + healthy (image existed)" if prebuilt else "build + start + healthy"), first_ms, "ms")
        print(f"  -> {info.container_name} at {info.base_url}")  # type: ignore[attr-defined]

        warm = [timed(lambda: registry.ensure(url))[0] for _ in range(args.attach)]
        row("attach, same process (p50)", percentile(warm, 50), "ms", "target < 20 ms")
        row("attach, same process (p99)", percentile(warm, 99), "ms")
        fresh = [timed(lambda: ServiceRegistry(client).ensure(url))[0] for _ in range(max(args.attach // 4, 5))]
        row("attach, new worker process view (p50)", percentile(fresh, 50), "ms", "target < 20 ms")
        row("attach, new worker process view (p99)", percentile(fresh, 99), "ms")

        cold = []
        for _ in range(args.cold):
            registry.stop(url)
            cold.append(timed(lambda: registry.ensure(url))[0])
        row("cold start of the built image to healthy (median)", statistics.median(cold), "ms", "target < 1500 ms")
        row("cold start (max)", max(cold), "ms")

        spec = registry.spec_for(url)
        before = client.images.get(spec.built_image).id
        skipped = [timed(lambda: ensure_image(client, spec))[0] for _ in range(20)]
        assert client.images.get(spec.built_image).id == before, "image was rebuilt although nothing changed"
        row("rebuild check, nothing changed (p50, no build)", percentile(skipped, 50), "ms", "rebuild skipped")
        spec_ms = statistics.median(timed(lambda: registry.spec_for(url))[0] for _ in range(20))
        row("source + manifest + compose resolution (median)", spec_ms, "ms")
    finally:
        registry.remove_all()
        registry.remove_images()


if __name__ == "__main__":
    main()
