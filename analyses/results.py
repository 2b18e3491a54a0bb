"""Typed results: one CheckResult per check, one Verdict per judgement.

Both serialise to JSON-safe dicts (no NaN or infinity: None instead) so
the webhook can answer Argo's `web` provider and the store can keep them.
Values are in code units: seconds for latency, ratios in 0..1 for rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

CheckVerdict = Literal["pass", "fail", "nodata"]
Outcome = Literal["pass", "marginal", "fail", "nodata"]
Phase = Literal["Successful", "Failed", "Inconclusive"]


def _clean(v: Any) -> Any:
    """Plain JSON types: numpy scalars to Python, NaN/inf to None."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if hasattr(v, "item") and not isinstance(v, (list, tuple, dict)):
        v = v.item()
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    return v


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass
class CheckResult:
    """The result of one check.

    stable, canary: the compared values in `unit` (seconds for latency,
        0..1 for rates); difference = canary - stable, ratio = canary / stable.
    test: the statistical test used; statistic: its value (z, chi-square,
        KS distance...); p_value: one-sided for regressions, None if none.
    ci: (lo, hi) confidence interval of the quantity the tolerance applies
        to: the ratio (latency, CTR), the difference (accuracy, error rate
        vs stable) or the canary's own rate (error rate, agreement); None
        for drift distances. Two-sided at 1 - 2 * (budget / checks), so the
        intervals of all checks hold together (Bonferroni).
    alpha: significance level this check was held to (after the split of
        the false-fail budget across checks and looks), or None.
    verdict: "pass", "fail" or "nodata"; reason: one readable line.
    """

    name: str
    stable: float | None = None
    canary: float | None = None
    difference: float | None = None
    ratio: float | None = None
    test: str = ""
    statistic: float | None = None
    p_value: float | None = None
    ci: tuple[float, float] | None = None
    n_stable: int = 0
    n_canary: int = 0
    verdict: CheckVerdict = "nodata"
    critical: bool = False
    weight: float = 1.0
    reason: str = ""
    unit: str = ""
    alpha: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["ci"] = list(self.ci) if self.ci is not None else None
        return _clean(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckResult":
        ci = d.get("ci")
        return cls(
            name=str(d["name"]),
            stable=_num(d.get("stable")),
            canary=_num(d.get("canary")),
            difference=_num(d.get("difference")),
            ratio=_num(d.get("ratio")),
            test=str(d.get("test", "")),
            statistic=_num(d.get("statistic")),
            p_value=_num(d.get("p_value")),
            ci=(None if ci is None else (_num(ci[0]), _num(ci[1]))),
            n_stable=int(d.get("n_stable", 0)),
            n_canary=int(d.get("n_canary", 0)),
            verdict=d.get("verdict", "nodata"),
            critical=bool(d.get("critical", False)),
            weight=float(d.get("weight", 1.0)),
            reason=str(d.get("reason", "")),
            unit=str(d.get("unit", "")),
            alpha=_num(d.get("alpha")),
        )


_PHASE_OF: dict[str, Phase] = {"pass": "Successful", "marginal": "Inconclusive", "fail": "Failed"}


@dataclass
class Verdict:
    """The judgement of one window (scope "step") or a run so far ("run").

    outcome: "pass", "marginal", "fail" or "nodata"; passed: outcome is
        pass (or nodata configured to pass); phase: Argo's wording.
    score: weighted share of checks with data that pass, 0..1.
    critical_failure: a critical check failed (fails whatever the score).
    reason: one readable line: the failing checks' reasons, or a summary.
    look: index of this look in the run (1 = first window), None for a step.
    alpha: the false-fail budget the checks were held to at this look.
    """

    outcome: Outcome
    passed: bool
    phase: Phase
    score: float
    reason: str
    checks: list[CheckResult] = field(default_factory=list)
    critical_failure: bool = False
    scope: Literal["step", "run"] = "step"
    look: int | None = None
    alpha: float | None = None

    def check(self, name: str) -> CheckResult:
        """The check called `name` (KeyError if it did not run)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN and infinity become None)."""
        d = {
            "outcome": self.outcome,
            "passed": self.passed,
            "phase": self.phase,
            "score": self.score,
            "reason": self.reason,
            "critical_failure": self.critical_failure,
            "scope": self.scope,
            "look": self.look,
            "alpha": self.alpha,
            "checks": [c.to_dict() for c in self.checks],
        }
        return _clean(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Verdict":
        return cls(
            outcome=d["outcome"],
            passed=bool(d["passed"]),
            phase=d["phase"],
            score=float(d["score"]) if d.get("score") is not None else 0.0,
            reason=str(d.get("reason", "")),
            checks=[CheckResult.from_dict(c) for c in d.get("checks", [])],
            critical_failure=bool(d.get("critical_failure", False)),
            scope=d.get("scope", "step"),
            look=d.get("look"),
            alpha=_num(d.get("alpha")),
        )


def phase_of(outcome: str, on_no_data: str) -> tuple[bool, Phase]:
    """(passed, Argo phase) for an outcome; nodata follows `on_no_data`."""
    if outcome == "nodata":
        if on_no_data == "pass":
            return True, "Successful"
        if on_no_data == "fail":
            return False, "Failed"
        return False, "Inconclusive"
    return outcome == "pass", _PHASE_OF[outcome]
