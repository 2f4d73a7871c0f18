"""``mediaconduit batch``: a JSONL file through a model or a pipeline, resumable, with a progress bar."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from ..batch.jsonl import BadLine, InputItem, read_jsonl, read_results
from ..capabilities import capability as strict_capability
from ..capabilities import parse_capability


def _json_object(text: str | None, hint: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=hint) from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"must be a JSON object, got {type(value).__name__}", param_hint=hint)
    return value


def absolute_provider(provider: str) -> str:
    """A folder given as a relative path, made absolute here: the worker would read it against its own
    working directory, not this command's (the check here would pass and the job fail there)."""
    from ..errors import ProviderSourceError
    from ..sources import parse_source
    from ..worker.routes import is_route

    if is_route(provider):
        return provider
    try:
        source = parse_source(provider)
    except ProviderSourceError:
        return provider  # check_step names what is wrong with it
    if source.kind == "path" and not provider.startswith("file://"):
        return source.location
    return provider


def check_step(provider: str, model: str | None, options: dict[str, Any]) -> str:
    """The step's capability (its queue), or a clear error before anything is queued
    (``worker/checks.py``; undeclared options are warned about on stderr)."""
    from ..worker.checks import check_step as checked
    from ..worker.routes import is_route

    if not model and not is_route(provider):
        raise click.UsageError(f"provider {provider}: --model is required (only a route:NAME chooses its own)")
    step = checked(provider, model, options)
    for warning in step.warnings:
        click.echo(f"warning: {warning}", err=True)
    return step.queue


def _item_error(item: InputItem) -> BadLine | None:
    cap = item.options.get("capability")
    if cap is not None and (not isinstance(cap, str) or parse_capability(cap) is None):
        return BadLine(item.line, f"unknown capability {cap!r} in 'options'")
    return None


@click.command()
@click.argument("input_file", metavar="INPUT.jsonl", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--provider", required=True, help="Provider URL of the (first) step, or route:NAME.")
@click.option("--model", default=None, help="Model id of the (first) step (none for a route:NAME).")
@click.option("--options", "options_json", default=None, help="JSON object of options for every item.")
@click.option("--capability", "capability_name", default=None, help="Queue to use when the manifest does not say.")
@click.option("--then", "then", nargs=2, multiple=True, metavar="PROVIDER MODEL",
              help="A further pipeline step fed the previous step's output (repeatable).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Results, one JSON line per item.")
@click.option("--retry-failed", is_flag=True, help="Send items that failed in an earlier run again.")
@click.option("--summary", is_flag=True,
              help="Also run the batch summary callback and print its counts and failures (stderr, as the rest).")
@click.option("--timeout", type=float, default=None,
              help="Give up waiting after this many seconds (jobs keep running)  [default: wait until every item ends].")
@click.option("--budget", type=click.FloatRange(min=0), default=None, metavar="USD",
              help="Most the batch's calls may cost together; a job that would exceed it is refused before its call.")
def batch(input_file: Path, provider: str, model: str | None, options_json: str | None, capability_name: str | None,
          then: tuple[tuple[str, str], ...], out: Path, retry_failed: bool, summary: bool, timeout: float | None,
          budget: float | None) -> None:
    """Run every line of INPUT.jsonl through a model (or a pipeline); a re-run resumes.

    A line is a JSON string, {"input": ..., "options": {...}, "id": ...}, an asset object, or a list.
    Results go to --out as they finish; items already there (or finished in the result backend)
    are not sent again. Failed items are reported per item and do not stop the batch. Every step's
    queue must have a worker serving it, else nothing is sent.

    Exit code 0: every item succeeded; 1: some item failed or a line was skipped (counts on stderr);
    130: interrupted (the jobs keep running; the same command again resumes).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..batch import Batch, Step
    from ..batch.api import usd
    from .output import CommandError, on_interrupt
    from .waiting import require_workers
    from .worker import connect_broker

    console = Console(stderr=True, soft_wrap=True)
    options = _json_object(options_json, "--options")
    if capability_name:
        try:
            options["capability"] = strict_capability(capability_name).value
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--capability") from None
    items, bad, nonblank = read_jsonl(input_file)
    if nonblank == 0:
        raise click.ClickException(f"{input_file} is empty: no items to run")
    checked: list[InputItem] = []
    for item in items:
        err = _item_error(item)
        if err:
            bad.append(err)
        else:
            checked.append(item)
    for b in sorted(bad, key=lambda b: b.line):
        console.print(f"[yellow]{input_file} {b}[/] (skipped)", highlight=False)
    if not checked:
        raise click.ClickException(f"{input_file}: no valid items ({len(bad)} bad lines)")
    steps = [Step(absolute_provider(provider), model, options)] + [Step(absolute_provider(p), m or None, {})
                                                                   for p, m in then]
    queues = [check_step(s.provider, s.model, s.options) for s in steps]
    connect_broker()
    require_workers(queues)

    jobs = Batch(steps, budget_usd=budget)
    for item in checked:
        key = {"line": item.line, **({"id": item.key} if item.key is not None else {})}
        jobs.add(item.input, item.options, key=key)
    previous = read_results(out)
    skip = {jid for jid in jobs.jobs if jid in previous
            and (previous[jid].get("status") == "SUCCESS" or not retry_failed)}
    console.print(f"{len(checked)} items ({len(jobs.jobs)} distinct jobs) via {' | '.join(queues)}; "
                  f"{len(skip)} already in {out}", highlight=False)
    counts = {"SUCCESS": 0, "FAILURE": 0}
    priced = False
    on_interrupt(f"the batch's jobs keep running; the same command again resumes (results so far in {out})")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("sending", total=len(jobs.jobs) - len(skip))
        run = jobs.submit(skip=skip, retry_failed=retry_failed, summary=summary,
                          on_sent=lambda n: bar.update(task, description=f"sent {n}"))

        def show(p: Any) -> None:
            bar.update(task, completed=p.finished, description=str(p))

        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a", encoding="utf-8") as fh:
            for result in _until(run.iter_results(timeout=timeout, on_progress=show), out):
                fh.write(json.dumps(result.as_json(), ensure_ascii=False) + "\n")
                fh.flush()
                counts[result.status] += 1
                priced = priced or _priced(result.result)
                if result.status == "FAILURE":
                    where = ", ".join(f"line {k['line']}" for k in result.job.keys)
                    bar.console.print(f"[red]{where}: {result.error}[/]", highlight=False, markup=True)
    compact_results(out)
    spent_usd = run.spent_usd() or 0.0
    if spent_usd or budget is not None or priced:
        spent = usd(spent_usd) + (f" of {usd(budget)}" if budget is not None else "")
    else:
        spent = "unknown (no call was priced)"  # local models report no cost: not the same as $0
    if run.resent:
        console.print(f"[yellow]{len(run.resent)} jobs lost by the broker were sent again[/]: {', '.join(run.resent)}",
                      highlight=False)
    console.print(f"sent {run.sent}, succeeded {counts['SUCCESS']}, failed {counts['FAILURE']}, "
                  f"skipped (already in {out.name}) {len(skip)}, bad lines {len(bad)}; spent {spent}; results in {out}",
                  highlight=False)
    if summary:
        figures = run.summary()
        jobs_text = f"{figures['total']} job" + ("" if figures["total"] == 1 else "s")
        console.print(f"summary (the batch's callback): {jobs_text}, {figures['succeeded']} succeeded, "
                      f"{figures['failed']} failed; spent {usd(figures['spent_usd'] or 0.0)}", highlight=False)
        for job_id, error in figures["failures"].items():
            console.print(f"  {job_id}: {error}", highlight=False, markup=False)
    if counts["FAILURE"] or bad:
        raise CommandError(f"{counts['FAILURE']} of {len(jobs.jobs)} jobs failed, {len(bad)} of {nonblank} lines were "
                           f"skipped (see above and {out})")


def _priced(record: Any) -> bool:
    """Whether a result reports what its call cost (remote APIs and priced models put ``cost`` in its asset)."""
    asset = record.get("asset") if isinstance(record, dict) else None
    own = asset.get("metadata") if isinstance(asset, dict) else None
    return isinstance(own, dict) and isinstance(own.get("cost"), dict) and own["cost"].get("usd") is not None


def _until(results: Any, out: Path) -> Any:
    """The batch's results as they end; past ``--timeout``, one line saying what goes on."""
    try:
        yield from results
    except TimeoutError as exc:
        from .output import CommandError

        compact_results(out)
        raise CommandError(f"{exc} (--timeout); the jobs keep running, the same command again resumes") from None


def compact_results(path: Path) -> None:
    """Keep one line per job (the newest), so a resumed or retried run leaves no stale duplicates."""
    records = read_results(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in records.values():
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
