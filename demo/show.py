"""What the demo prints: one line per controller tick, the run's checks under it.

Pure formatting: dictionaries in (Shadowgate's answers, its runs API),
strings out. The checks are shown as their run-level estimate and the
gate's verdict so far; their thresholds (alert / rollback) are printed once
in the legend, and again in a cell whenever a check's thresholds differ from
the legend's (stages).
"""

from __future__ import annotations

import textwrap
from typing import Any, Iterable

# check -> (label, how an estimate is written, unit of the thresholds in the legend)
CHECKS = ("accuracy", "latency", "errors", "errors_increase", "ctr")
_VERDICT = {"pass": "pass", "fail": "FAIL", "continue": "wait", "nodata": "-"}
_HOOK = {"confirm-traffic-increase": "traffic+", "confirm-promotion": "promotion",
         "confirm-rollout": "confirm-rollout", "pre-rollout": "pre-rollout", "post-rollout": "post-rollout",
         "rollout": "rollout", "rollback": "rollback"}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def estimate(name: str, v: Any) -> str:
    """A check's estimate in the units of its thresholds."""
    v = _num(v)
    if v is None:
        return "-"
    if name == "accuracy":
        return f"{100 * v:+.1f} pt"
    if name == "latency":
        return f"{v:.2f}x"
    if name == "errors":
        return f"{100 * v:.2f} %"
    if name == "errors_increase":
        return f"{100 * v:+.2f} pt"
    if name == "ctr":
        return f"{100 * v:+.0f} %"
    return f"{v:.3g}"


def thresholds(name: str, alert: Any, rollback: Any) -> str:
    a, r = _num(alert), _num(rollback)
    if a is None or r is None:
        return "-"
    if name == "latency":
        return f"{a:g}x / {r:g}x"
    if name in ("accuracy", "errors_increase"):
        return f"{100 * a:g} / {100 * r:g} pt"
    return f"{100 * a:g} / {100 * r:g} %"


_LABEL = {"accuracy": "accuracy drop", "latency": "{q} canary/stable", "errors": "canary errors",
          "errors_increase": "error increase", "ctr": "CTR drop"}
_SHORT = {"accuracy": "acc", "latency": "{q}", "errors": "err", "errors_increase": "err+", "ctr": "CTR"}


def quantile_name(q: float) -> str:
    """0.95 -> "P95", 0.999 -> "P99.9"."""
    return f"P{100 * q:g}"


def legend(checks: Iterable[dict[str, Any]], quantile: float = 0.99) -> str:
    """`acc = accuracy drop (2 / 5 pt) · ...`: each gated check with its (alert / rollback)."""
    q = quantile_name(quantile)
    return " · ".join(f"{_SHORT[n].format(q=q)} = {_LABEL[n].format(q=q)} "
                      f"({thresholds(n, c.get('alert'), c.get('rollback'))})"
                      for c in checks if (n := c.get("name")) in _LABEL)


def checks_line(checks: Iterable[dict[str, Any]], base: dict[str, tuple[Any, Any]] | None = None,
                quantile: float = 0.99) -> str:
    """`acc -0.3 pt pass  P95 1.04x wait ...` for the gated checks of a verdict or an Argo answer."""
    q = quantile_name(quantile)
    cells = []
    for c in checks:
        name = c.get("name")
        if name not in _SHORT:
            continue
        verdict = c.get("verdict", "nodata")
        measured = c.get("measured", verdict != "nodata") and verdict != "nodata"
        short = _SHORT[name].format(q=q)
        if not measured:
            cells.append(f"{short} -")
            continue
        cell = f"{short} {estimate(name, c.get('estimate'))} {_VERDICT.get(verdict, verdict)}"
        if base and name in base and (c.get("alert"), c.get("rollback")) != base[name]:
            cell += f" ({thresholds(name, c.get('alert'), c.get('rollback'))})"
        cells.append(cell)
    return "  ".join(cells)


def argo_checks(result: dict[str, Any], gated: Iterable[str] = CHECKS) -> list[dict[str, Any]]:
    """The checks of an Argo answer (`result["accuracy"]["estimate"]`...) as a list with names."""
    out = []
    for name in gated:
        c = result.get(name)
        if isinstance(c, dict):
            out.append({"name": name, **c})
    return out


def hooks(calls: Iterable[tuple[str, int, str]]) -> str:
    """`rollback 409, rollout 200, traffic+ 200`."""
    return ", ".join(f"{_HOOK.get(h, h)} {status}" for h, status, _ in calls)


def _reason(text: str) -> str:
    import json

    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()
    return str(body.get("reason", "")) if isinstance(body, dict) else text.strip()


def notable(calls: Iterable[tuple[str, int, str]], limit: int = 110) -> list[str]:
    """The answers worth reading: refusals (not the routine rollback 409) and checks still running."""
    out = []
    for h, status, text in calls:
        why = _reason(text)
        if (status > 202 and h != "rollback") or "still running" in why:
            line = f"{_HOOK.get(h, h)} {status}: {why}"
            out.append(line if len(line) <= limit else line[: limit - 3] + "...")
    return out


def field(label: str, text: str, width: int = 100) -> str:
    """`label` in a 12-column margin, `text` wrapped beside it."""
    return textwrap.fill(text, width=width, initial_indent=f"{label:<12}", subsequent_indent=" " * 12,
                         break_on_hyphens=False)


def wrap(text: str, indent: int, width: int = 100) -> str:
    pad = " " * indent
    return textwrap.fill(text, width=width, initial_indent=pad, subsequent_indent=pad + "  ",
                         break_on_hyphens=False)


def path(p) -> str:
    """A path relative to the working folder when it is inside it (shorter to read)."""
    import os

    p = str(p)
    if not p:
        return p
    rel = os.path.relpath(p)
    return p if rel.startswith("..") else rel


def seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 100 else f"{int(s // 60)} min {s % 60:02.0f} s"
