"""Argo Rollouts web provider: `GET|POST /argo/v1/analyses/<analysis>?rollout=..&revision=..`.

Argo treats any status outside 200-299 as a measurement *Error* and never
evaluates its conditions, so every decision is a 200 with the run's one
decision in the JSON body (webhook.verdicts.argo_body):

    successCondition: result.failed == false      # background analysis: pass while not failed
    failureCondition: result.failed == true
or, for a final gate before promotion (Inconclusive pauses the rollout):
    successCondition: result.decision == "pass"
    failureCondition: result.decision == "fail"

Stages and finality: `stage=<step>` (e.g. `{{args.step}}` or the canary
weight) starts a new stage whenever its value changes, so a pass is earned
again on the new weight's windows. `final=true` marks the promotion gate
(the last step's analysis, or `prePromotionAnalysis`): a pass there is
answered only when earned in the last configured stage with the newest
window measured and not beyond rollback, and it is then final (`final:
true`: later windows no longer change it). Otherwise "pass" is read-only
and can still become "fail"; `final` says which. A check that cannot
decide (golden set too small, windows too small) keeps the decision
"continue": Inconclusive under both conditions, never a pass.

Only caller mistakes are errors: unknown analysis 404, missing
`rollout`/`revision` 400, token 401, namespace 403. The first call admits
the run (webhook.admission: a slot reserved until the run goes silent for
server.admission_ttl()) and starts the session (golden check, then load) in
the background, answering at once from the run state ("continue" until
evidence arrives). A run that finds no slot is queued: 200 with decision
"continue", phase Inconclusive, `failed: false`, `queued: N` (its place,
1 = next; 0 in every other answer) and reason "queued: N-1 ahead ...";
it is not measured until admitted. With the background template
(`result.failed == false`) a queued measurement counts as Successful, as
any "continue" does: the promotion gate (`result.decision == "pass"`)
is what waits for evidence. rate=N asks for N requests/s of load from now
on (capped by `load.max_rate`; 0 refused); beyond the model servers'
budget (server.max_target_rate) it is not applied and a warning says so.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request

from .app import service
from .errors import ApiError
from .security import (ANALYSIS_RE, NAME_RE, NAMESPACE_RE, REVISION_RE, check_namespace, check_token, identifier,
                       json_object)
from .security import rate as parse_rate
from .sessions import AtCapacity, waiting_verdict
from .store import STOPPED_STATUSES
from .verdicts import argo_body, report_url

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
    if params.get("scope", "run") not in ("window", "run"):  # accepted for old templates: one decision now
        raise ApiError(400, "field 'scope' must be 'window' or 'run'", "scope")
    rate = parse_rate(params.get("rate"), "rate", svc.settings.analyses[analysis].config.load.max_rate,
                      blank_is_none=True)
    if rate == 0:
        raise ApiError(400, "field 'rate' must be > 0: a rate of 0 would switch the load off", "rate")
    stage = identifier(params, "stage", REVISION_RE, "stage (letters, digits, '.', '_', '-')", required=False)
    final_gate = str(params.get("final", "false")).lower()
    if final_gate not in ("true", "false"):
        raise ApiError(400, "field 'final' must be true or false", "final")

    sessions = svc.sessions
    run = sessions.open_run("argo", analysis, namespace, rollout, revision, restart_final=False)
    context = {"run": run.id, "analysis": analysis, "namespace": namespace, "rollout": rollout,
               "revision": revision}
    url = report_url(svc, run.id)
    if url:
        context["report"] = url
    gated = svc.settings.analyses[analysis].gate.active
    if run.status in STOPPED_STATUSES:  # a finished run answers from the store
        return jsonify(argo_body(sessions.stored_decision(run), gated=gated, queued=0, **context))
    ticket = sessions.admit(run)
    try:
        s = sessions.session(run, start=True) if ticket.admitted else None
    except AtCapacity as exc:  # the slot went between admission and here
        ticket = exc.ticket or ticket
        s = None
    if s is None and not ticket.admitted:
        return jsonify(_queued(ticket, gated, context))
    if s is None:  # a finished run answers from the store
        return jsonify(argo_body(sessions.stored_decision(run), gated=gated, queued=0, **context))
    s.touch()
    if stage is not None:
        s.start_stage(f"argo:{stage}")
    note = None
    if rate is not None:
        problem = sessions.set_rate(s, rate)
        if problem:  # Shadowgate's limit: said in the answer, never an Error status
            now = f"{s.rate_override:g} req/s" if s.rate_override is not None else "the analysis' load.rate"
            note = f"rate {rate:g} not applied: {problem}; the load stays at {now}"
    v = s.decision()
    if final_gate == "true" and v.outcome == "pass" and not v.final:
        why = _promotion_blocked(svc.settings.analyses[analysis], v)
        if why is None:
            v = s.finalize()  # the caller is told to promote: the decision is final from here on
            sessions.event(run.id, "decision", f"argo promotion gate passed: decision final: {v.reason}")
        else:
            body = argo_body(v, gated=gated, queued=0, **context)
            body.update(decision="continue", passed=False, phase="Inconclusive",
                        reason=f"promotion waits: {why}")
            return jsonify(_with_note(body, note))
    return jsonify(_with_note(argo_body(v, gated=gated, queued=0, **context), note))


def _with_note(body: dict[str, Any], note: str | None) -> dict[str, Any]:
    if note:
        body["warnings"] = list(body.get("warnings") or []) + [note]
    return body


def _queued(ticket: Any, gated: list[str], context: dict[str, Any]) -> dict[str, Any]:
    """A run waiting for a slot: 200, decision "continue" (Inconclusive), never an Error status.

    `queued` is its place (1: next); the same keys as every other answer, so no condition reads a null.
    """
    reason = f"{ticket.reason}: not measured yet"
    body = argo_body(waiting_verdict(reason), gated=gated, queued=ticket.position, **context)
    body.update(decision="continue", passed=False, failed=False, phase="Inconclusive", reason=reason)
    return body


def _promotion_blocked(analysis: Any, v: Any) -> str | None:
    """Why a passing run is not yet a pass of the promotion gate, or None."""
    if not v.look:
        return "no window measured yet"
    if v.window_health in ("stable_down", "overloaded"):
        return f"the newest window was not measured ({v.window_health})"
    stages = analysis.gate.config.stages
    if stages and v.look < stages[-1].from_window:
        return f"the last stage starts at window {stages[-1].from_window} (now {v.look})"
    if v.alarms:
        return f"the newest window of {', '.join(v.alarms)} is beyond rollback"
    return None
