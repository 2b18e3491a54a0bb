"""Reports for the SRE who reviews a rollout: `/reports` and `/reports/<run>`, HTML without JavaScript.

| route                          | what                                                              |
|--------------------------------|-------------------------------------------------------------------|
| GET /reports                   | every run, newest first; filters namespace, name, analysis,       |
|                                | caller, outcome (pass/fail/continue), status; `limit`             |
| GET /reports/<run>             | one run: the decision in words, evidence per check, latency,      |
|                                | load, errors, accuracy, predictions, windows, timeline            |
|                                | (`?format=json` or `?format=text`: the same report)               |
| GET /reports/<run>/drift?kind= | evidently's drift report: `inputs` (vs the reference set) or      |
|                                | `predictions` (canary vs stable scores)                           |

The same report is in the runs API (`/api/v1/runs/<run>`, key "report")
and in `shadowgate report`. Reports need the token when auth is on, in the
hooks' two forms: `Authorization: Bearer <token>`, or basic auth with the
token as password (a browser asks for it: a 401 here says
`WWW-Authenticate: Basic`). Run ids are validated; an unknown run is a 404
page. Errors are HTML pages here, JSON everywhere else.

Argo's web provider has no hook of its own for the timeline: every Argo
answer that names a run is added to that run's timeline here, after the
answer is made (`argo:analysis`, with its decision), so a report shows
Argo's calls as it shows Flagger's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, jsonify, request

from .app import Service, service
from .errors import ApiError
from .reporting import html, text
from .reporting.drift import KINDS as DRIFT_KINDS
from .reporting.drift import DriftReports, NoDriftData
from .reporting.drift import available as drift_available
from .reporting.model import DigestCache, build_report, run_row
from .reporting.source import ReportSource, RunFilter
from .security import ANALYSIS_RE, NAME_RE, NAMESPACE_RE, RUN_ID_RE, check_token
from .store import RUN_STATUSES
from .verdicts import one_line, report_url

bp = Blueprint("reports", __name__)

MAX_LIST = 1000


@dataclass
class Reports:
    """What the reports keep per app: the read side of the store and the caches."""

    source: ReportSource
    cache: DigestCache
    drift: DriftReports


_init_lock = threading.Lock()


def reports_of(svc: Service) -> Reports:
    """The app's report state, made on first use (nothing happens at import or app creation)."""
    ext = current_app.extensions
    st = ext.get("shadowgate.reports")
    if st is None:
        with _init_lock:
            st = ext.get("shadowgate.reports")
            if st is None:
                st = ext["shadowgate.reports"] = Reports(ReportSource(svc.store), DigestCache(), DriftReports())
    return st


def report_for(svc: Service, run_id: str) -> dict | None:
    """The report of one run (model.build_report), or None when there is no such run."""
    st = reports_of(svc)
    return build_report(st.source, run_id, live=svc.sessions.live(run_id) is not None, cache=st.cache,
                        url=report_url(svc, run_id), timeline_flush=svc.sessions.flush_events)


# ------------------------------------------------------------------ auth and errors


@bp.before_request
def _authorize() -> None:
    check_token(request, service().settings.token)


@bp.errorhandler(ApiError)
def _error(err: ApiError):
    resp = Response(html.error_page(err.status, err.message), status=err.status, mimetype="text/html")
    if err.status == 401:
        resp.headers["WWW-Authenticate"] = 'Basic realm="Shadowgate reports", charset="UTF-8"'
    return resp


def _run_id(run_id: str) -> str:
    if not RUN_ID_RE.match(run_id):
        raise ApiError(400, "not a run id: run ids look like run-<16 hex digits>", "run_id")
    return run_id


def _html(body: str) -> Response:
    resp = Response(body, mimetype="text/html")
    # The page is built from the store on each request; nothing from elsewhere may run in it.
    resp.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"
    resp.headers["Cache-Control"] = "no-store"
    return resp


# ------------------------------------------------------------------ routes


_FILTERS = {"namespace": (NAMESPACE_RE, "Kubernetes namespace"), "name": (NAME_RE, "Kubernetes object name"),
            "analysis": (ANALYSIS_RE, "analysis name")}


@bp.get("/reports")
def runs_page():
    svc = service()
    flt: dict[str, str | None] = {}
    for key, (pattern, what) in _FILTERS.items():
        v = request.args.get(key) or None
        if v is not None and not pattern.match(v):
            raise ApiError(400, f"filter {key!r} is not a valid {what}", key)
        flt[key] = v
    for key, allowed in (("caller", html.CALLERS), ("outcome", html.OUTCOMES), ("status", RUN_STATUSES)):
        v = request.args.get(key) or None
        if v is not None and v not in allowed:
            raise ApiError(400, f"filter {key!r} must be one of {', '.join(allowed)}", key)
        flt[key] = v
    try:
        limit = int(request.args.get("limit") or 200)
    except ValueError:
        raise ApiError(400, "limit must be an integer", "limit") from None
    if not 1 <= limit <= MAX_LIST:
        raise ApiError(400, f"limit must be between 1 and {MAX_LIST}", "limit")
    rows = [run_row(r) for r in reports_of(svc).source.runs(RunFilter(**flt), limit)]
    if request.args.get("format") == "json":
        return jsonify({"runs": rows})
    return _html(html.list_page(rows, flt, RUN_STATUSES, limit))


@bp.get("/reports/<run_id>")
def run_page(run_id: str):
    svc = service()
    rep = report_for(svc, _run_id(run_id))
    if rep is None:
        raise ApiError(404, f"no run {run_id}: it never existed here, or retention deleted it", "run_id")
    fmt = request.args.get("format", "html")
    if fmt == "json":
        return jsonify(rep)
    if fmt == "text":
        return Response(text.render(rep), mimetype="text/plain")
    if fmt != "html":
        raise ApiError(400, "format must be html, json or text", "format")
    analysis = svc.settings.analyses.get(rep["run"]["analysis"])
    kinds = [(k, label) for k, label in DRIFT_KINDS.items()
             if k != "inputs" or (analysis is not None and analysis.reference_inputs is not None)]
    if not drift_available():
        kinds = []
    return _html(html.run_page(rep, kinds))


@bp.get("/reports/<run_id>/drift")
def drift_page(run_id: str):
    svc = service()
    st = reports_of(svc)
    run = st.source.run(_run_id(run_id))
    if run is None:
        raise ApiError(404, f"no run {run_id}", "run_id")
    kind = request.args.get("kind", "predictions")
    if kind not in DRIFT_KINDS:
        raise ApiError(400, f"kind must be one of {', '.join(DRIFT_KINDS)}", "kind")
    analysis = svc.settings.analyses.get(run.analysis)
    reference = analysis.reference_inputs if analysis is not None else None
    try:
        body = st.drift.html(st.source, run_id, kind, reference)
    except NoDriftData as exc:
        raise ApiError(404, f"no {DRIFT_KINDS[kind]} report for {run_id}: {exc}", "kind") from None
    # evidently's report inlines its scripts and styles; it is served as it is, on its own page.
    resp = Response(body, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/reports/<path:rest>")
def elsewhere(rest: str):
    """Any other path under /reports: an HTML 404 like the others, not the API's JSON."""
    raise ApiError(404, "no such report page: reports are at /reports and /reports/<run id>", "path")


# ------------------------------------------------------------------ Argo calls in the timeline


@bp.after_app_request
def _record_argo_call(resp: Response) -> Response:
    if request.blueprint != "argo" or resp.status_code != 200 or not resp.is_json:
        return resp
    try:
        body = resp.get_json(silent=True) or {}
        run_id = body.get("run")
        if run_id and RUN_ID_RE.match(str(run_id)):
            service().sessions.event(run_id, "argo:analysis",
                                     f"200: {body.get('decision')}: {one_line(body.get('reason'), 300)}",
                                     {"status": 200, "decision": body.get("decision"), "phase": body.get("phase")})
    except Exception:  # the timeline must never cost Argo its answer
        current_app.logger.exception("recording an Argo call in the timeline")
    return resp
