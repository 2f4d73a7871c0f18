"""``mediaconduit routes check | health | reset``: the routes file and how its candidates are doing."""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..worker.limits import RoutingState
    from ..worker.routes import Candidate, Route

PROBE_TIMEOUT = 10.0


@click.group()
def routes() -> None:
    """Provider routes (MEDIACONDUIT_ROUTES, default $MEDIACONDUIT_HOME/routes.yml)."""


def _load() -> Any:
    from ..errors import RouteError
    from ..worker.routes import get_routes

    try:
        return get_routes()
    except RouteError as exc:
        raise click.ClickException(str(exc)) from None


@routes.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def check(file: Path | None) -> None:
    """Read FILE (default: the routes file, MEDIACONDUIT_ROUTES) and check it as producers and workers will:
    every candidate's provider, model and capability; print each route's queue."""
    if file is None:
        table = _load()
    else:
        from ..errors import RouteError
        from ..worker.routes import load_routes

        try:
            table = load_routes(file)
        except RouteError as exc:
            raise click.ClickException(str(exc)) from None
    for route in table.routes.values():
        n = len(route.candidates)
        click.echo(f"{route.name}: {route.spec.strategy} over {n} candidate{'' if n == 1 else 's'} -> queue {route.capability}")
    for alias, name in table.aliases.items():
        click.echo(f"{alias}: alias of {name}")


def probe(cand: Candidate) -> dict[str, Any]:
    """A live look at a candidate's API (its model listing) or service (its health check)."""
    from ..http import fail_fast
    from ..openai_compat import OpenAICompatProvider
    from ..provider import DockerProvider
    from ..remote import RemoteProvider
    from ..worker.loader import get_registry

    started = time.perf_counter()
    try:
        with fail_fast():
            provider = get_registry().get(cand.provider).provider
            if isinstance(provider, OpenAICompatProvider):
                listed = [m["id"] for m in provider.api.list_models()]
                ok, detail = True, f"{len(listed)} models listed"
            elif isinstance(provider, RemoteProvider):
                listed = [m.id for m in provider.fetch_models()]
                ok, detail = True, f"{len(listed)} models listed"
            elif isinstance(provider, DockerProvider):
                from ..services import get_service_registry

                ok, detail = get_service_registry().check(provider.get_service_url())
                listed = []
            else:
                ok, detail, listed = True, "local provider loaded", []
        if listed and cand.model not in listed:
            detail += f"; {cand.model!r} is not among them"
    except Exception as exc:  # a probe reports whatever went wrong, it does not fail the report
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return {"ok": ok, "detail": detail, "ms": round((time.perf_counter() - started) * 1000, 1)}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def candidate_health(route: Route, cand: Candidate, state: RoutingState) -> dict[str, Any]:
    """State (ok, cooldown, at its limit, failing), calls in flight, the last 5 minutes, p50, spend."""
    snap = state.snapshot(cand.cid, cand.limits, route.policy)
    limits = cand.limits
    if snap["cooldown_ms"]:
        status = "cooldown"
    elif limits.max_concurrency and snap["in_flight"] >= limits.max_concurrency:
        status = "at its limit"
    elif limits.rpm and snap["in_window"] >= limits.rpm:
        status = "at its limit"
    elif snap["recent_fails"] or (snap["last_error_at"] or 0) > (snap["last_ok_at"] or 0):
        status = "failing"
    else:
        status = "ok"
    return {
        "index": cand.index, "provider": cand.provider, "model": cand.model, "state": status,
        "cooldown_until": _iso(snap["now_ms"] + snap["cooldown_ms"]) if snap["cooldown_ms"] else None,
        "in_flight": snap["in_flight"], "max_concurrency": limits.max_concurrency,
        "rpm": limits.rpm, "calls_in_window": snap["in_window"],
        "calls_5m": snap["calls"], "failures_5m": snap["failures"],
        "p50_ms": round(statistics.median(snap["latencies"]), 1) if snap["latencies"] else None,
        "spent_usd": snap["usd"], "last_error": snap["last_error"],
    }


def health_report(with_probe: bool = True) -> list[dict[str, Any]]:
    from ..worker.limits import get_state

    table = _load()
    state = get_state()
    report = []
    probes: dict[tuple[str, int], Any] = {}
    pool = ThreadPoolExecutor(max_workers=8) if with_probe else None
    if pool is not None:
        probes = {(r.name, c.index): pool.submit(probe, c) for r in table.routes.values() for c in r.candidates}
    for route in table.routes.values():
        spent, held = state.spend(route.scope)
        report.append({
            "route": route.name, "strategy": route.spec.strategy, "capability": str(route.capability),
            "budget_usd": route.spec.budget_usd, "spent_usd": spent, "held_usd": held,
            "candidates": [candidate_health(route, c, state) for c in route.candidates],
        })
    if pool is not None:
        deadline = time.monotonic() + PROBE_TIMEOUT
        for entry in report:
            for cand in entry["candidates"]:
                future = probes[(entry["route"], cand["index"])]
                try:
                    cand["probe"] = future.result(timeout=max(deadline - time.monotonic(), 0.0))
                except FutureTimeout:
                    cand["probe"] = {"ok": False, "detail": f"no answer within {PROBE_TIMEOUT:g}s", "ms": None}
                if not cand["probe"]["ok"] and cand["state"] == "ok":
                    cand["state"] = "failing"
        pool.shutdown(wait=False, cancel_futures=True)
    return report


@routes.command("health")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--no-probe", is_flag=True, help="Only the shared state in Redis; do not call the APIs.")
def health(as_json: bool, no_probe: bool) -> None:
    """Each route's candidates: state, calls in flight, the last 5 minutes, p50 latency, spend, a live probe."""
    report = health_report(with_probe=not no_probe)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.table import Table

    from .output import table_console

    console = table_console()
    for entry in report:
        budget = f" of ${entry['budget_usd']:.2f}" if entry["budget_usd"] is not None else ""
        table = Table("#", "candidate", "state", "in flight", "calls 5m", "fails 5m", "p50 ms", "spent $", "probe",
                      title=f"route {entry['route']} ({entry['strategy']}, {entry['capability']}): "
                            f"spent ${entry['spent_usd']:.6f}{budget}")
        for c in entry["candidates"]:
            state = c["state"] + (f" until {c['cooldown_until']}" if c["cooldown_until"] else "")
            limit = f"/{c['max_concurrency']}" if c["max_concurrency"] else ""
            probe_text = "-" if "probe" not in c else ("ok " if c["probe"]["ok"] else "FAIL ") + c["probe"]["detail"]
            table.add_row(str(c["index"]), f"{c['provider']}\n{c['model']}", state, f"{c['in_flight']}{limit}",
                          str(c["calls_5m"]), str(c["failures_5m"]), "-" if c["p50_ms"] is None else f"{c['p50_ms']:.1f}",
                          f"{c['spent_usd']:.6f}", probe_text)
        console.print(table)


@routes.command("reset")
@click.argument("name")
@click.option("--spend", is_flag=True, help="Also forget what the route has spent (its budget starts over).")
def reset(name: str, spend: bool) -> None:
    """Forget NAME's cooldowns, failure counts and statistics (calls in flight keep their slots)."""
    from ..errors import RouteError
    from ..worker.limits import get_state

    try:
        route = _load().get(name)
    except RouteError as exc:
        raise click.ClickException(str(exc)) from None
    removed = get_state().reset([c.cid for c in route.candidates], [route.scope] if spend else [])
    click.echo(f"route {name}: {removed} keys cleared" + (" (spend included)" if spend else ""))
