"""The callers, as they really call: Flagger's scheduler and Argo Rollouts' web provider.

Written from fluxcd/flagger (pkg/controller/scheduler.go, scheduler_hooks.go)
and argoproj/argo-rollouts (the analysis controller, metricproviders/webmetric).
Used by the
demo (`make demo`) and by the end-to-end tests (tests/webhook/drivers.py
re-exports them). Every HTTP call has a deadline (`timeout_s`, 10 s as in
Flagger and Argo).

The workload a controller scales (the canary's pods) and the router that
splits traffic are hooks the caller gives (`Workload`, `router`), so the
same driver runs against real stand-in servers in the demo and against
servers that are always there in the tests.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import requests

Call = tuple[str, int, str]  # (hook, HTTP status, body text)


class Workload(Protocol):
    """The canary's pods as a controller sees them."""

    def scale_up(self) -> None: ...
    def ready(self) -> bool: ...
    def scale_down(self) -> None: ...


def _body(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------------- Flagger


@dataclass
class FlaggerResult:
    outcome: str  # promoted | rolled_back | timeout
    failed_checks: int
    ticks: int
    calls: list[Call] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    run: str | None = None  # Shadowgate's run id, from the answers


@dataclass
class FlaggerTick:
    """What one scheduler tick did (for progress displays)."""

    tick: int
    phase: str  # the Canary's phase after the tick
    weight: int  # canary weight after the tick, percent
    failed_checks: int
    calls: list[Call]
    note: str = ""
    run: str | None = None


class FlaggerDriver:
    """Flagger's canary analysis, webhook side, in the scheduler's order.

    A new revision: confirm-rollout every tick until it passes (the canary
    is still at zero replicas), then ScaleFromZero. Every later tick
    (advanceCanary): wait while the canary is not ready; while Progressing
    or WaitingPromotion, the rollback hook (success rolls back at once);
    Promoting routes all traffic to the primary (-> Finalising), Finalising
    scales the canary down and calls post-rollout (Succeeded); failed
    checks >= threshold roll back; at weight 0 before the first step the
    pre-rollout hook, afterwards the rollout hook (a failure of either
    counts as a failed check and ends the tick); then, unless
    WaitingPromotion, confirm-traffic-increase (a failure waits); below the
    max weight the next step (`step_weights`, or `step_weight` up to
    `max_weight`), at the max weight confirm-promotion (a failure waits in
    WaitingPromotion) and promotion. A rollback routes all traffic to the
    primary, scales the canary down and calls post-rollout (Failed).
    Success is status <= 202. With `events`, Flagger's events go to the
    event hook too.

    workload: the canary's pods (default: always ready). router: called
    with the canary weight whenever Flagger sets the routes. observer:
    called with a FlaggerTick after every tick.
    """

    def __init__(self, url: str, name: str, namespace: str = "test", checksum: str = "85d557f47b",
                 analysis: str | None = None, threshold: int = 2, max_weight: int = 30, step_weight: int = 10,
                 interval_s: float = 2.0, timeout_s: float = 10.0, *, step_weights: Sequence[int] | None = None,
                 events: bool = False, workload: Workload | None = None,
                 router: Callable[[int], None] | None = None,
                 observer: Callable[[FlaggerTick], None] | None = None, confirm_attempts: int = 5) -> None:
        self.url, self.name, self.namespace, self.checksum = url, name, namespace, checksum
        self.metadata = {"analysis": analysis} if analysis else {}
        self.threshold, self.step_weight = threshold, step_weight
        self.step_weights = list(step_weights or [])
        self.max_weight = self.step_weights[-1] if self.step_weights else max_weight
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.events_on, self.workload, self.router, self.observer = events, workload, router, observer
        self.confirm_attempts = confirm_attempts
        self.calls: list[Call] = []
        self.events: list[str] = []
        self.run_id: str | None = None
        self.phase = "Initialized"
        self.weight = 0
        self.failed = 0
        self._tick_calls: list[Call] = []

    # ------------------------------------------------------------ wire

    def call(self, hook: str, phase: str = "Progressing", **extra: str) -> tuple[bool, requests.Response]:
        """POST one hook as Flagger does; (success, response). Success is status <= 202."""
        body = {"name": self.name, "namespace": self.namespace, "phase": phase, "checksum": self.checksum,
                "metadata": {**self.metadata, **extra}}
        r = requests.post(f"{self.url}/flagger/{hook}", json=body, timeout=self.timeout_s)
        call = (hook, r.status_code, r.text)
        self.calls.append(call)
        self._tick_calls.append(call)
        run = _body(r.text).get("run")
        if isinstance(run, str) and self.run_id is None:
            self.run_id = run
        return r.status_code <= 202, r

    def event(self, message: str, kind: str = "Normal") -> None:
        """One Flagger event (recordEventInfof / Warningf); sent to the event hook when enabled."""
        self.events.append(f"{kind}: {message}")
        if self.events_on:
            body = {"name": self.name, "namespace": self.namespace, "phase": self.phase, "checksum": self.checksum,
                    "metadata": {**self.metadata, "eventMessage": message, "eventType": kind,
                                 "timestamp": str(int(time.time() * 1000))}}
            try:  # Flagger only logs a failed event hook
                requests.post(f"{self.url}/flagger/event", json=body, timeout=self.timeout_s)
            except requests.RequestException:
                pass

    # ------------------------------------------------------------ scheduler

    def _set_weight(self, weight: int) -> None:
        self.weight = weight
        if self.router is not None:
            self.router(weight)

    def _next_weight(self) -> int:
        if not self.step_weights:
            return min(self.weight + self.step_weight, self.max_weight)
        for w in self.step_weights:
            if w > self.weight:
                return w
        return self.max_weight

    def _observe(self, tick: int, note: str = "") -> None:
        if self.observer is not None:
            self.observer(FlaggerTick(tick, self.phase, self.weight, self.failed, list(self._tick_calls), note,
                                      self.run_id))
        self._tick_calls = []

    def _result(self, outcome: str, ticks: int) -> FlaggerResult:
        return FlaggerResult(outcome, self.failed, ticks, self.calls, self.events, self.run_id)

    def _rollback(self, tick: int, why: str) -> FlaggerResult:
        target = f"{self.name}.{self.namespace}"
        if self.failed >= self.threshold:
            self.event(f"Rolling back {target} failed checks threshold reached {self.failed}", "Warning")
        self._set_weight(0)
        self.event(f"Canary failed! Scaling down {target}", "Warning")
        if self.workload is not None:
            self.workload.scale_down()
        self.phase = "Failed"
        self.call("post-rollout", phase="Failed")
        self._observe(tick, why)
        return self._result("rolled_back", tick)

    def run(self, max_ticks: int = 20, start_ticks: int = 0) -> FlaggerResult:
        """Drive one rollout; `start_ticks` > 0 resumes a rollout past its pre-rollout hook.

        Outcome "timeout" when the analysis has not decided after `max_ticks` ticks.
        """
        target = f"{self.name}.{self.namespace}"
        ticks = start_ticks
        self.failed, self.weight = 0, 0
        pre_rollout_done = start_ticks > 0
        if start_ticks == 0:
            for attempt in range(self.confirm_attempts):
                ok, _ = self.call("confirm-rollout")
                if ok:
                    break
                self.phase = "Waiting"
                self.event(f"Halt {target} advancement waiting for approval shadowgate-confirm", "Warning")
                self._observe(ticks, "waiting for approval")
                time.sleep(self.interval_s)
                ticks += 1
            else:
                return self._result("timeout", ticks)
            self.phase = "Progressing"
            self.event(f"New revision detected! Scaling up {target}")
            if self.workload is not None:
                self.workload.scale_up()
            self._observe(ticks, "canary scaled up from zero")
        self.phase = "Progressing"
        # max_ticks bounds the analysis (a guard of callers, not a Flagger setting); once promotion
        # is confirmed its two ticks (Promoting, Finalising) always run.
        while ticks < max_ticks or self.phase in ("Promoting", "Finalising"):
            time.sleep(self.interval_s)
            ticks += 1
            if self.workload is not None and not self.workload.ready():
                self._observe(ticks, "waiting for the canary to be ready")
                continue
            if self.phase in ("Progressing", "Waiting", "WaitingPromotion"):
                ok, _ = self.call("rollback", phase=self.phase)
                if ok:
                    self.event(f"Rolling back {target} manual webhook invoked", "Warning")
                    return self._rollback(ticks, "the rollback hook asked for it")
            if self.phase == "Promoting":
                self.event("Routing all traffic to primary")
                self._set_weight(0)
                self.phase = "Finalising"
                self._observe(ticks, "all traffic to the primary, which now runs the new version")
                continue
            if self.phase == "Finalising":
                if self.workload is not None:
                    self.workload.scale_down()
                self.phase = "Succeeded"
                self.call("post-rollout", phase="Succeeded")
                self.event(f"Promotion completed! Scaling down {target}")
                self._observe(ticks, "promotion completed")
                return self._result("promoted", ticks)
            if self.failed >= self.threshold:
                return self._rollback(ticks, f"failed checks threshold reached ({self.failed})")
            if not pre_rollout_done:
                self.event(f"Starting canary analysis for {target}")
                ok, r = self.call("pre-rollout")
                if not ok:
                    self.failed += 1
                    self.event(f"Halt {target} advancement pre-rollout check shadowgate-golden failed "
                               f"{_body(r.text).get('reason', r.text)[:200]}", "Warning")
                    self._observe(ticks, "pre-rollout failed: a failed check")
                    continue
                pre_rollout_done = True
            else:
                ok, r = self.call("rollout")
                if not ok:
                    self.failed += 1
                    self.event(f"Halt {target} advancement external check shadowgate-gate failed "
                               f"{_body(r.text).get('reason', r.text)[:200]}", "Warning")
                    self._observe(ticks, "rollout failed: a failed check")
                    continue
            if self.phase != "WaitingPromotion":
                ok, _ = self.call("confirm-traffic-increase")
                if not ok:
                    self.event(f"Halt {target} advancement waiting for traffic increase approval", "Warning")
                    self._observe(ticks, "weight holds")
                    continue
            if self.weight < self.max_weight:
                self._set_weight(self._next_weight())
                self.event(f"Advance {target} canary weight {self.weight}")
                self._observe(ticks)
                continue
            ok, _ = self.call("confirm-promotion")
            if not ok:
                self.phase = "WaitingPromotion"
                self.event(f"Halt {target} advancement waiting for promotion approval shadowgate-promotion",
                           "Warning")
                self._observe(ticks, "promotion waits")
                continue
            self.event(f"Copying {self.name}.{self.namespace} template spec to {self.name}-primary.{self.namespace}")
            self.phase = "Promoting"
            self._observe(ticks, "promoting")
        return self._result("timeout", ticks)


# ---------------------------------------------------------------------------------------- Argo Rollouts


def argo_measure(url: str, analysis: str, rollout: str, revision: str, timeout_s: float = 10.0, *,
                 final: bool = False, namespace: str | None = None) -> tuple[str, dict]:
    """One Argo web-provider measurement, evaluated as Argo Rollouts does.

    Background analysis (the examples' template): successCondition
    `result.failed == false`, failureCondition `result.failed == true`.
    final=True (a pre-promotion analysis): successCondition
    `result.decision == "pass"`, failureCondition `result.decision == "fail"`;
    neither true is Inconclusive. Any status outside 200-299, a connection
    failure or timeout, or a field the conditions read missing or null, is
    an Error (expr-lang cannot fetch it).
    """
    params = {"rollout": rollout, "revision": revision}
    if namespace:
        params["namespace"] = namespace
    try:
        r = requests.get(f"{url}/argo/v1/analyses/{analysis}", params=params, timeout=timeout_s)
    except requests.RequestException:
        return "Error", {}
    if not 200 <= r.status_code < 300:
        return "Error", {}
    result = _body(r.text)
    key = "decision" if final else "failed"
    if result.get(key) is None:
        return "Error", result
    if final:
        ok, bad = result["decision"] == "pass", result["decision"] == "fail"
    else:
        ok, bad = result["failed"] is False, result["failed"] is True
    if ok:
        return "Successful", result
    if bad:
        return "Failed", result
    return "Inconclusive", result


@dataclass
class ArgoMeasurement:
    """One measurement of an AnalysisRun and the run's phase after it."""

    n: int
    phase: str  # Successful | Failed | Inconclusive | Error
    result: dict
    run_phase: str  # Running | Successful | Failed | Inconclusive | Error
    step: int  # the Rollout's step index when it was taken
    weight: int


@dataclass
class ArgoResult:
    outcome: str  # promoted | aborted | paused | timeout
    analysis_phase: str
    measurements: list[ArgoMeasurement]
    weight: int


class ArgoRolloutDriver:
    """An Argo Rollout's canary steps with a background AnalysisRun on the web provider.

    steps: ("setWeight", percent) or ("pause", seconds), as in the Rollout's
    spec; the analysis starts at `starting_step` and measures every
    `interval_s` (the first measurement at once), as the AnalysisTemplate's
    metric does with `count` unset: until the Rollout finishes. The metric
    fails when Failed measurements exceed `failure_limit`, is Inconclusive
    when Inconclusive ones exceed `inconclusive_limit` (the Rollout pauses),
    and errs after more than `consecutive_error_limit` Errors in a row. A
    failed analysis aborts the Rollout: all traffic back to stable (the
    canary's pods stay `abortScaleDownDelaySeconds` longer). Completing the
    steps (setWeight 100) promotes.
    """

    def __init__(self, url: str, analysis: str, rollout: str, revision: str, namespace: str = "test", *,
                 steps: Sequence[tuple[str, float]], interval_s: float, starting_step: int = 1,
                 failure_limit: int = 1, inconclusive_limit: int = 3, consecutive_error_limit: int = 4,
                 final: bool = False, timeout_s: float = 10.0, workload: Workload | None = None,
                 router: Callable[[int], None] | None = None,
                 observer: Callable[[ArgoMeasurement], None] | None = None,
                 on_step: Callable[[int, str, float], None] | None = None) -> None:
        self.url, self.analysis, self.rollout = url, analysis, rollout
        self.revision, self.namespace = revision, namespace
        self.steps, self.interval_s, self.starting_step = list(steps), interval_s, starting_step
        self.failure_limit, self.inconclusive_limit = failure_limit, inconclusive_limit
        self.consecutive_error_limit, self.final, self.timeout_s = consecutive_error_limit, final, timeout_s
        self.workload, self.router, self.observer, self.on_step = workload, router, observer, on_step
        self.weight = 0
        self.measurements: list[ArgoMeasurement] = []

    def _set_weight(self, w: int) -> None:
        self.weight = w
        if self.router is not None:
            self.router(w)

    def _assess(self) -> str:
        counts = {p: sum(1 for m in self.measurements if m.phase == p) for p in ("Failed", "Inconclusive")}
        errors_in_a_row = 0
        for m in reversed(self.measurements):
            if m.phase != "Error":
                break
            errors_in_a_row += 1
        if counts["Failed"] > self.failure_limit:
            return "Failed"
        if errors_in_a_row > self.consecutive_error_limit:
            return "Error"
        if counts["Inconclusive"] > self.inconclusive_limit:
            return "Inconclusive"
        return "Running"

    def run(self, max_s: float = 600.0) -> ArgoResult:
        """Run the steps and the analysis until promoted, aborted, paused or `max_s` seconds."""
        if self.workload is not None:
            self.workload.scale_up()
            deadline = time.monotonic() + max_s
            while not self.workload.ready():  # the canary ReplicaSet must be available
                if time.monotonic() > deadline:
                    return ArgoResult("timeout", "Pending", self.measurements, self.weight)
                time.sleep(0.2)
        t0 = time.monotonic()
        step, step_until = 0, t0
        next_measure: float | None = None
        run_phase = "Pending"
        while time.monotonic() - t0 < max_s:
            now = time.monotonic()
            while step < len(self.steps) and now >= step_until:
                kind, value = self.steps[step]
                if step == self.starting_step and next_measure is None:
                    next_measure, run_phase = now, "Running"
                if kind == "setWeight":
                    self._set_weight(int(value))
                    step_until = now
                else:
                    step_until = now + float(value)
                if self.on_step is not None:
                    self.on_step(step, kind, value)
                step += 1
                if kind == "pause":
                    break
            if step >= len(self.steps) and now >= step_until:
                # Steps done: the background analysis is terminated as Successful; the canary is promoted.
                return ArgoResult("promoted", "Successful" if run_phase == "Running" else run_phase,
                                  self.measurements, self.weight)
            if next_measure is not None and now >= next_measure:
                phase, result = argo_measure(self.url, self.analysis, self.rollout, self.revision,
                                             self.timeout_s, final=self.final, namespace=self.namespace)
                m = ArgoMeasurement(len(self.measurements) + 1, phase, result, "Running", max(step - 1, 0),
                                    self.weight)
                self.measurements.append(m)
                run_phase = m.run_phase = self._assess()
                if self.observer is not None:
                    self.observer(m)
                # After an Error Argo measures again in 10 s (or the interval, when shorter).
                next_measure = now + (min(10.0, self.interval_s) if phase == "Error" else self.interval_s)
                if run_phase in ("Failed", "Error"):
                    self._set_weight(0)  # RolloutAborted: all traffic back to stable
                    return ArgoResult("aborted", run_phase, self.measurements, self.weight)
                if run_phase == "Inconclusive":
                    return ArgoResult("paused", run_phase, self.measurements, self.weight)
            wake = min([t for t in (next_measure, step_until if step < len(self.steps) else None) if t is not None]
                       or [now + 0.2])
            time.sleep(max(0.05, min(1.0, wake - time.monotonic())))
        return ArgoResult("timeout", run_phase, self.measurements, self.weight)
