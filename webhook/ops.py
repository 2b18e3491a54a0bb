"""Operations: health, readiness, Prometheus metrics, and the runs API.

/healthz and /readyz are for Kubernetes probes and /metrics for Prometheus,
so they need no token; the runs API shows rollout details and does.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .app import service
from .errors import ApiError
from .reports import report_for
from .security import ANALYSIS_RE, RUN_ID_RE, check_token
from .store import RUN_STATUSES
from .verdicts import json_safe, summary

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """The process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready when the store answers and the session loop is alive."""
    svc = service()
    problems = []
    try:
        svc.store.ping()
    except Exception as exc:
        problems.append(f"store: {exc}")
    if not svc.sessions.loop_alive():
        problems.append("session loop stopped")
    if problems:
        resp = jsonify({"status": "not ready", "problems": problems})
        resp.status_code = 503
        return resp
    return jsonify({"status": "ready", "sessions": len(svc.sessions.active()),
                    "analyses": sorted(svc.settings.analyses)})


@bp.get("/metrics")
def metrics():
    return Response(generate_latest(service().metrics.registry), mimetype=CONTENT_TYPE_LATEST)


def _run_summary(run) -> dict:
    d = run.to_dict()
    verdict = d.pop("verdict")
    d.pop("state", None)  # the gate's sufficient statistics: internal
    d["verdict"] = None
    if verdict:
        from analyses.judge import Verdict

        d["verdict"] = summary(Verdict.from_dict(verdict))
    return json_safe(d)


@bp.get("/api/v1/runs")
def runs():
    svc = service()
    check_token(request, svc.settings.token)
    analysis = request.args.get("analysis")
    if analysis is not None and not ANALYSIS_RE.match(analysis):
        raise ApiError(400, "field 'analysis' is not a valid analysis name", "analysis")
    status = request.args.get("status")
    if status is not None and status not in RUN_STATUSES:
        raise ApiError(400, f"field 'status' must be one of {', '.join(RUN_STATUSES)}", "status")
    try:
        limit = int(request.args.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "field 'limit' must be an integer", "limit") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "field 'limit' must be between 1 and 1000", "limit")
    return jsonify({"runs": [_run_summary(r) for r in svc.store.list_runs(analysis, status, limit)]})


@bp.get("/api/v1/runs/<run_id>")
def run(run_id: str):
    svc = service()
    check_token(request, svc.settings.token)
    if not RUN_ID_RE.match(run_id):
        raise ApiError(400, "run id must look like run-<16 hex digits>", "run_id")
    rec = svc.store.get_run(run_id)
    if rec is None:
        raise ApiError(404, f"no run {run_id}", "run_id")
    body = _run_summary(rec)
    body["verdict_full"] = json_safe(rec.verdict) if rec.verdict else None
    body["live"] = svc.sessions.live(run_id) is not None
    body["windows"] = [json_safe(w.summary()) for w in svc.store.windows(run_id)]
    svc.sessions.flush_events()
    body["timeline"] = json_safe(svc.store.timeline(run_id))
    body["report"] = report_for(svc, run_id)  # what /reports/<run> shows, as data (webhook.reports)
    return jsonify(body)
