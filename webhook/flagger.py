"""Flagger webhooks: `POST /flagger/<type>`.

Flagger counts status <= 202 as success. Every answer here follows its
table of hook types:

| type                     | 200 (success)                    | otherwise                         |
|--------------------------|----------------------------------|-----------------------------------|
| confirm-rollout          | canary loaded, signature = stable| 412: canary waits, not counted    |
| pre-rollout              | golden set passes on the canary  | 412: a failed check               |
| rollout                  | windows since last call pass     | 412: a failed check               |
| confirm-traffic-increase | newest window does not fail      | 412: weight holds, not counted    |
| confirm-promotion        | run-level verdict passes         | 412: waits, not counted           |
| post-rollout             | always (run stored as final)     |                                   |
| rollback                 | a critical check failed          | 409 (inverted: 200 rolls back)    |
| event                    | always (kept in the timeline)    |                                   |

A failing verdict is a 412 with one line of JSON, never a 5xx: Flagger
retries 5xx and throws their body away. "No data" (e.g. the stable version
is down) is not the canary's fault: rollout answers 200 for it, while
confirm-promotion waits (412) until there is evidence.
"""

from __future__ import annotations

import concurrent.futures
import math
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, g, jsonify, request

from .app import Service, service
from .errors import ApiError
from .security import (ANALYSIS_RE, NAME_RE, NAMESPACE_RE, PHASE_RE, REVISION_RE, check_namespace, check_token,
                       identifier, json_object)
from .sessions import Session, is_failing, nodata_verdict
from .store import FINAL_STATUSES, RunRecord
from .verdicts import one_line, summary

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


def _parse(hook: str) -> Call:
    svc = service()
    raw = request.get_data(cache=True)  # 413 beyond MAX_CONTENT_LENGTH
    if not raw:
        raise ApiError(400, "empty body: expected Flagger's JSON payload", "body")
    data = json_object(request)
    name = identifier(data, "name", NAME_RE, "Kubernetes object name")
    namespace = identifier(data, "namespace", NAMESPACE_RE, "Kubernetes namespace")
    checksum = identifier(data, "checksum", REVISION_RE, "checksum (letters, digits, '.', '_', '-')")
    phase = identifier(data, "phase", PHASE_RE, "phase", required=False)
    metadata = data.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ApiError(400, "field 'metadata' must be an object of strings", "metadata")
    for k, v in metadata.items():
        if not isinstance(v, str):
            raise ApiError(400, f"field 'metadata.{k}' must be a string", f"metadata.{k}")
    check_namespace(namespace, svc.settings.server.namespaces)
    analysis = identifier(metadata, "analysis", ANALYSIS_RE, "analysis name", required=False,
                          where="metadata.") or name
    if analysis not in svc.settings.analyses:
        raise ApiError(404, f"unknown analysis {analysis!r}: set metadata.analysis to one of "
                            f"{', '.join(sorted(svc.settings.analyses))}", "metadata.analysis")
    return Call(hook, name, namespace, checksum, phase, metadata, analysis, svc)


def _rate(call: Call) -> float | None:
    """metadata.rate (requests/s) for this step, capped by the analysis' load.max_rate."""
    text = call.metadata.get("rate")
    if text is None:
        return None
    try:
        rate = float(text)
    except ValueError:
        raise ApiError(400, f"metadata.rate must be a number of requests per second, got {text!r}",
                       "metadata.rate") from None
    if not math.isfinite(rate) or rate < 0:
        raise ApiError(400, "metadata.rate must be >= 0 requests per second", "metadata.rate")
    return min(rate, call.svc.settings.analyses[call.analysis].config.load.max_rate)


def _reply(call: Call, run: RunRecord | None, code: int, reason: str, verdict: Any = None,
           record: bool = True, **extra: Any):
    body: dict[str, Any] = {"ok": code <= 202, "reason": one_line(reason), "hook": call.hook,
                            "analysis": call.analysis}
    if run is not None:
        body["run"] = run.id
    if verdict is not None:
        s = summary(verdict)
        body.update({"outcome": s["outcome"], "score": s["score"]})
    body.update(extra)
    if record and run is not None:
        call.svc.sessions.event(run.id, f"flagger:{call.hook}", f"{code}: {one_line(reason, 300)}",
                                {"status": code, "phase": call.phase})
    resp = jsonify(body)
    resp.status_code = code
    return resp


def _open(call: Call, *, restart_final: bool = False) -> RunRecord:
    return call.svc.sessions.open_run("flagger", call.analysis, call.namespace, call.name, call.checksum,
                                      restart_final=restart_final)


def _live(call: Call, run: RunRecord) -> Session | None:
    """The run's session, started or resumed; None for a finished run."""
    s = call.svc.sessions.session(run, start=True)
    if s is not None:
        s.touch()
        rate = _rate(call)
        if rate is not None and rate != s.rate_override:
            s.rate_override = rate
            try:
                call.svc.sessions.loop.call_soon_threadsafe(s.measurement.set_rate, rate)
            except RuntimeError:
                pass
    return s


def _stored_verdict(run: RunRecord) -> Any:
    if run.verdict:
        from analyses.judge import Verdict

        return Verdict.from_dict(run.verdict)
    return nodata_verdict("the run ended without data")


def _verdict_reply(call: Call, run: RunRecord, v: Any, reason: str | None = None, **extra: Any):
    """A verdict as Flagger reads it: 412 when it fails, else 200; the reason defaults to the verdict's."""
    return _reply(call, run, 412 if is_failing(v) else 200, v.reason if reason is None else reason, v, **extra)


def _deadline(call: Call) -> float:
    return call.svc.settings.server.hook_deadline_s


# -------------------------------------------------------------------- hooks


def confirm_rollout(call: Call):
    run = _open(call, restart_final=True)
    sessions = call.svc.sessions
    s = sessions.live(run.id)
    measurement = s.measurement if s is not None else sessions.factory(call.svc.settings.analyses[call.analysis])
    try:
        ok, reason, _ = sessions.call(measurement.check_canary(), _deadline(call))
    except concurrent.futures.TimeoutError:
        ok, reason = False, f"canary did not answer within {_deadline(call):g} s"
    except Exception as exc:  # e.g. an address the client cannot use: say so, do not 500
        ok, reason = False, f"canary check failed: {exc!r}"
    return _reply(call, run, 200 if ok else 412, reason)


def pre_rollout(call: Call):
    run = _open(call, restart_final=True)
    s = _live(call, run)
    if s is None:
        return _verdict_reply(call, run, _stored_verdict(run))
    try:
        seq, v = call.svc.sessions.call(s.golden(), _deadline(call))
    except concurrent.futures.TimeoutError:
        return _reply(call, run, 412, f"golden-set check did not finish within {_deadline(call):g} s: "
                                      "canary (or stable) too slow")
    except Exception as exc:
        return _reply(call, run, 412, f"golden-set check failed: {exc!r}")
    if v is None:
        v = nodata_verdict("golden-set check gave no data")
    if seq:
        # pre-rollout counted this window already; rollout must not count it again.
        s.mark_seen("rollout", seq)
    return _verdict_reply(call, run, v, f"golden set: {v.reason}", windows=[seq] if seq else [])


def rollout(call: Call):
    run = _open(call)
    s = _live(call, run)
    if s is None:
        return _verdict_reply(call, run, _stored_verdict(run))
    answer = s.since("rollout")
    v = answer.verdict
    return _verdict_reply(call, run, v, windows=answer.windows)


def confirm_traffic_increase(call: Call):
    run = _open(call)
    s = _live(call, run)
    if s is None:
        return _verdict_reply(call, run, _stored_verdict(run))
    latest = s.latest()
    if latest is None:
        return _reply(call, run, 200, "no window closed yet: nothing against the increase")
    seq, v = latest
    if is_failing(v):
        return _reply(call, run, 412, f"window {seq} fails: {v.reason}", v, windows=[seq])
    return _reply(call, run, 200, f"window {seq}: {v.reason}", v, windows=[seq])


def confirm_promotion(call: Call):
    run = _open(call)
    s = _live(call, run)
    v = s.run_level() if s is not None else _stored_verdict(run)
    if v is None:
        return _reply(call, run, 412, "no data yet: promotion waits for a verdict over the run")
    status = 200 if v.passed else 412
    return _reply(call, run, status, f"run: {v.reason}", v)


def post_rollout(call: Call):
    run = _open(call)
    if run.status in FINAL_STATUSES:
        return _reply(call, run, 200, f"run already {run.status}")
    final = {"Succeeded": "succeeded", "Failed": "failed"}.get(call.phase or "")
    sessions = call.svc.sessions
    v = sessions.finish(run, final or "succeeded", _deadline(call))
    if final is None:
        # No phase from the caller: record what the evidence says.
        final = "succeeded" if v is not None and v.passed else "failed"
        call.svc.store.update_run(run.id, status=final)
    reason = f"run {final}" + (f"; verdict: {v.reason}" if v is not None else "; no data")
    return _reply(call, run, 200, reason, v, status=final)


def rollback(call: Call):
    run = _open(call)
    s = _live(call, run)
    if s is None:
        v = _stored_verdict(run)
        critical = [v] if v.critical_failure else []
    else:
        latest = s.latest()
        critical = [x for x in (latest[1] if latest else None, s.run_level())
                    if x is not None and x.critical_failure]
    if critical:
        v = critical[0]
        return _reply(call, run, 200, f"roll back: critical check failed: {v.reason}", v, rollback=True)
    return _reply(call, run, 409, "no critical check failed", record=False, rollback=False)


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
        raise ApiError(404, f"unknown hook type {hook!r}: use one of {', '.join(HOOKS)}", "type")
    return HANDLERS[hook](_parse(hook))
