"""Argo Rollouts web provider: `GET|POST /argo/v1/analyses/<analysis>?rollout=..&revision=..`.

Argo treats any status outside 200-299 as a measurement *Error* and never
evaluates its conditions, so every verdict (pass, fail, no data) is a 200
with the verdict in the JSON body; use
`successCondition: result.passed == true`. Only caller mistakes are errors:
unknown analysis 404, missing `rollout`/`revision` 400, token 401,
namespace 403.

scope=window (default): the verdict of the windows closed since Argo's last
call (the first call checks the whole golden set at once); when nothing new
closed, the verdict over the whole run so far. scope=run: always the whole
run. rate=N asks for N requests/s of load from now on (capped by the
analysis' `load.max_rate`).
"""

from __future__ import annotations

import concurrent.futures
import math
from typing import Any

from flask import Blueprint, g, jsonify, request

from .app import service
from .errors import ApiError
from .security import (ANALYSIS_RE, NAME_RE, NAMESPACE_RE, REVISION_RE, check_namespace, check_token, identifier,
                       json_object)
from .sessions import nodata_verdict
from .verdicts import argo_body

bp = Blueprint("argo", __name__)


@bp.before_request
def _authorize() -> None:
    check_token(request, service().settings.token)


def _params() -> dict[str, Any]:
    params: dict[str, Any] = {}
    if request.method == "POST":
        raw = request.get_data(cache=True)
        if raw.strip():
            params.update(json_object(request))
    params.update(request.args.to_dict())  # the query wins over the body
    return params


def _rate(params: dict[str, Any], cap: float) -> float | None:
    """`rate` (requests/s of load for this step), capped by the analysis' load.max_rate."""
    from .security import rate  # one parser for every caller: a huge JSON integer is a 400, not a crash

    return rate(params.get("rate"), "rate", cap, blank_is_none=True)


@bp.route("/argo/v1/analyses/<analysis>", methods=["GET", "POST"])
def analysis(analysis: str):
    g.hook_label = "analysis"
    svc = service()
    if not ANALYSIS_RE.match(analysis) or analysis not in svc.settings.analyses:
        raise ApiError(404, f"unknown analysis {analysis[:64]!r}: use one of "
                            f"{', '.join(sorted(svc.settings.analyses))}", "analysis")
    params = _params()
    rollout = identifier(params, "rollout", NAME_RE, "Kubernetes object name")
    revision = identifier(params, "revision", REVISION_RE, "revision (letters, digits, '.', '_', '-')")
    namespace = identifier(params, "namespace", NAMESPACE_RE, "Kubernetes namespace", required=False) or "default"
    check_namespace(namespace, svc.settings.server.namespaces)
    scope = params.get("scope", "window")
    if scope not in ("window", "run"):
        raise ApiError(400, "field 'scope' must be 'window' or 'run'", "scope")
    rate = _rate(params, svc.settings.analyses[analysis].config.load.max_rate)

    sessions = svc.sessions
    run = sessions.open_run("argo", analysis, namespace, rollout, revision, restart_final=False)
    context = {"run": run.id, "analysis": analysis, "namespace": namespace, "rollout": rollout,
               "revision": revision, "scope": scope}
    s = sessions.session(run, start=True)
    if s is None:  # a finished run answers from the store
        from analyses.judge import Verdict

        v = Verdict.from_dict(run.verdict) if run.verdict else nodata_verdict("the run ended without data")
        return jsonify(argo_body(v, windows=[], fresh=False, **context))
    s.touch()
    if rate is not None and rate != s.rate_override:
        s.rate_override = rate
        sessions.loop.call_soon_threadsafe(s.measurement.set_rate, rate)
    deadline = svc.settings.server.hook_deadline_s
    if s.latest() is None:
        # First call: no window yet. Judge the whole golden set now rather
        # than answer "no data", which Argo would count as a failure.
        try:
            sessions.call(s.golden(), deadline)
        except concurrent.futures.TimeoutError:
            v = nodata_verdict(f"golden-set check did not finish within {deadline:g} s")
            return jsonify(argo_body(v, windows=[], fresh=False, **context))
        except Exception as exc:
            v = nodata_verdict(f"golden-set check failed: {exc!r}")
            return jsonify(argo_body(v, windows=[], fresh=False, **context))
    if scope == "window":
        answer = s.since("argo")
        if answer.fresh:
            return jsonify(argo_body(answer.verdict, windows=answer.windows, fresh=True, **context))
    v = s.run_level() or nodata_verdict("no data yet")
    latest = s.latest()
    return jsonify(argo_body(v, windows=list(range(1, latest[0] + 1)) if latest else [], fresh=False, **context))
