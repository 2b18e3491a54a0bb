"""Flagger webhooks: `POST /flagger/<type>`, in Flagger's real order of calls.

Flagger counts status <= 202 as success. Every answer reads the run's one
decision (analyses.gate via webhook.sessions), so no two hooks can
contradict each other, and none waits for a measurement:

| type                     | 200 (success)                              | otherwise                          |
|--------------------------|--------------------------------------------|------------------------------------|
| confirm-rollout          | the run is admitted (a slot is reserved    | 412: waits (not counted): the      |
|                          | until it ends), the revision has not       | revision already failed, or the    |
|                          | already failed (the canary has no pod yet) | run is queued ("queued: N ahead")  |
| pre-rollout              | canary loaded with stable's signature; the | 412: a failed check (the canary's  |
|                          | golden-set check (within the deadline or   | fault only)                        |
|                          | server.golden_wait_s);                     |                                    |
|                          | or queued: "not measured yet"              |                                    |
| rollout                  | the run has not failed (or is queued)      | 412: a failed check                |
| confirm-traffic-increase | not failed, newest window measured; a new  | 412: weight holds (not counted),   |
|                          | stage begins (passes are earned again)     | also while queued                  |
| confirm-promotion        | passed in the last stage, newest window    | 412: waits (not counted), also     |
|                          | measured and not beyond rollback: final    | while queued                       |
| post-rollout             | always (final status stored, load stopped  |                                    |
|                          | in the background, slot given back)        |                                    |
| rollback                 | the run failed                             | 409 (inverted: 200 rolls back),    |
|                          |                                            | also while queued                  |
| event                    | always (kept in the timeline when it can)  |                                    |

Capacity (webhook.admission): a run is admitted at its first call that
finds a slot, best at confirm-rollout, where a 412 makes Flagger wait
without counting a failure; once admitted it keeps its slot until it ends,
so its pre-rollout and rollout never meet Shadowgate's own limits. A run
that has no slot at pre-rollout or rollout (a Canary without a
confirm-rollout hook) gets 200 "not measured yet" and is not measured;
confirm-traffic-increase and confirm-promotion hold it (412) until it is.
A metadata.rate beyond the model servers' budget is not applied (said in
the reason), never refused with a status.

Threads: pre-rollout's live checks (the canary's status and signature,
then the golden set) are the only waits on a hook's path. At most
server.max_blocking_hooks_per_namespace hooks of one namespace and
server.blocking_hooks() in all wait at once; the others answer at once
while the checks run in the background, and the checks' results gate the
next hooks (a failed canary check: the next rollout answers 412).

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
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, g, jsonify, request

from .app import Service, service, time_left
from .errors import ApiError
from .security import (ANALYSIS_RE, NAME_RE, NAMESPACE_RE, PHASE_RE, REVISION_RE, check_namespace, check_token,
                       identifier, json_object)
from .security import rate as parse_rate
from .admission import Ticket
from .sessions import CHECK_RUNNING, AtCapacity, Session, waiting_verdict
from .store import FINAL_STATUSES, STOPPED_STATUSES, RunRecord
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


@dataclass
class Measured:
    """What a hook knows of its run now."""

    verdict: Any
    session: Session | None = None
    waiting: str | None = None  # not measured for Shadowgate's reasons (queued, canary check running): never blamed
    canary_failed: str | None = None  # the newest canary check failed: the canary's fault
    ticket: Ticket | None = None
    note: str = ""  # e.g. a metadata.rate not applied

    @property
    def queued(self) -> dict[str, int]:
        """`queued` (the run's place) for the answer of a run waiting for a slot."""
        return {"queued": self.ticket.position} if self.ticket is not None and not self.ticket.admitted else {}


def _rate_note(call: Call, s: Session, rate: float | None) -> str:
    """Apply metadata.rate within the model servers' budget; a rate beyond it is not applied, and said so.

    The budget is Shadowgate's limit, not the canary's failing: never a non-2xx (a failed check).
    """
    if rate is None:
        return ""
    problem = call.svc.sessions.set_rate(s, rate)
    if problem is None:
        return ""
    now = f"{s.rate_override:g} req/s" if s.rate_override is not None else "the analysis' load.rate"
    return f" (metadata.rate {rate:g} not applied: {problem}; the load stays at {now})"


def _measure(call: Call, run: RunRecord, rate: float | None = None, *, start: bool = True) -> Measured:
    """The run's decision; an admitted run's session keeps measuring (touched, started or resumed if `start`).

    A run without a slot is queued (or keeps its place) and is not measured: the hooks answer it as
    waiting, never as failed.
    """
    sessions = call.svc.sessions
    if run.status in STOPPED_STATUSES:
        return Measured(sessions.stored_decision(run))
    ticket = sessions.admit(run)
    if not ticket.admitted:
        return Measured(waiting_verdict(ticket.reason), waiting=ticket.reason, ticket=ticket)
    s = sessions.live(run.id)
    if s is None:
        check = sessions.canary_check(run.id)
        if check is not None and check[0] == CHECK_RUNNING:
            why = "the canary check is running in the background"
            return Measured(waiting_verdict(why), waiting=why, ticket=ticket)
        if check is not None and not start:
            return Measured(waiting_verdict(check[1]), canary_failed=check[1], ticket=ticket)
        if check is not None:
            # The canary failed the check pre-rollout ran in the background (Flagger went on after its 200):
            # this answer blames the canary once (412), and measuring starts, so the evidence decides from
            # here on (a dead canary fails on its windows; one that was only late passes on them).
            sessions.forget_check(run.id)
            try:
                s = sessions.session(run, start=True)
            except AtCapacity:
                s = None
            if s is not None:
                s.touch()
            return Measured(waiting_verdict(check[1]), s, canary_failed=check[1], ticket=ticket)
        if start:
            try:
                s = sessions.session(run, start=True)
            except AtCapacity as exc:  # the slot went between admission and here: wait, never fail
                return Measured(waiting_verdict(str(exc)), waiting=str(exc), ticket=exc.ticket)
    if s is None:
        return Measured(sessions.stored_decision(run), ticket=ticket)
    s.touch()
    note = _rate_note(call, s, rate)
    return Measured(s.decision(), s, ticket=ticket, note=note)


def _deadline(call: Call) -> float:
    """Seconds left of the hook deadline, counted from the request's arrival."""
    return time_left(call.svc.settings.server.hook_deadline_s)


NOT_MEASURED = ("not measured yet (confirm-traffic-increase and confirm-promotion wait until a window is "
                "measured)")


# -------------------------------------------------------------------- hooks


def confirm_rollout(call: Call):
    """Before scale-up: the canary has no pod, so nothing here may need it. The gate where a run is
    admitted (its capacity reserved until it ends) or waits for a slot (412: Flagger waits, not counted)."""
    prior = _open(call, create=False)
    if prior is not None and prior.status == "failed":
        v = call.svc.sessions.stored_decision(prior)
        return _reply(call, prior, 412, f"revision {call.checksum} already failed a run: {v.reason}", v)
    run = _open(call, restart_final=True)
    if run.status not in STOPPED_STATUSES:
        ticket = call.svc.sessions.admit(run)
        if not ticket.admitted:
            return _reply(call, run, 412, f"{ticket.reason}: the rollout waits for a slot (not a failed check)",
                          queued=ticket.position)
    return _reply(call, run, 200, f"Shadowgate is ready for revision {call.checksum} (admitted: its capacity is "
                                  "reserved until the run ends): the canary is checked at pre-rollout, once it "
                                  "has a pod")


def pre_rollout(call: Call):
    """Weight 0, canary ready: its model and signature now, then the golden set (within the deadline).

    Only a few hooks may wait on these live checks at once (per namespace and in all); the others
    answer at once while the checks go on in the background, and their results gate the next hooks.
    """
    rate = _rate(call)
    run = _open(call, restart_final=True)
    sessions = call.svc.sessions
    if run.status in STOPPED_STATUSES:
        v = sessions.stored_decision(run)
        return _reply(call, run, 412 if v.outcome == "fail" else 200, v.reason, v)
    ticket = sessions.admit(run)
    if not ticket.admitted:  # a Canary without a confirm-rollout hook: 200 is not a failed check
        return _reply(call, run, 200, f"{ticket.reason}: {NOT_MEASURED}", waiting_verdict(ticket.reason),
                      queued=ticket.position)
    s = sessions.live(run.id)
    if s is not None and s.golden_done.done():  # nothing to wait for
        s.touch()
        note = _rate_note(call, s, rate)
        return _golden_answer(call, run, s, note)
    with sessions.blocking(call.namespace) as may_wait:
        if s is None:
            fut = sessions.check_canary(run)  # the canary must answer before any load starts
            if not may_wait:
                return _reply(call, run, 200, "canary check and golden-set check running in the background (other "
                                              "hooks are waiting on live checks): their results gate the next hooks",
                              waiting_verdict("the canary check is running in the background"), background=True)
            waited_from, wait_s = time.perf_counter(), max(0.0, _deadline(call) - 0.05)
            try:
                try:
                    ok, reason, culprit = fut.result(timeout=wait_s)
                except concurrent.futures.TimeoutError:
                    if time.perf_counter() - waited_from < 0.9 * call.svc.settings.server.hook_deadline_s:
                        raise  # this call came late (it waited for a thread): the canary has had no deadline yet
                    # The check ends at its own deadline (about now) and says whose fault it was.
                    ok, reason, culprit = fut.result(timeout=0.3)
            except concurrent.futures.TimeoutError:
                # Not the canary's fault, nor a failed check: the check goes on and gates the next hooks.
                return _reply(call, run, 200, "canary check running in the background (not finished within this "
                                              "call's time): its result gates the next hooks",
                              waiting_verdict("the canary check is running in the background"), background=True)
            except BaseException as exc:  # cancelled at shutdown
                ok, reason, culprit = False, f"canary check did not finish: {exc!r}", "shadowgate"
            if not ok:
                if culprit == "shadowgate":  # ours, not the canary's: never a failed check
                    return _reply(call, run, 200, f"{reason}: {NOT_MEASURED}", waiting_verdict(reason))
                return _reply(call, run, 412, reason)
            s = sessions.live(run.id)
            if s is None:  # ended meanwhile
                v = sessions.stored_decision(run)
                return _reply(call, run, 412 if v.outcome == "fail" else 200, v.reason, v)
        s.touch()
        note = _rate_note(call, s, rate)
        if not may_wait:
            return _reply(call, run, 200, "golden-set check running in the background (other hooks are waiting on "
                                          f"live checks): its result gates the next hooks{note}", s.decision(),
                          background=True)
        golden_wait_s = call.svc.settings.server.golden_wait_s
        wait = _deadline(call) if golden_wait_s is None else min(_deadline(call), time_left(golden_wait_s))
        try:
            s.golden_done.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            return _reply(call, run, 200, f"golden-set check still running: its result gates the next hooks{note}",
                          s.decision())
        except concurrent.futures.CancelledError:  # the session stopped (the run ended meanwhile)
            v = sessions.decision(run)
            return _reply(call, run, 412 if v.outcome == "fail" else 200, v.reason, v)
        except Exception:
            pass  # answered below from the run's state
    return _golden_answer(call, run, s, note)


def _golden_answer(call: Call, run: RunRecord, s: Session, note: str):
    try:
        s.golden_done.result(timeout=0)
    except concurrent.futures.TimeoutError:
        return _reply(call, run, 200, f"golden-set check still running: its result gates the next hooks{note}",
                      s.decision())
    except concurrent.futures.CancelledError:
        v = call.svc.sessions.decision(run)
        return _reply(call, run, 412 if v.outcome == "fail" else 200, v.reason, v)
    except Exception as exc:
        return _reply(call, run, 412, f"golden-set check failed: {exc!r}")
    v = s.decision()
    return _reply(call, run, 412 if v.outcome == "fail" else 200, f"golden set: {v.reason}{note}", v)


def rollout(call: Call):
    rate = _rate(call)
    run = _open(call)
    m = _measure(call, run, rate)
    if m.waiting:
        return _reply(call, run, 200, f"{m.waiting}: {NOT_MEASURED}", m.verdict, **m.queued)
    if m.canary_failed:  # the canary's fault (measured from now on)
        return _reply(call, run, 412, m.canary_failed)
    v = m.verdict
    # the note (a rate not applied) is Shadowgate's own news: the verdict's reason is shortened, never the note
    reason = one_line(v.reason, max(100, 400 - len(m.note))) + m.note if m.note else v.reason
    return _reply(call, run, 412 if v.outcome == "fail" else 200, reason, v)


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
    m = _measure(call, run)
    if m.waiting or m.canary_failed:  # a gate: 412 waits, never counted
        return _reply(call, run, 412, f"weight holds: {m.waiting or m.canary_failed}: not measured yet", m.verdict,
                      **m.queued)
    v = m.verdict
    if v.outcome == "fail":
        return _reply(call, run, 412, v.reason, v)
    why = _measured(v)
    if why:
        return _reply(call, run, 412, f"weight holds: {why}", v)
    s = m.session
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
    m = _measure(call, run)
    if m.waiting or m.canary_failed:
        return _reply(call, run, 412, f"promotion waits: {m.waiting or m.canary_failed}: not measured yet",
                      m.verdict, **m.queued)
    v = m.verdict
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
    """Inverted (200 rolls back). Reads the decision; it queues a run that has no slot yet (Flagger calls it
    every tick, before pre-rollout) but never starts measuring: pre-rollout checks the canary first."""
    run = _open(call)
    m = _measure(call, run, start=False)
    if m.waiting or m.canary_failed:
        return _reply(call, run, 409, f"no rollback: {m.waiting or 'the canary check failed'}: not measured yet",
                      record=False, rollback=False, **m.queued)
    v = m.verdict
    if v.outcome == "fail":
        return _reply(call, run, 200, f"roll back: {v.reason}", v, rollback=True)
    return _reply(call, run, 409, "no rollback: the run has not failed", record=False, rollback=False)


def event(call: Call):
    run = _open(call)
    call.svc.sessions.admission.touch(run.id)  # the canary is still there: its slot or place stays
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
    call = _parse(hook)
    try:
        return HANDLERS[hook](call)
    except AtCapacity as exc:  # (not expected: the hooks ask admission first) wait, never fail
        code = 412 if hook.startswith("confirm-") else 409 if hook == "rollback" else 200
        return _reply(call, None, code, f"{exc}: {NOT_MEASURED}", record=False)
