"""Flagger webhooks: `POST /flagger/<type>`, in Flagger's real order of calls.

Flagger counts status <= 202 as success. Every answer reads the run's one
decision (analyses.gate via webhook.sessions), so no two hooks can
contradict each other, and none waits for a measurement:

| type                     | 200 (success)                              | otherwise                          |
|--------------------------|--------------------------------------------|------------------------------------|
| confirm-rollout          | the service is ready, the revision has not | 412: waits (not counted)           |
|                          | already failed (the canary has no pod yet) |                                    |
| pre-rollout              | canary loaded with stable's signature; the | 412: a failed check                |
|                          | golden-set check (within the deadline)     |                                    |
| rollout                  | the run has not failed                     | 412: a failed check                |
| confirm-traffic-increase | not failed, newest window measured; a new  | 412: weight holds (not counted)    |
|                          | stage begins (passes are earned again)     |                                    |
| confirm-promotion        | passed in the last stage, newest window    | 412: waits (not counted)           |
|                          | measured and not beyond rollback: final    |                                    |
| post-rollout             | always (final status stored, load stopped  |                                    |
|                          | in the background)                         |                                    |
| rollback                 | the run failed                             | 409 (inverted: 200 rolls back)     |
| event                    | always (kept in the timeline when it can)  |                                    |

A failing verdict is a 412 with one line of JSON, never a 5xx: Flagger
retries 5xx and throws their body away. Stable down is not the canary's
fault: its windows are not counted (rollout stays 200), but neither a
traffic increase nor the promotion passes until a window is measured again.
Older Flagger sends no `checksum` (it came with fluxcd/flagger#1521): runs
are then keyed on namespace/name, and pre-rollout after a finished run
starts a new one.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, g, jsonify, request

from .app import Service, service, time_left
from .errors import ApiError
from .security import (ANALYSIS_RE, NAME_RE, NAMESPACE_RE, PHASE_RE, REVISION_RE, check_namespace, check_token,
                       identifier, json_object)
from .security import rate as parse_rate
from .sessions import Session
from .store import FINAL_STATUSES, RunRecord
from .verdicts import one_line, report_url

bp = Blueprint("flagger", __name__)

HOOKS = ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion",
         "post-rollout", "rollback", "event")


@dataclass
class Call:
    """One validated Flagger call."""

    hook: str
    name: str
    namespace: str
    checksum: str
    phase: str | None
    metadata: dict[str, str]
    analysis: str
    svc: Service


@bp.before_request
def _authorize() -> None:
    check_token(request, service().settings.token)


NO_CHECKSUM = "-"  # the revision of runs of a Flagger that sends no checksum


def _parse(hook: str) -> Call:
    svc = service()
    raw = request.get_data(cache=True)  # 413 beyond MAX_CONTENT_LENGTH
    if not raw:
        raise ApiError(400, "empty body: expected Flagger's JSON payload", "body")
    data = json_object(request)
    name = identifier(data, "name", NAME_RE, "Kubernetes object name")
    namespace = identifier(data, "namespace", NAMESPACE_RE, "Kubernetes namespace")
    checksum = identifier(data, "checksum", REVISION_RE, "checksum (letters, digits, '.', '_', '-')",
                          required=False) or NO_CHECKSUM
    phase = identifier(data, "phase", PHASE_RE, "phase", required=False)
    metadata = data.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ApiError(400, "field 'metadata' must be an object of strings", "metadata")
    for k, v in metadata.items():
        if not isinstance(v, str):
            raise ApiError(400, f"field 'metadata.{str(k)[:64]}' must be a string", f"metadata.{str(k)[:64]}")
    check_namespace(namespace, svc.settings.server.namespaces)
    analysis = identifier(metadata, "analysis", ANALYSIS_RE, "analysis name", required=False,
                          where="metadata.") or name
    if analysis not in svc.settings.analyses:
        raise ApiError(404, f"unknown analysis {analysis!r}: set metadata.analysis to one of "
                            f"{', '.join(sorted(svc.settings.analyses))}", "metadata.analysis")
    return Call(hook, name, namespace, checksum, phase, metadata, analysis, svc)


def _rate(call: Call) -> float | None:
    """metadata.rate (requests/s) for this step, capped by the analysis' load.max_rate; 0 is refused."""
    r = parse_rate(call.metadata.get("rate"), "metadata.rate",
                   call.svc.settings.analyses[call.analysis].config.load.max_rate)
    if r == 0:
        raise ApiError(400, "field 'metadata.rate' must be > 0: a rate of 0 would switch the load off "
                            "and leave the canary unmeasured", "metadata.rate")
    return r


def _reply(call: Call, run: RunRecord | None, code: int, reason: str, verdict: Any = None,
           record: bool = True, **extra: Any):
    body: dict[str, Any] = {"ok": code <= 202, "reason": one_line(reason), "hook": call.hook,
                            "analysis": call.analysis}
    if run is not None:
        body["run"] = run.id
        url = report_url(call.svc, run.id)
        if url:
            body["report"] = url
    if verdict is not None:
        body.update({"outcome": verdict.outcome, "final": bool(getattr(verdict, "final", False)),
                     "decided_at": verdict.decided_at, "window_health": verdict.window_health})
        if getattr(verdict, "insufficient", None):
            body["insufficient"] = [one_line(x) for x in verdict.insufficient]
        if verdict.warnings:
            body["warnings"] = [one_line(w) for w in verdict.warnings]
    body.update(extra)
    if record and run is not None:
        call.svc.sessions.event(run.id, f"flagger:{call.hook}", f"{code}: {one_line(reason, 300)}",
                                {"status": code, "phase": call.phase})
    resp = jsonify(body)
    resp.status_code = code
    return resp


def _open(call: Call, *, restart_final: bool = False, create: bool = True) -> RunRecord | None:
    return call.svc.sessions.open_run("flagger", call.analysis, call.namespace, call.name, call.checksum,
                                      restart_final=restart_final, create=create)


def _live(call: Call, run: RunRecord, rate: float | None) -> Session | None:
    """The run's session, started or resumed; None for a finished run."""
    s = call.svc.sessions.session(run, start=True)
    if s is not None:
        s.touch()
        if rate is not None and rate != s.rate_override:
            problem = call.svc.sessions.rate_problem(s, rate)
            if problem:
                raise ApiError(429, f"metadata.rate {rate:g} refused: {problem}", "metadata.rate", retry_after_s=10)
            s.rate_override = rate
            try:
                call.svc.sessions.loop.call_soon_threadsafe(s.measurement.set_rate, rate)
            except RuntimeError:
                pass
    return s


def _decision(call: Call, run: RunRecord, rate: float | None = None) -> Any:
    """The run's decision; a live run's session keeps measuring (touched, resumed if idle)."""
    s = _live(call, run, rate)
    return s.decision() if s is not None else call.svc.sessions.stored_decision(run)


def _deadline(call: Call) -> float:
    """Seconds left of the hook deadline, counted from the request's arrival."""
    return time_left(call.svc.settings.server.hook_deadline_s)


# -------------------------------------------------------------------- hooks


def confirm_rollout(call: Call):
    """Before scale-up: the canary has no pod, so nothing here may need it."""
    prior = _open(call, create=False)
    if prior is not None and prior.status == "failed":
        v = call.svc.sessions.stored_decision(prior)
        return _reply(call, prior, 412, f"revision {call.checksum} already failed a run: {v.reason}", v)
    run = _open(call, restart_final=True)
    return _reply(call, run, 200, f"Shadowgate is ready for revision {call.checksum}: the canary is "
                                  "checked at pre-rollout, once it has a pod")


def pre_rollout(call: Call):
    """Weight 0, canary ready: its model and signature now, then the golden set (within the deadline)."""
    rate = _rate(call)
    run = _open(call, restart_final=True)
    sessions = call.svc.sessions
    live = sessions.live(run.id)
    if live is None:  # the canary must answer before any load starts
        measurement = sessions.factory(call.svc.settings.analyses[call.analysis])
        try:
            ok, reason, _ = sessions.call(measurement.check_canary(), _deadline(call))
        except concurrent.futures.TimeoutError:
            ok, reason = False, "canary did not answer its status and metadata within the hook deadline"
        except Exception as exc:  # e.g. an address the client cannot use: say so, do not 500
            ok, reason = False, f"canary check failed: {exc!r}"
        if not ok:
            return _reply(call, run, 412, reason)
    s = _live(call, run, rate)
    if s is None:
        v = sessions.stored_decision(run)
        return _reply(call, run, 412 if v.outcome == "fail" else 200, v.reason, v)
    try:
        v = s.golden_done.result(timeout=_deadline(call))
    except concurrent.futures.TimeoutError:
        return _reply(call, run, 200, "golden-set check still running: its result gates the next hooks",
                      s.decision())
    except Exception as exc:
        return _reply(call, run, 412, f"golden-set check failed: {exc!r}")
    v = s.decision()
    return _reply(call, run, 412 if v.outcome == "fail" else 200, f"golden set: {v.reason}", v)


def rollout(call: Call):
    rate = _rate(call)
    run = _open(call)
    v = _decision(call, run, rate)
    return _reply(call, run, 412 if v.outcome == "fail" else 200, v.reason, v)


def _measured(v: Any) -> str | None:
    """Why the newest window does not let the rollout go further, or None."""
    if v.look is None or not v.look:
        return "no window measured yet"
    if v.window_health == "stable_down":
        return "stable is down in the newest window: waiting until both versions can be compared"
    if v.window_health == "overloaded":
        return "Shadowgate could not measure the newest window on time: waiting for a measured one"
    return None


def confirm_traffic_increase(call: Call):
    """The weight grows after a 200: a heavier stage begins, so passes are earned again on its windows
    (the gate's stage; evidence for failure carries over)."""
    run = _open(call)
    v = _decision(call, run)
    if v.outcome == "fail":
        return _reply(call, run, 412, v.reason, v)
    why = _measured(v)
    if why:
        return _reply(call, run, 412, f"weight holds: {why}", v)
    s = call.svc.sessions.live(run.id)
    if s is not None and call.svc.settings.analyses[call.analysis].config.stage_on_traffic_increase:
        s.start_stage("weight-initial")  # names the stage the run began in (starts nothing)
        s.start_stage(f"traffic-increase@{v.look}")
    return _reply(call, run, 200, v.reason, v)


def _promotion_blocked(call: Call, v: Any) -> str | None:
    """Why a passing run may not be promoted yet (confirm-promotion waits), or None."""
    why = _measured(v)
    if why:
        return why
    stages = call.svc.settings.analyses[call.analysis].gate.config.stages
    if stages and (v.look or 0) < stages[-1].from_window:
        return (f"the last stage starts at window {stages[-1].from_window} (now {v.look}): a pass before it "
                "is not a pass of the last stage")
    if getattr(v, "alarms", None):
        return f"the newest window of {', '.join(v.alarms)} is beyond rollback"
    return None


def confirm_promotion(call: Call):
    run = _open(call)
    if run.status == "promoted":  # confirmed before: the frozen decision answers again
        v = call.svc.sessions.stored_decision(run)
        return _reply(call, run, 200 if v.outcome == "pass" else 412, v.reason, v)
    v = _decision(call, run)
    why = _promotion_blocked(call, v) if v.outcome == "pass" else None
    if v.outcome == "pass" and why is None:
        v = call.svc.sessions.promote(run)  # final from here on: the caller was told to promote
        return _reply(call, run, 200, v.reason, v)
    if v.outcome == "pass":
        return _reply(call, run, 412, f"promotion waits: {why}", v)
    return _reply(call, run, 412, f"promotion waits: {v.reason}", v)


def post_rollout(call: Call):
    run = _open(call)
    if run.status in FINAL_STATUSES:
        return _reply(call, run, 200, f"run already {run.status}")
    sessions = call.svc.sessions
    final = {"Succeeded": "succeeded", "Failed": "failed"}.get(call.phase or "")
    v = sessions.decision(run)
    if final is None:  # no phase from the caller: record what the evidence says
        final = "succeeded" if v.outcome == "pass" else "failed"
    sessions.finish(run, final)
    return _reply(call, run, 200, f"run {final}; decision: {v.reason}", v, status=final)


def rollback(call: Call):
    run = _open(call)
    v = _decision(call, run)
    if v.outcome == "fail":
        return _reply(call, run, 200, f"roll back: {v.reason}", v, rollback=True)
    return _reply(call, run, 409, "no rollback: the run has not failed", record=False, rollback=False)


def event(call: Call):
    run = _open(call)
    msg = call.metadata.get("eventMessage", "")
    call.svc.sessions.event(run.id, "flagger:event", f"{call.metadata.get('eventType', 'Normal')}: {msg}",
                            {"phase": call.phase, "timestamp": call.metadata.get("timestamp")})
    return _reply(call, run, 200, "recorded", record=False)


HANDLERS = {
    "confirm-rollout": confirm_rollout,
    "pre-rollout": pre_rollout,
    "rollout": rollout,
    "confirm-traffic-increase": confirm_traffic_increase,
    "confirm-promotion": confirm_promotion,
    "post-rollout": post_rollout,
    "rollback": rollback,
    "event": event,
}


@bp.post("/flagger/<hook>")
def handle(hook: str):
    g.hook_label = hook if hook in HANDLERS else "unknown"
    if hook not in HANDLERS:
        raise ApiError(404, f"unknown hook type {hook[:64]!r}: use one of {', '.join(HOOKS)}", "type")
    if hook == "event":
        try:
            return HANDLERS[hook](_parse(hook))
        except ApiError as err:  # Flagger only logs events: never make it retry one
            if err.status in (401, 403):  # who may call is not relaxed for events
                raise
            resp = jsonify({"ok": True, "recorded": False, "reason": one_line(err.message), "hook": hook})
            return resp
    return HANDLERS[hook](_parse(hook))
