"""Verdicts as the callers see them: JSON-safe dictionaries.

Argo evaluates `successCondition` on the JSON it receives
(`result.passed == true`, `result.accuracy.delta > -0.02`), so checks appear
both under `checks` and at the top level by name, with `delta` as an alias
of `difference`. NaN and infinities become null: they are not JSON.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

CHECK_FIELDS = ("stable", "canary", "difference", "ratio", "test", "p_value", "ci", "verdict", "critical", "reason")
# Top-level keys a check name must not shadow.
RESERVED = {"passed", "phase", "outcome", "score", "reason", "checks", "run", "analysis", "scope",
            "windows", "fresh", "critical_failure", "rollout", "revision", "namespace", "status"}


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
    """The short form used in Flagger replies and run listings."""
    return json_safe({
        "outcome": verdict.outcome,
        "passed": bool(verdict.passed),
        "phase": verdict.phase,
        "score": verdict.score,
        "reason": one_line(verdict.reason),
        "critical_failure": bool(verdict.critical_failure),
    })


def argo_body(verdict: Any, **context: Any) -> dict[str, Any]:
    """The full answer for Argo's web provider: verdict, checks by name, and shortcuts."""
    body: dict[str, Any] = {
        "passed": bool(verdict.passed),
        "phase": verdict.phase,
        "outcome": verdict.outcome,
        "score": verdict.score,
        "reason": one_line(verdict.reason),
        "critical_failure": bool(verdict.critical_failure),
    }
    body.update(context)
    checks = {c.name: check_dict(c) for c in verdict.checks}
    body["checks"] = checks
    for name, values in checks.items():
        if name not in RESERVED:
            body[name] = values
    return json_safe(body)
