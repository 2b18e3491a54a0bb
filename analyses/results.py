"""Typed results: one CheckResult per check, one Verdict per look at a run.

Both serialise to JSON-safe dicts (no NaN or infinity: None instead) so the
webhook can answer Argo's `web` provider and the store can keep them.
Values are in code units: seconds for latency, ratios in 0..1 for rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

CheckVerdict = Literal["pass", "fail", "continue", "nodata", "insufficient", "info"]
Outcome = Literal["pass", "fail", "continue"]
Phase = Literal["Successful", "Failed", "Inconclusive"]


def _clean(v: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, NaN/inf to None."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if hasattr(v, "item") and not isinstance(v, (list, tuple, dict)):
        v = v.item()
    if isinstance(v, (bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    return v


@dataclass
class CheckResult:
    """One check at one look.

    verdict: "fail" (evidence reached the rollback boundary), "pass" (it
        reached the alert boundary in the stage in force), "continue" (not
        enough evidence yet), "insufficient" (it cannot get the evidence to
        decide: the reason says what would let it), "nodata" (no window has
        measured it), "info" (reported, never gating).
    stable, canary: the newest window's values in `unit` (seconds for
        latency, 0..1 for rates); ratio = canary / stable.
    estimate: the run's estimate of the canary's harm on the thresholds'
        scale (x-fold for latency, points 0..1 for accuracy and errors,
        relative drop for CTR); ci: its two-sided 1 - 2 alpha interval.
    window_estimate: the newest window's estimate, on the same scale.
    alert, rollback: the thresholds in force at this look.
    llr: log-likelihood ratio of "at rollback" against "at alert" so far
        (the pass side: passes at `pass_at` = log(beta));
        fail_evidence: log of the mixture likelihood ratio of "at or beyond
        rollback" against "at alert" (fails at `fail_at` = log(1/alpha)).
    alpha, beta: the error rates this check is held to.
    windows: windows that gave this check evidence; n_stable / n_canary:
        requests, probes or impressions counted so far.
    measured: this check has evidence (Argo reads the flag).
    newest_beyond_rollback: the newest window's own estimate is beyond
        `rollback` (not a verdict: a promotion waits while it is).
    """

    name: str
    verdict: CheckVerdict = "nodata"
    critical: bool = False
    reason: str = ""
    unit: str = ""
    test: str = ""
    stable: float | None = None
    canary: float | None = None
    difference: float | None = None
    ratio: float | None = None
    estimate: float | None = None
    ci: tuple[float, float] | None = None
    window_estimate: float | None = None
    alert: float | None = None
    rollback: float | None = None
    llr: float = 0.0
    fail_evidence: float = 0.0
    fail_at: float | None = None
    pass_at: float | None = None
    alpha: float | None = None
    beta: float | None = None
    windows: int = 0
    n_stable: int = 0
    n_canary: int = 0
    measured: bool = False
    decided_at: int | None = None
    p_value: float | None = None
    newest_beyond_rollback: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["ci"] = list(self.ci) if self.ci is not None else None
        return _clean(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckResult":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        ci = kw.get("ci")
        kw["ci"] = None if ci is None or None in ci else (float(ci[0]), float(ci[1]))
        for k in ("llr", "fail_evidence"):
            if kw.get(k) is None:
                kw[k] = 0.0
        return cls(**kw)


_PHASE_OF: dict[str, Phase] = {"pass": "Successful", "fail": "Failed", "continue": "Inconclusive"}


@dataclass
class Verdict:
    """The run's decision at one look (after window `look`).

    outcome: "fail" (stop now; final), "pass" (enough evidence the canary
        is not as bad as `rollback` on every critical check), "continue".
    passed: outcome is pass; phase: Argo's wording (continue: Inconclusive).
    reason: one readable line. window_health: the newest window was "ok",
        "stable_down", "overloaded" or "golden" (see analyses.gate).
    warnings: what the configuration cannot promise (e.g. a golden set too
        small to separate alert from rollback).
    final: the decision no longer changes (the run failed, or a caller was
        told to promote); a pass that is not final can still become a fail.
    stage / stage_from: the stage in force and its first window (a pass is
        earned on the stage's own windows).
    insufficient: critical checks that cannot decide, with what would let
        them. alarms: critical checks whose newest window is beyond rollback.
    changes: how the decision changed over the run (window, kind, text).
    """

    outcome: Outcome
    passed: bool
    phase: Phase
    reason: str
    checks: list[CheckResult] = field(default_factory=list)
    critical_failure: bool = False
    scope: str = "run"
    look: int | None = None
    alpha: float | None = None
    beta: float | None = None
    decided_at: int | None = None
    window_health: str | None = None
    warnings: list[str] = field(default_factory=list)
    score: float | None = None  # kept for readers of older stored runs; not computed
    final: bool = False
    stage: int = 0
    stage_from: int = 1
    insufficient: list[str] = field(default_factory=list)
    alarms: list[str] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)

    def check(self, name: str) -> CheckResult:
        """The check called `name` (KeyError if it is not in this verdict)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN and infinity become None)."""
        return _clean({
            "outcome": self.outcome, "passed": self.passed, "phase": self.phase, "reason": self.reason,
            "critical_failure": self.critical_failure, "scope": self.scope, "look": self.look,
            "alpha": self.alpha, "beta": self.beta, "decided_at": self.decided_at,
            "window_health": self.window_health, "warnings": list(self.warnings), "score": self.score,
            "final": self.final, "stage": self.stage, "stage_from": self.stage_from,
            "insufficient": list(self.insufficient), "alarms": list(self.alarms), "changes": list(self.changes),
            "checks": [c.to_dict() for c in self.checks],
        })

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Verdict":
        outcome = d.get("outcome", "continue")
        if outcome not in _PHASE_OF:  # runs stored by older versions ("nodata", "marginal")
            outcome = "continue"
        return cls(
            outcome=outcome, passed=outcome == "pass", phase=_PHASE_OF[outcome],
            reason=str(d.get("reason", "")), checks=[CheckResult.from_dict(c) for c in d.get("checks", [])],
            critical_failure=bool(d.get("critical_failure", False)), scope=d.get("scope", "run"),
            look=d.get("look"), alpha=d.get("alpha"), beta=d.get("beta"), decided_at=d.get("decided_at"),
            window_health=d.get("window_health"), warnings=list(d.get("warnings") or []), score=d.get("score"),
            final=bool(d.get("final", outcome == "fail")), stage=int(d.get("stage") or 0),
            stage_from=int(d.get("stage_from") or 1), insufficient=list(d.get("insufficient") or []),
            alarms=list(d.get("alarms") or []), changes=list(d.get("changes") or []),
        )


def phase_of(outcome: str) -> tuple[bool, Phase]:
    """(passed, Argo phase) of an outcome."""
    return outcome == "pass", _PHASE_OF[outcome]
