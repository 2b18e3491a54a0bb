"""What a hook is answered when Shadowgate cannot serve it in time (webhook/front.py, BusyAnswer).

The front gives a hook a thread within `server.hook_queue_timeout()` of its
first byte, or answers it here, within `hook_deadline_s + 0.5` s whatever
happens: Flagger and Argo give up at 10 s, and a timeout or a non-2xx on
pre-rollout or rollout is a failed check (../shared/contracts.md). So no
answer here ever blames the canary for Shadowgate's capacity:

| hook                          | busy answer                                         | run later |
|-------------------------------|-----------------------------------------------------|-----------|
| confirm-rollout               | 412: waits (not counted), asks again next interval  | yes (its place in the admission queue) |
| confirm-traffic-increase,     | 412: the weight / promotion waits (not counted)     | no (a 200 there changes the run) |
| confirm-promotion             |                                                     |           |
| pre-rollout                   | 200 "not checked this time": the canary and golden-set checks run (deferred) and gate the next hooks; 412 only if the run already failed on its own evidence | yes |
| rollout                       | 200 from the run's state (412 only if it already failed) | no   |
| rollback                      | 409 (no rollback); 200 only if the run already failed | no      |
| post-rollout, event           | 202 accepted: recorded once a thread frees          | yes       |
| Argo                          | 200, decision "continue" (Inconclusive) and `failed: false`, or the run's "fail" | yes (starts the run) |

Why pre-rollout and rollout answer 200: a 200 of ours only lets the
rollout stay where it is; traffic grows and promotion happens only after a
confirm-* gate, which answers 412 here and 200 only from a measured window.
A canary that is really failing is rolled back at the next answer that
reads its windows (one interval later), never promoted on a busy answer.

Everything here runs on the front's event loop: only in-memory reads, no
lock that a worker thread may hold while waiting on I/O (see
SessionManager.peek).
"""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any
from urllib.parse import parse_qs

from .front import BusyAnswer
from .security import ANALYSIS_RE, NAME_RE, NAMESPACE_RE, REVISION_RE

BUSY = "Shadowgate is busy (all its threads were working when this call came)"
CONFIRM = ("confirm-rollout", "confirm-traffic-increase", "confirm-promotion")


def _body(status: int, **fields: Any) -> bytes:
    return json.dumps({"ok": status <= 202, **fields}, separators=(",", ":")).encode()


def _error(status: int, message: str, field: str | None = None) -> BusyAnswer:
    from .errors import error_body

    return BusyAnswer(status, json.dumps(error_body(status, message, field), separators=(",", ":")).encode())


def flagger_answer(hook: str, outcome: str | None = None, reason: str = "") -> BusyAnswer:
    """The busy answer of a Flagger hook; `outcome` is the run's live decision if known ("fail" matters)."""
    failed = outcome == "fail"
    if hook in CONFIRM:
        what = {"confirm-rollout": "the rollout waits for its turn",
                "confirm-traffic-increase": "the weight holds",
                "confirm-promotion": "the promotion waits"}[hook]
        return BusyAnswer(412, _body(412, reason=f"{BUSY}: {what} (not a failed check); asked again next interval",
                                     hook=hook, busy=True), defer=hook == "confirm-rollout")
    if hook in ("pre-rollout", "rollout"):
        if failed:
            return BusyAnswer(412, _body(412, reason=f"the run failed on its own evidence: {reason}", hook=hook,
                                         outcome="fail", busy=True))
        why = ("the canary and golden-set checks run in the background and their results gate the next hooks"
               if hook == "pre-rollout" else
               "answered from the run's state; traffic grows and promotion happen only after a measured window")
        return BusyAnswer(200, _body(200, reason=f"{BUSY}: not judged this time: {why}", hook=hook,
                                     outcome=outcome or "continue", busy=True), defer=hook == "pre-rollout")
    if hook == "rollback":
        if failed:
            return BusyAnswer(200, _body(200, reason=f"roll back: {reason}", hook=hook, rollback=True, busy=True))
        return BusyAnswer(409, _body(409, reason=f"no rollback: {BUSY}", hook=hook, rollback=False, busy=True))
    if hook in ("post-rollout", "event"):
        return BusyAnswer(202, _body(202, reason=f"{BUSY}: accepted, recorded once a thread frees", hook=hook,
                                     busy=True), defer=True)
    return _error(404, f"unknown hook type {hook[:64]!r}", "type")


class BusyAnswers:
    """`busy(environ, body)` for the front, reading the service's live runs (svc: webhook.app.Service)."""

    def __init__(self, svc: Any = None) -> None:
        self.svc = svc

    def __call__(self, environ: dict, body: bytes) -> BusyAnswer:
        path = environ.get("PATH_INFO", "")
        if self.svc is not None and not self._authorized(environ):
            return _error(401, "missing or wrong token: send 'Authorization: Bearer <token>'", "Authorization")
        if path.startswith("/flagger/"):
            return self._flagger(path[len("/flagger/"):], body)
        if path.startswith("/argo/v1/analyses/"):
            return self._argo(path[len("/argo/v1/analyses/"):], environ.get("QUERY_STRING", ""), body)
        return _error(404, "no such route", "url")

    def _authorized(self, environ: dict) -> bool:
        token = self.svc.settings.token
        if token is None:
            return True
        scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        given = None
        if scheme.lower() == "bearer":
            given = value.strip()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                given = None
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())

    def _live(self, caller: str, analysis: str, namespace: str, name: str, revision: str) -> Any:
        if self.svc is None:
            return None
        return self.svc.sessions.peek(caller, analysis, namespace, name, revision)

    def _flagger(self, hook: str, raw: bytes) -> BusyAnswer:
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return _error(400, "body must be Flagger's JSON payload (an object)", "body")
        name, namespace = data.get("name"), data.get("namespace")
        checksum = data.get("checksum") or "-"
        meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        analysis = meta.get("analysis") or name
        ok = (isinstance(name, str) and NAME_RE.match(name) and isinstance(namespace, str)
              and NAMESPACE_RE.match(namespace) and isinstance(analysis, str) and ANALYSIS_RE.match(analysis)
              and isinstance(checksum, str) and (checksum == "-" or REVISION_RE.match(checksum)))
        if not ok:
            return _error(400, "malformed Flagger payload (name, namespace, checksum, metadata.analysis)", "body")
        if self.svc is not None:
            allowed = self.svc.settings.server.namespaces
            if allowed and namespace not in allowed:
                return _error(403, f"namespace {namespace!r} is not allowed", "namespace")
        verdict = self._live("flagger", analysis, namespace, name, checksum)
        outcome = getattr(verdict, "outcome", None)
        return flagger_answer(hook, outcome, getattr(verdict, "reason", ""))

    def _argo(self, analysis: str, query: str, raw: bytes) -> BusyAnswer:
        params: dict[str, Any] = {}
        try:
            body = json.loads(raw) if raw.strip() else {}
            if isinstance(body, dict):
                params.update(body)
        except ValueError:
            pass
        params.update({k: v[-1] for k, v in parse_qs(query).items()})
        rollout, revision = params.get("rollout"), params.get("revision")
        namespace = params.get("namespace") or "default"
        known = self.svc is None or analysis in self.svc.settings.analyses
        if not (ANALYSIS_RE.match(analysis) and known):
            return _error(404, f"unknown analysis {analysis[:64]!r}", "analysis")
        if not (isinstance(rollout, str) and NAME_RE.match(rollout) and isinstance(revision, str)
                and REVISION_RE.match(revision) and isinstance(namespace, str) and NAMESPACE_RE.match(namespace)):
            return _error(400, "missing or malformed rollout, revision or namespace", "rollout")
        verdict = self._live("argo", analysis, namespace, rollout, revision)
        from .sessions import waiting_verdict
        from .verdicts import argo_body

        reason = f"{BUSY}: not judged this time (Inconclusive: asked again at the next measurement)"
        failed = getattr(verdict, "outcome", None) == "fail"
        gated = self.svc.settings.analyses[analysis].gate.active if self.svc is not None else []
        out = argo_body(verdict if failed else waiting_verdict(reason), gated=gated, queued=0, analysis=analysis,
                        namespace=namespace, rollout=rollout, revision=revision)
        if not failed:
            out.update(decision="continue", passed=False, failed=False, phase="Inconclusive", reason=reason)
        out["busy"] = True
        return BusyAnswer(200, json.dumps(out, separators=(",", ":")).encode(), defer=not failed)
