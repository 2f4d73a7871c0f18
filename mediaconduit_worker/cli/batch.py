"""``mediaconduit batch``: a JSONL file, or a folder of files, through a model or a pipeline, resumable, with a
progress bar; outputs written back as files with ``--save-outputs``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from ..batch.files import OutputNames, StoredFile, collect_files, line_file, output_suffix, save_output, store_files
from ..batch.jsonl import BadLine, InputItem, read_jsonl, read_results
from ..capabilities import capability as strict_capability
from ..capabilities import parse_capability
from ..errors import InvalidInputError


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
@click.argument("input_file", metavar="[INPUT.jsonl]", required=False,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--files", "files_spec", metavar="GLOB|DIR", default=None,
              help="One item per file of a folder (recursively) or a glob, instead of INPUT.jsonl: each file "
                   "stored in the blob store as audio, an image or a video by its content.")
@click.option("--allow-files", is_flag=True,
              help='Let INPUT.jsonl lines {"file": PATH} name local files, relative to its folder and never outside '
                   "it; each stored in the blob store as --files does.")
@click.option("--provider", required=True, help="Provider URL of the (first) step, or route:NAME.")
@click.option("--model", default=None, help="Model id of the (first) step (none for a route:NAME).")
@click.option("--options", "options_json", default=None, help="JSON object of options for every item.")
@click.option("--capability", "capability_name", default=None, help="Queue to use when the manifest does not say.")
@click.option("--then", "then", nargs=2, multiple=True, metavar="PROVIDER MODEL",
              help="A further pipeline step fed the previous step's output (repeatable).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Results, one JSON line per item.")
@click.option("--save-outputs", "save_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write each item's final output into this folder, named after its input (talk1.wav: talk1.txt).")
@click.option("--sidecar", is_flag=True, help="With --save-outputs: each output's result record beside it (talk1.txt.json).")
@click.option("--retry-failed", is_flag=True, help="Send items that failed in an earlier run again.")
@click.option("--summary", is_flag=True,
              help="Also run the batch summary callback and print its counts and failures (stderr, as the rest).")
@click.option("--timeout", type=float, default=None,
              help="Give up waiting after this many seconds (jobs keep running)  [default: wait until every item ends].")
@click.option("--budget", type=click.FloatRange(min=0), default=None, metavar="USD",
              help="Most the batch's calls may cost together; a job that would exceed it is refused before its call.")
def batch(input_file: Path | None, files_spec: str | None, allow_files: bool, provider: str, model: str | None, options_json: str | None,
          capability_name: str | None, then: tuple[tuple[str, str], ...], out: Path, save_dir: Path | None,
          sidecar: bool, retry_failed: bool, summary: bool, timeout: float | None, budget: float | None) -> None:
    """Run every line of INPUT.jsonl, or every file of --files, through a model (or a pipeline); a re-run resumes.

    A line is a JSON string, {"input": ..., "options": {...}, "id": ...}, an asset object, or a list;
    with --allow-files also {"file": PATH, "options": {...}, "id": ...}, PATH relative to INPUT.jsonl's
    folder and refused outside it (.., a symlink pointing out, an absolute path). With --files, each file is an item, its job id following from its bytes and the steps; files the
    blob store holds are not written again. Results go to --out as they finish; items already there
    (or finished in the result backend) are not sent again. Failed items are reported per item and do
    not stop the batch. Every step's queue must have a worker serving it, else nothing is sent.

    Exit code 0: every item succeeded; 1: some item failed (now or in an earlier run) or a line was
    skipped (counts on stderr); 130: interrupted (the jobs keep running; the same command again resumes).
    """
    from rich.console import Console

    from ..batch import Batch, Step
    from ..blobs import BlobStore
    from .waiting import require_workers
    from .worker import connect_broker

    if (input_file is None) == (files_spec is None):
        raise click.UsageError("give INPUT.jsonl or --files GLOB|DIR (one of them)")
    if allow_files and input_file is None:
        raise click.UsageError("--allow-files lets INPUT.jsonl lines name files; --files names them itself")
    if sidecar and save_dir is None:
        raise click.UsageError("--sidecar writes beside the outputs of --save-outputs DIR; give that too")
    console = Console(stderr=True, soft_wrap=True)
    options = _json_object(options_json, "--options")
    if capability_name:
        try:
            options["capability"] = strict_capability(capability_name).value
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--capability") from None
    steps = [Step(absolute_provider(provider), model, options)] + [Step(absolute_provider(p), m or None, {})
                                                                   for p, m in then]
    jobs = Batch(steps, budget_usd=budget)
    store = BlobStore()
    intake: _Intake | None = None
    if files_spec is not None:
        paths, base = collect_files(files_spec)
        queues = _check_steps(steps)
        bad: list[BadLine] = []
        lines: int | None = None  # no lines: a file that is not media is a failed item
        intake = _store_with_progress(console, paths, store)
        for stored in intake.files:
            key = {"file": stored.path.relative_to(base).as_posix()}
            if stored.asset is None:
                jobs.add_refused(key, stored.error or "not stored", key=key)
            else:
                jobs.add(stored.asset, key=key)
    else:
        assert input_file is not None
        items, bad, lines = read_jsonl(input_file)
        if lines == 0:
            raise click.ClickException(f"{input_file} is empty: no items to run")
        checked: list[InputItem] = []
        files: list[tuple[InputItem, Path]] = []
        for item in items:
            found = _item_error(item) or (_line_file(item, input_file.absolute().parent, allow_files)
                                          if item.file is not None else None)
            if isinstance(found, BadLine):
                bad.append(found)
            elif found is not None:
                files.append((item, found))
            else:
                checked.append(item)
        for b in sorted(bad, key=lambda b: b.line):
            console.print(f"[yellow]{input_file} {b}[/] (skipped)", highlight=False)
        if not checked and not files:
            raise click.ClickException(f"{input_file}: no valid items ({len(bad)} bad lines)")
        queues = _check_steps(steps)
        intake = _store_with_progress(console, [path for _, path in files], store) if files else None
        for item in checked:
            jobs.add(item.input, item.options, key=_line_key(item))
        for (item, _), stored in zip(files, intake.files if intake else []):
            key = {**_line_key(item), "file": Path(os.path.normpath(str(item.file))).as_posix()}  # as the line names it
            if stored.asset is None:
                jobs.add_refused(key, stored.error or "not stored", key=key)
            else:
                jobs.add(stored.asset, item.options, key=key)
    names = OutputNames(Path(k["file"]) for j in jobs.jobs.values() for k in j.keys if "file" in k)
    connect_broker()
    require_workers(queues)
    saver = _Saver(save_dir, names, sidecar, store) if save_dir is not None else None
    _run(jobs, queues, out, console, retry_failed=retry_failed, summary=summary, timeout=timeout, budget=budget,
         bad=bad, lines=lines, intake=intake, saver=saver)


def _line_key(item: InputItem) -> dict[str, Any]:
    """What names a JSONL item in the results: its line, and its ``id`` when it has one."""
    return {"line": item.line, **({"id": item.key} if item.key is not None else {})}


def _line_file(item: InputItem, folder: Path, allowed: bool) -> Path | BadLine:
    """The file a ``{"file": PATH}`` line names, or why the line is skipped (no ``--allow-files``, or a
    path outside the JSONL file's folder)."""
    assert item.file is not None
    if not allowed:
        return BadLine(item.line, f"names the local file {item.file!r}: JSONL lines may name files only with "
                                  "--allow-files")
    try:
        return line_file(folder, item.file)
    except InvalidInputError as exc:
        return BadLine(item.line, str(exc))


def _check_steps(steps: list[Any]) -> list[str]:
    """Each step's queue, or a clear error before anything is stored or queued."""
    return [check_step(s.provider, s.model, s.options) for s in steps]


class _Intake:
    """What storing the input files did: each file's outcome and the bytes written (a file that is
    not media is reported as its item's failure, with the others')."""

    def __init__(self) -> None:
        self.files: list[StoredFile] = []
        self.written = 0
        self.new = 0

    def __str__(self) -> str:
        refused = sum(f.error is not None for f in self.files)
        kept = len(self.files) - self.new - refused
        return f"stored {_mb(self.written)} ({self.new} new files, {kept} already in the blob store, {refused} not media)"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _store_with_progress(console: Any, paths: list[Path], store: Any) -> _Intake:
    """Every file stored (or found stored) with a bar of the bytes read and written."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from .output import on_interrupt

    intake = _Intake()
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:
            pass  # store_files names the file
    on_interrupt("nothing was sent yet; the same command again resumes (files stored so far are not written again)")
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("storing files", total=total)
        done = 0
        for stored in store_files(paths, store, on_bytes=lambda n: bar.advance(task, n)):
            intake.files.append(stored)
            intake.written += stored.written
            intake.new += stored.written > 0
            try:
                done += stored.path.stat().st_size
            except OSError:
                pass
            bar.update(task, completed=done, description=f"files {len(intake.files)}/{len(paths)}, written "
                                                         f"{_mb(intake.written)}")
    return intake


class _Saver:
    """``--save-outputs``: each succeeded item's final output written after its input (a file's name; a
    JSONL line's ``id``, else ``line-N``), its record beside it with ``--sidecar``."""

    def __init__(self, folder: Path, names: OutputNames, sidecar: bool, store: Any) -> None:
        self.folder, self.names, self.sidecar, self.store = folder, names, sidecar, store
        self.saved = 0

    def targets(self, keys: list[Any], record: dict[str, Any]) -> list[Path]:
        suffix = output_suffix(record)
        rels = []
        for key in keys:
            if isinstance(key, dict) and "file" in key:
                rels.append(self.names.name(Path(key["file"]), suffix))
            elif isinstance(key, dict) and key.get("id") is not None:
                rels.append(Path(_safe_name(str(key["id"])) + suffix))
            elif isinstance(key, dict):
                rels.append(Path(f"line-{key.get('line')}{suffix}"))
        return [self.folder / rel for rel in rels]

    def save(self, keys: list[Any], record: dict[str, Any], only_missing: bool = False) -> None:
        for target in self.targets(keys, record):
            if only_missing and target.exists() and (not self.sidecar or target.with_name(target.name + ".json").exists()):
                continue
            save_output(record, target, self.sidecar, self.store)
            self.saved += 1


def _safe_name(text: str) -> str:
    """A JSONL ``id`` as one file name (no folders, nothing hidden)."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:200].lstrip(".")
    return name or "_"


def _run(jobs: Any, queues: list[str], out: Path, console: Any, *, retry_failed: bool, summary: bool,
         timeout: float | None, budget: float | None, bad: list[BadLine], lines: int | None, intake: _Intake | None,
         saver: _Saver | None) -> None:
    """Send what is not done yet, write results as they end (and outputs with --save-outputs), report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..batch.api import usd
    from .output import CommandError, on_interrupt

    previous = read_results(out)
    skip = {jid for jid in jobs.jobs if jid in previous
            and (previous[jid].get("status") == "SUCCESS" or not retry_failed)}
    failed_before = sum(previous[jid].get("status") != "SUCCESS" for jid in skip)
    console.print(f"{sum(len(j.keys) or 1 for j in jobs.jobs.values())} items ({len(jobs.jobs)} distinct jobs) via "
                  f"{' | '.join(queues)}; {len(skip)} already in {out}", highlight=False)
    if saver is not None:
        for jid in skip:
            if previous[jid].get("status") == "SUCCESS":
                saver.save(jobs.jobs[jid].keys, previous[jid]["result"], only_missing=True)
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
                    where = ", ".join(_where(k) for k in result.job.keys)
                    bar.console.print(f"[red]{where}: {result.error}[/]", highlight=False, markup=True)
                elif saver is not None:
                    try:
                        saver.save(result.job.keys, result.result or {})
                    except InvalidInputError as exc:
                        raise CommandError(f"{', '.join(_where(k) for k in result.job.keys)}: {exc}") from None
    compact_results(out)
    spent_usd = run.spent_usd() or 0.0
    if spent_usd or budget is not None or priced:
        spent = usd(spent_usd) + (f" of {usd(budget)}" if budget is not None else "")
    else:
        spent = "unknown (no call was priced)"  # local models report no cost: not the same as $0
    if run.resent:
        console.print(f"[yellow]{len(run.resent)} jobs lost by the broker were sent again[/]: {', '.join(run.resent)}",
                      highlight=False)
    stored = f"{intake}; " if intake is not None else ""
    saved = f"; {saver.saved} outputs written to {saver.folder}" if saver is not None else ""
    console.print(f"{stored}sent {run.sent}, succeeded {counts['SUCCESS']}, failed {counts['FAILURE']}, "
                  f"skipped (already in {out.name}) {len(skip)}, bad lines {len(bad)}; spent {spent}; results in "
                  f"{out}{saved}", highlight=False)
    if summary:
        figures = run.summary()
        jobs_text = f"{figures['total']} job" + ("" if figures["total"] == 1 else "s")
        console.print(f"summary (the batch's callback): {jobs_text}, {figures['succeeded']} succeeded, "
                      f"{figures['failed']} failed; spent {usd(figures['spent_usd'] or 0.0)}", highlight=False)
        for job_id, error in figures["failures"].items():
            console.print(f"  {job_id}: {error}", highlight=False, markup=False)
    failed = counts["FAILURE"] + failed_before
    if failed or bad:
        earlier = f" ({failed_before} in an earlier run; --retry-failed sends them again)" if failed_before else ""
        skipped = f", {len(bad)} of {lines} lines were skipped" if lines is not None else ""
        raise CommandError(f"{failed} of {len(jobs.jobs)} jobs failed{earlier}{skipped} (see above and {out})")


def _where(key: Any) -> str:
    """An item as its failure line names it: its file, else its JSONL line."""
    if isinstance(key, dict) and "file" in key:
        return str(key["file"])
    return f"line {key['line']}" if isinstance(key, dict) and "line" in key else str(key)


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
