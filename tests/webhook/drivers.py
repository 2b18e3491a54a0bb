"""Test drivers that call the service exactly as Flagger and Argo Rollouts do."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import requests


@dataclass
class FlaggerResult:
    outcome: str  # promoted | rolled_back | timeout
    failed_checks: int
    ticks: int
    calls: list[tuple[str, int, str]] = field(default_factory=list)


class FlaggerDriver:
    """Flagger's canary analysis, webhook side (fluxcd/flagger scheduler):

    confirm-rollout until it passes; pre-rollout (a failure counts as a
    failed check); then every interval: rollback webhook (success rolls back
    at once), failed checks >= threshold rolls back, rollout webhooks (a
    failure counts), confirm-traffic-increase before each step, and at max
    weight confirm-promotion then post-rollout. Success is status <= 202.
    """

    def __init__(self, url: str, name: str, namespace: str = "test", checksum: str = "85d557f47b",
                 analysis: str | None = None, threshold: int = 2, max_weight: int = 30, step_weight: int = 10,
                 interval_s: float = 2.0, timeout_s: float = 10.0) -> None:
        self.url, self.name, self.namespace, self.checksum = url, name, namespace, checksum
        self.metadata = {"analysis": analysis} if analysis else {}
        self.threshold, self.max_weight, self.step_weight = threshold, max_weight, step_weight
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.calls: list[tuple[str, int, str]] = []

    def call(self, hook: str, phase: str = "Progressing", **extra: str) -> tuple[bool, requests.Response]:
        body = {"name": self.name, "namespace": self.namespace, "phase": phase, "checksum": self.checksum,
                "metadata": {**self.metadata, **extra}}
        r = requests.post(f"{self.url}/flagger/{hook}", json=body, timeout=self.timeout_s)
        self.calls.append((hook, r.status_code, r.text))
        return r.status_code <= 202, r

    def run(self, max_ticks: int = 20, start_ticks: int = 0) -> FlaggerResult:
        failed = 0
        ticks = start_ticks
        if start_ticks == 0:
            for _ in range(5):
                ok, _ = self.call("confirm-rollout", phase="Initialized")
                if ok:
                    break
                time.sleep(self.interval_s)
            else:
                return FlaggerResult("timeout", failed, 0, self.calls)
            ok, _ = self.call("pre-rollout")
            if not ok:
                failed += 1
        weight = 0
        while ticks < max_ticks:
            time.sleep(self.interval_s)
            ticks += 1
            ok, _ = self.call("rollback")
            if ok or failed >= self.threshold:
                self.call("post-rollout", phase="Failed")
                return FlaggerResult("rolled_back", failed, ticks, self.calls)
            if weight < self.max_weight:
                ok, _ = self.call("rollout")
                if not ok:
                    failed += 1
                    continue
                ok, _ = self.call("confirm-traffic-increase")
                if ok:
                    weight += self.step_weight
            else:
                ok, _ = self.call("confirm-promotion", phase="Promoting")
                if ok:
                    self.call("post-rollout", phase="Succeeded")
                    return FlaggerResult("promoted", failed, ticks, self.calls)
        return FlaggerResult("timeout", failed, ticks, self.calls)


def argo_measure(url: str, analysis: str, rollout: str, revision: str, timeout_s: float = 10.0, *,
                 final: bool = False) -> tuple[str, dict]:
    """One Argo web-provider measurement, evaluated as Argo Rollouts does.

    Background analysis (the examples' template): successCondition
    `result.failed == false`, failureCondition `result.failed == true`.
    final=True (a pre-promotion analysis): successCondition
    `result.decision == "pass"`, failureCondition `result.decision == "fail"`;
    neither true is Inconclusive. Any status outside 200-299, or a field the
    conditions read missing or null, is an Error (expr-lang cannot fetch it).
    """
    r = requests.get(f"{url}/argo/v1/analyses/{analysis}", params={"rollout": rollout, "revision": revision},
                     timeout=timeout_s)
    if not 200 <= r.status_code < 300:
        return "Error", {}
    result = r.json()
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
