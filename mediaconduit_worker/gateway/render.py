"""The job pages' HTML (``pages.py`` serves it): built by ``h``, which escapes every text and attribute value it
is given, so a job's input, output, options or error shows as text and never as markup. Only ``Html``
(``h``'s own output and this module's constants) goes in unescaped.

The live part of a job's page is one inline script (below, ``LIVE``): it follows the job's events with the
browser's ``EventSource``, writes status, progress, log lines and output chunks with ``textContent``, and once
the job has finished fetches the page again and swaps the server's rendering in (no reload). It runs only
with the page's CSP nonce; the script of a page fetched that way never runs.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlencode

from .records import FINISHED, STATUSES

TEXT_SHOWN = 20_000
"""Characters of a text result shown on its page (the whole record is in the API)."""
INPUT_SHOWN = 500
"""Characters of a prompt's text input shown in the prompt tree."""


class Html(str):
    """Markup that is safe as it is: ``h``'s output, never a value from a request or a record."""


def esc(value: Any) -> Html:
    return Html(html.escape(str(value), quote=True))


def _children(parts: Iterable[Any]) -> str:
    out: list[str] = []
    for part in parts:
        if part is None or part is False:
            continue
        if isinstance(part, Html):
            out.append(part)
        elif isinstance(part, list | tuple):
            out.append(_children(part))
        else:
            out.append(esc(part))
    return "".join(out)


VOID = frozenset({"img", "input", "meta", "br", "source"})


def h(tag: str, *children: Any, **attrs: Any) -> Html:
    """``<tag attrs>children</tag>``: attribute values and text children escaped (``class_`` is ``class``,
    ``data_x`` is ``data-x``; an attribute None or False is left out, True is written bare)."""
    written = []
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        name = name.rstrip("_").replace("_", "-")
        written.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    start = f"<{tag}{''.join(written)}>"
    if tag in VOID:
        return Html(start)
    return Html(f"{start}{_children(children)}</{tag}>")


STYLE = Html("""
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{display:flex;gap:1em;align-items:center;padding:.6em 1.2em;background:#1d3557;color:#fff}
header a{color:#fff;text-decoration:none;font-weight:600}header form{margin-left:auto}
main{max-width:72em;margin:1.2em auto;padding:0 1.2em}
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;padding:.35em .6em;
border-bottom:1px solid #dde1e6;vertical-align:top}th{background:#eef1f4;font-weight:600}
code,pre{font:13px/1.4 ui-monospace,monospace}pre{white-space:pre-wrap;word-break:break-word;background:#fff;
border:1px solid #dde1e6;padding:.6em;margin:.3em 0}dl{display:grid;grid-template-columns:max-content 1fr;
gap:.25em 1em;background:#fff;padding:.8em;border:1px solid #dde1e6}dt{font-weight:600}dd{margin:0}
.status{display:inline-block;padding:0 .5em;border-radius:.7em;background:#ccd3da}
.status[data-status=succeeded]{background:#b7e4c7}.status[data-status=running]{background:#ffe8a1}
.status[data-status=failed],.status[data-status=canceled],.status[data-status=expired]{background:#f4b6b6}
.tree,.tree ul{list-style:none;padding-left:1.2em;border-left:2px solid #c5ccd4}.tree{padding-left:.8em}
.tree li{margin:.4em 0}.step{background:#fff;border:1px solid #dde1e6;padding:.4em .6em}
#steps{overflow-x:auto}.attempts{font-size:13px}.error{background:#fde8e8;border:1px solid #f4b6b6;padding:.6em}.muted{color:#5c6670}
nav.filters a{margin-right:.7em}img.preview,video{max-width:100%;max-height:30em;background:#fff;border:1px solid #dde1e6}
form.login{background:#fff;border:1px solid #dde1e6;padding:1em;max-width:30em}input[type=password]{width:100%}
""")

LIVE = Html("""
(() => {
  const root = document.getElementById("job");
  if (!root || !root.dataset.events) return;
  const steps = Number(root.dataset.steps || "1");
  const finals = ["failed", "canceled", "expired"];
  const source = new EventSource(root.dataset.events);
  const el = (id) => document.getElementById(id);
  const show = (id) => { const e = el(id); if (e) e.hidden = false; return e; };
  const step = (event) => event.lastEventId.includes(":") ? Number(event.lastEventId.split(":")[0]) : 0;
  async function refresh() {
    const reply = await fetch(location.href, {credentials: "same-origin", cache: "no-store"});
    const page = new DOMParser().parseFromString(await reply.text(), "text/html");
    const fresh = page.getElementById("job");
    if (fresh) document.getElementById("job").replaceWith(document.adoptNode(fresh));
  }
  source.addEventListener("status", (event) => {
    const data = JSON.parse(event.data);
    const status = el("status");
    status.textContent = data.status;
    status.dataset.status = data.status;
    if (finals.includes(data.status) || (data.status === "succeeded" && step(event) === steps - 1)) {
      source.close();
      refresh();
    }
  });
  source.addEventListener("progress", (event) => {
    const data = JSON.parse(event.data);
    show("progress").textContent = `${data.done} / ${data.total}${data.message ? " " + data.message : ""}`;
  });
  source.addEventListener("log", (event) => { show("log").textContent += JSON.parse(event.data).line + "\\n"; });
  source.addEventListener("output", (event) => {
    const data = JSON.parse(event.data);
    if (typeof data.chunk === "string") show("output").textContent += data.chunk;
  });
  source.addEventListener("error", (event) => {
    if (event.data) show("live-error").textContent = JSON.parse(event.data).detail || "the event stream failed";
  });
})();
""")


def document(title: str, body: Html, nonce: str, tenant: str | None, script: bool = False) -> str:
    """A whole page: its head (the style, under the CSP ``nonce``), the header with the tenant and sign-out,
    and ``body``; the live script too when ``script``."""
    bar = [h("a", "MediaConduit jobs", href="/jobs")]
    if tenant is not None:
        bar.append(h("span", "tenant ", h("strong", tenant)))
        bar.append(h("form", h("button", "Sign out", type="submit"), method="post", action="/logout"))
    return "<!doctype html>" + h(
        "html",
        h("head", h("meta", charset="utf-8"), h("meta", name="viewport", content="width=device-width, initial-scale=1"),
          h("title", title), h("style", STYLE, nonce=nonce)),
        h("body", h("header", *bar), h("main", body), h("script", LIVE, nonce=nonce) if script else None),
        lang="en")


def status_badge(status: str, element_id: str | None = None) -> Html:
    return h("span", status, class_="status", data_status=status, id=element_id)


def when(iso: str | None) -> str:
    """An ISO 8601 UTC time as ``2026-12-04 18:03:12 UTC`` (``-`` for none)."""
    if not iso:
        return "-"
    return iso.replace("T", " ").split(".")[0].removesuffix("+00:00") + " UTC"


def usd(value: float | None) -> str:
    """A cost in USD to the micro-dollar, trailing zeros dropped (``-`` for none priced)."""
    if value is None:
        return "-"
    return "$" + (f"{value:.6f}".rstrip("0").rstrip(".") or "0")


def job_href(job_id: str) -> str:
    return "/jobs/" + quote(job_id, safe="")


def login_page(nonce: str, next_path: str, error: str | None = None) -> str:
    form = h("form",
             h("p", h("label", "API key", h("br"), h("input", type="password", name="key", required=True,
                                                     autocomplete="current-password", autofocus=True))),
             h("input", type="hidden", name="next", value=next_path),
             h("button", "Sign in", type="submit"),
             method="post", action="/login", class_="login")
    body = h("div", h("h1", "Sign in"),
             h("p", "Sign in with your tenant's API key (", h("code", "mediaconduit keys create --tenant NAME"),
               " makes one). The browser keeps a session cookie, not the key."),
             h("p", error, class_="error") if error else None, form)
    return document("Sign in", body, nonce, None)


def error_page(nonce: str, tenant: str | None, status: int, title: str, detail: str) -> str:
    body = h("div", h("h1", title), h("p", detail, class_="error"), h("p", h("a", "All jobs", href="/jobs")))
    return document(f"{status} {title}", body, nonce, tenant)


def list_page(nonce: str, tenant: str, jobs: list[dict[str, Any]], status: list[str] | None,
              next_cursor: str | None, limit: int) -> str:
    filters = [h("a", "all", href="/jobs")] + [
        h("a", s, href="/jobs?" + urlencode({"status": s}), aria_current="page" if status == [s] else None)
        for s in STATUSES]
    rows = [h("tr",
              h("td", status_badge(job["status"])),
              h("td", h("a", h("code", job["id"]), href=job_href(job["id"]))),
              h("td", job["provider"]),
              h("td", job["model"] or "-"),
              h("td", when(job["created_at"])),
              h("td", usd(job["cost_usd"])),
              data_job=job["id"])
            for job in jobs]
    table = h("table",
              h("thead", h("tr", *(h("th", c) for c in ("status", "job", "provider / route", "model", "created", "cost")))),
              h("tbody", *rows) if rows else h("tbody", h("tr", h("td", "No jobs.", colspan="6"))),
              id="jobs")
    more = None
    if next_cursor is not None:
        query = [("status", s) for s in status or []] + [("limit", str(limit)), ("cursor", next_cursor)]
        more = h("p", h("a", "Older jobs →", href="/jobs?" + urlencode(query), rel="next", id="next"))
    body = h("div", h("h1", "Jobs"), h("nav", "Status: ", *filters, class_="filters"), table, more)
    return document("Jobs", body, nonce, tenant)


def _field(name: str, value: Any) -> Html:
    return Html(h("dt", name) + h("dd", value))


def _json(value: Any) -> Html:
    return h("pre", json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _assets(result: Any) -> list[dict[str, Any]]:
    asset = result.get("asset") if isinstance(result, dict) else None
    if isinstance(asset, list):
        return [a for a in asset if isinstance(a, dict)]
    return [asset] if isinstance(asset, dict) else []


def file_href(asset: dict[str, Any]) -> str | None:
    """The page's own download route for a blob asset (None when the asset names no blob)."""
    digest = asset.get("sha256") or str(asset.get("uri", "")).removeprefix("blob://sha256/")
    if isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
        return f"/files/{digest}"
    return None


def preview(asset: dict[str, Any]) -> Html:
    """A result asset as a person sees it: text, an image, an audio or a video player, else a download link."""
    kind = asset.get("type")
    if kind == "text":
        text = str(asset.get("content", ""))
        cut = len(text) > TEXT_SHOWN
        return h("div", h("pre", text[:TEXT_SHOWN], class_="result-text"),
                 h("p", f"(first {TEXT_SHOWN:,} of {len(text):,} characters)", class_="muted") if cut else None)
    href = file_href(asset)
    if href is None:
        return h("p", "No preview for this result.", class_="muted")
    about = h("p", h("a", "Download", href=href, download=True), " ",
              h("span", f"{asset.get('mime_type') or 'application/octet-stream'}, {asset.get('size') or '?'} bytes",
                class_="muted"))
    if kind == "image":
        media = h("img", src=href, alt="the job's image output", class_="preview")
    elif kind == "audio":
        media = h("audio", "Your browser cannot play this audio.", src=href, controls=True, preload="metadata")
    elif kind == "video":
        media = h("video", "Your browser cannot play this video.", src=href, controls=True, preload="metadata")
    else:
        media = None
    return h("div", media, about, class_=f"result-{kind}")


def _commit(prompt: dict[str, Any]) -> str | None:
    source = prompt.get("source")
    if not isinstance(source, dict):
        source = {}
    return source.get("commit") or source.get("version") or prompt.get("provider_commit")


def _input_node(value: Any) -> Html:
    """A prompt's input: text (cut), or an asset with its own prompt nested under it (a chain), or a list."""
    if isinstance(value, list):
        return h("ul", *(h("li", _input_node(v)) for v in value))
    if isinstance(value, dict):
        kind = value.get("type", "asset")
        nested = ((value.get("metadata") or {}).get("generation_prompt") if isinstance(value.get("metadata"), dict)
                  else None)
        if kind == "text":
            label = h("span", "input text: ", h("q", _cut(str(value.get("content", "")))))
        else:
            label = h("span", f"input {kind}: ", h("code", value.get("sha256") or value.get("uri") or "-"))
        return h("div", label, h("ul", prompt_node(nested)) if isinstance(nested, dict) else None)
    return h("span", "input: ", h("q", _cut(str(value))))


def _cut(text: str) -> str:
    return text if len(text) <= INPUT_SHOWN else text[:INPUT_SHOWN] + "…"


def prompt_node(prompt: dict[str, Any]) -> Html:
    """One step of the generation-prompt chain and, nested under it, the steps its input came from."""
    model = prompt.get("model_id") or prompt.get("model") or "-"
    name = prompt.get("model_name")
    service = prompt.get("service") if isinstance(prompt.get("service"), dict) else None
    facts = h("dl",
              _field("provider", prompt.get("provider") or "-"),
              _field("model", f"{model} ({name})" if name and name != model else model),
              _field("capability", prompt.get("capability") or prompt.get("transformation_type") or "-"),
              _field("route", prompt["route"]) if prompt.get("route") else None,
              _field("provider URL", prompt.get("provider_url") or "-"),
              _field("commit", h("code", _commit(prompt) or "-")),
              _field("service", h("code", f"{service.get('id') or service.get('url') or ''} @ {service.get('commit') or '-'}"))
              if service else None,
              _field("made at", when(prompt.get("timestamp"))),
              _field("options", _json(prompt.get("options") or {})),
              class_="step-facts")
    return h("li", h("div", facts, class_="step"), _input_node(prompt.get("input")), class_="prompt")


def _attempts_table(attempts: list[dict[str, Any]]) -> Html:
    rows = [h("tr", h("td", a.get("candidate")), h("td", a.get("provider") or "-"), h("td", a.get("model") or "-"),
              h("td", a.get("error") or ("skipped: " + str(a["skipped"]) if a.get("skipped") else "served")),
              h("td", a.get("status") if a.get("status") is not None else "-"),
              h("td", f"{a['duration_ms']:.0f} ms" if isinstance(a.get("duration_ms"), int | float) else "-"),
              h("td", a.get("message") or ""),
              class_="attempt")
            for a in attempts if isinstance(a, dict)]
    head = h("tr", *(h("th", c) for c in ("candidate", "provider", "model", "outcome", "HTTP", "took", "message")))
    return h("table", h("thead", head), h("tbody", *rows), class_="attempts")


def job_page(nonce: str, tenant: str, job: dict[str, Any], events_url: str) -> str:
    live = job["status"] not in FINISHED
    facts = h("dl",
              _field("status", status_badge(job["status"], "status")),
              _field("queue position", job["queue_position"]) if job.get("queue_position") is not None else None,
              _field("provider / route", job["provider"]),
              _field("model", job["model"] or "-"),
              _field("created", when(job["created_at"])),
              _field("completed", when(job["completed_at"])),
              _field("cost", h("span", usd(job["cost_usd"]), id="cost")),
              _field("deliveries", h("span", job["attempts"], title="runs of all steps, retries included")),
              id="facts")
    error = job.get("error")
    failed = h("div", h("strong", error.get("type") or "error"), ": ", error.get("message") or "",
               class_="error", id="error") if error else None
    stream = h("section",
               h("p", "", id="progress", hidden=True), h("pre", "", id="output", hidden=True),
               h("pre", "", id="log", hidden=True), h("p", "", id="live-error", class_="error", hidden=True),
               id="live") if live else None
    result = job.get("result")
    outputs = h("section", h("h2", "Result"), *(preview(a) for a in _assets(result)), id="result") if result else None
    steps = []
    for k, step in enumerate(job["steps"]):
        attempts = step.get("attempts") or []
        steps.append(h("tr", h("td", k + 1), h("td", h("code", step["task_id"])), h("td", status_badge(step["status"])),
                       h("td", step["retries"]), h("td", step["worker"] or "-"), h("td", when(step["completed_at"])),
                       h("td", _attempts_table(attempts) if attempts else "-"), class_="step-row"))
    steps_table = h("section", h("h2", "Steps"), h("table", h("thead", h("tr", *(
        h("th", c) for c in ("#", "task", "status", "retries", "worker", "completed", "failover attempts")))),
        h("tbody", *steps), id="steps"))
    prompt = (result.get("metadata") or {}).get("generation_prompt") if isinstance(result, dict) else None
    tree = h("section", h("h2", "Generation prompt"),
             h("p", "The last step first; under each step, the input it was given and the steps that made it.",
               class_="muted"),
             h("ul", prompt_node(prompt), class_="tree", id="prompt")) if isinstance(prompt, dict) else None
    record = h("section", h("details", h("summary", "The result record (JSON)"), _json(result)),
               id="record") if result else None
    body = h("div", h("h1", "Job ", h("code", job["id"])), facts, failed, stream, outputs, steps_table, tree, record,
             id="job", data_events=events_url if live else None, data_steps=len(job["steps"]), data_status=job["status"])
    return document(f"Job {job['id']}", body, nonce, tenant, script=live)
