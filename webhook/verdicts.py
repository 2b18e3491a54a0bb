"""Verdicts as the callers see them: JSON-safe dictionaries.

Argo evaluates `successCondition` / `failureCondition` on the JSON it
receives (`result.failed == false`, `result.latency.estimate < 1.5`), and a
missing or null field is a measurement Error there, so every answer has
the same keys, numbers where a check has no data yet (with
`measured: false`). Checks appear under `checks` and at the top level by name.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Top-level keys a check name must not shadow.
RESERVED = {"passed", "failed", "decision", "phase", "reason", "checks", "run", "analysis", "windows",
            "decided_at", "window_health", "warnings", "rollout", "revision", "namespace", "status", "report",
            "final", "stage", "insufficient", "alarms"}


def json_safe(value: Any) -> Any:
    """`value` with NaN/inf replaced by None and numpy scalars made plain."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f if math.isfinite(f) else None


def check_dict(check: Any) -> dict[str, Any]:
    """One check's values: stable, canary, difference (alias delta), ratio, p_value, verdict..."""
    d = {k: getattr(check, k, None) for k in CHECK_FIELDS}
    d["delta"] = d["difference"]
    return json_safe(d)


def one_line(text: Any, limit: int = 400) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summary(verdict: Any) -> dict[str, Any]:
    """The short form used in run listings."""
    return json_safe({
        "outcome": verdict.outcome,
        "passed": bool(verdict.passed),
        "phase": verdict.phase,
        "reason": one_line(verdict.reason),
        "decided_at": verdict.decided_at,
    })


def report_url(svc: Any, run_id: str) -> str | None:
    """The run's report page under `server.public_url`, or None when no public URL is configured."""
    base = svc.settings.server.public_url
    return f"{base.rstrip('/')}/reports/{run_id}" if base else None


# Every check appears with every key, as numbers (0 where not measured yet,
# with measured: false), so an Argo condition never reads a null.
_NUMERIC = ("stable", "canary", "estimate", "window_estimate", "alert", "rollback", "llr", "fail_evidence",
            "fail_at", "pass_at", "alpha", "beta", "ci_low", "ci_high")


def check_dict(check: Any) -> dict[str, Any]:
    """One check's figures under fixed keys (Argo's conditions read them)."""
    d = {k: getattr(check, k, None) for k in _NUMERIC if not k.startswith("ci_")}
    ci = getattr(check, "ci", None)
    d["ci_low"], d["ci_high"] = (ci if ci is not None else (None, None))
    d = json_safe(d)
    for k in _NUMERIC:
        if d.get(k) is None:
            d[k] = 0.0
    d.update(verdict=check.verdict, failed=check.verdict == "fail", passed=check.verdict == "pass",
             measured=bool(check.measured), critical=bool(check.critical), windows=int(check.windows),
             reason=one_line(check.reason))
    return d


def argo_body(verdict: Any, *, gated: list[str], **context: Any) -> dict[str, Any]:
    """The answer for Argo's web provider: the run's decision, every gated check by name.

    `decision` is "pass", "fail" or "continue"; `failed` and `passed` are
    its booleans; `final` whether it can still change (a pass that is not
    final can become a fail); `insufficient` the checks that cannot decide
    and what would let them. Every gated check is present from the first
    answer on.
    """
    from analyses.results import CheckResult

    body: dict[str, Any] = {
        "decision": verdict.outcome,
        "passed": verdict.outcome == "pass",
        "failed": verdict.outcome == "fail",
        "phase": verdict.phase,
        "reason": one_line(verdict.reason),
        "windows": int(verdict.look or 0),
        "decided_at": int(verdict.decided_at or 0),
        "window_health": verdict.window_health or "none",
        "warnings": [one_line(w) for w in verdict.warnings],
        "final": bool(getattr(verdict, "final", False) or verdict.outcome == "fail"),
        "stage": int(getattr(verdict, "stage", 0) or 0),
        "insufficient": [one_line(x) for x in (getattr(verdict, "insufficient", None) or [])],
        "alarms": list(getattr(verdict, "alarms", None) or []),
    }
    body.update(context)
    by_name = {c.name: c for c in verdict.checks}
    checks = {name: check_dict(by_name.get(name) or CheckResult(name=name)) for name in gated}
    body["checks"] = checks
    for name, values in checks.items():
        if name not in RESERVED:
            body[name] = values
    return json_safe(body)
