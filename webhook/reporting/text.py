"""The report for a terminal or an incident ticket: plain text, every line at most 100 columns."""

from __future__ import annotations

import math
import textwrap
from typing import Any

from .model import fmt_duration, fmt_est, fmt_time

WIDTH = 100
SPARK = "▁▂▃▄▅▆▇█"


def _wrap(text: str, indent: str = "  ", first: str | None = None) -> list[str]:
    return textwrap.wrap(" ".join(str(text).split()), WIDTH, initial_indent=first if first is not None else indent,
                         subsequent_indent=indent + "  ", break_long_words=True, break_on_hyphens=False) or [indent]


def _cut(text: Any, n: int) -> str:
    t = " ".join(str(text if text is not None else "-").split())
    return t if len(t) <= n else t[: n - 1] + "…"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bare(name: str, v: Any) -> str:
    """A number in the check's units without the unit word (intervals)."""
    if not _finite(v):
        return "-"
    if name == "latency":
        return f"{v:.2f}"
    if name == "errors":
        return f"{100 * v:.2f}"
    if name == "errors_increase":
        return f"{100 * v:+.2f}"
    if name in ("accuracy", "ctr"):
        return f"{100 * v:.1f}"
    return f"{v:.3g}"


def sparkline(values: list[Any], lo: float, hi: float, width: int = 60) -> str:
    """Values between lo and hi as block characters (clipped; gaps as spaces), resampled to `width`."""
    vals = list(values)
    if len(vals) > width:
        vals = [vals[round(i * (len(vals) - 1) / (width - 1))] for i in range(width)]
    out = []
    for v in vals:
        if not _finite(v) or hi <= lo:
            out.append(" ")
            continue
        f = (min(max(v, lo), hi) - lo) / (hi - lo)
        out.append(SPARK[min(int(f * len(SPARK)), len(SPARK) - 1)])
    return "".join(out)


def render(rep: dict[str, Any]) -> str:
    run, dec, w = rep["run"], rep["decision"], rep["windows"]
    L: list[str] = []
    L += textwrap.wrap(f"Shadowgate report {run['id']}: {dec['headline']}", WIDTH, subsequent_indent="  ")
    L.append("  " + _cut(f"outcome {dec['outcome']} · status {run['status']} · analysis {run['analysis']} · "
                  f"{run['caller']} · {run['namespace']}/{run['name']} revision {run['revision']} "
                  f"(attempt {run['attempt']})", WIDTH - 2))
    L.append("  " + _cut(f"started {fmt_time(run['started_at'])} · duration {fmt_duration(run['duration_s'])} · "
                  f"{w['total']} window{'s' if w['total'] != 1 else ''}", WIDTH - 2))
    if run.get("url"):
        L.append("  " + _cut(run["url"], WIDTH - 2))
    L.append("")
    L.append("Decision")
    if dec["in_progress"]:
        L += _wrap("IN PROGRESS: " + ("a session is measuring now; this shows the windows stored so far."
                                      if dec["live"] else f"the run is {run['status']}: no session is measuring now;"
                                      " the next hook call resumes it."))
    for s in dec["sentences"]:
        if not s.startswith("In progress"):
            L += _wrap(s, first="  - ", indent="  ")
    if dec.get("guarantee"):
        L += _wrap(dec["guarantee"])
    for warn in dec.get("warnings") or []:
        L += _wrap("Warning: " + warn)
    L.append("")

    L.append("Checks (estimate [interval] in the thresholds' units; * critical)")
    L.append(f"  {'check':<17}{'verdict':<9}{'estimate [interval]':<32}{'alert':<14}{'rollback':<14}decided at")
    for c in rep["checks"]:
        n = c["name"]
        ci = c.get("ci") or [None, None]
        est = f"{fmt_est(n, c.get('estimate'))} [{_bare(n, ci[0])}, {_bare(n, ci[1])}]"
        at = f"window {c['decided_at']}" if c.get("decided_at") else "-"
        L.append(f"  {_cut(n + ('*' if c.get('critical') else ''), 16):<17}{_cut(c.get('verdict'), 8):<9}"
                 f"{_cut(est, 31):<32}{_cut(fmt_est(n, c.get('alert')), 13):<14}"
                 f"{_cut(fmt_est(n, c.get('rollback')), 13):<14}{at}")
        fe, fa, llr, pa = c.get("fail_evidence"), c.get("fail_at"), c.get("llr"), c.get("pass_at")
        L.append("    " + _cut(f"evidence to fail {_n(fe)} (fails at {_n(fa)}), to pass {_n(llr)} (passes at "
                               f"{_n(pa)}); {c.get('reason')}", WIDTH - 4))
    s = rep["series"]
    if s["seq"]:
        L.append("")
        L.append(_cut(f"Evidence to fail over windows {s['seq'][0]}..{s['seq'][-1]}, from the pass boundary "
                      f"(lowest) to the fail boundary (highest)", WIDTH))
        for c in rep["checks"]:
            sc = s["checks"].get(c["name"])
            if sc is None or not _finite(c.get("fail_at")) or not _finite(c.get("pass_at")):
                continue
            line = sparkline(sc["fail_evidence"], c["pass_at"], c["fail_at"])
            L.append(f"  {_cut(c['name'], 16):<17}{line} " + _cut(_n(sc["fail_evidence"][-1]), 12))
    if rep["drift"]:
        L.append("")
        L.append("Drift (never gating)")
        for c in rep["drift"]:
            L.append(f"  {_cut(c['name'], 20):<21}{_cut(c.get('verdict'), 7):<8}" + _cut(c.get("reason"), 69))

    raw = rep["raw"]
    L.append("")
    shown = f"the first, the newest and the decision windows of {w['total']}" if w["total"] > len(w["table"]) \
        else f"all {w['total']}"
    L.append(_cut(f"Windows ({shown}; s = stable, c = canary)", WIDTH))
    L.append(f"  {'win':>5} {'kind':<9}{'health':<10}{'outcome':<9}{'requests s/c':>13}{'errors s/c':>11}"
             f"{'late s/c':>9}{'P99 ms s/c':>13}{'pairs':>7} {'only s/c':>9}")
    ridx = {q: i for i, q in enumerate(raw["seq"])}
    sidx = {q: i for i, q in enumerate(s["seq"])}
    for seq in w["table"]:
        i = sidx.get(seq)
        if i is None:
            continue
        head = f"  {seq:>5} {_cut(s['kind'][i], 8):<9}{_cut(s['health'][i], 9):<10}{_cut(s['outcome'][i], 8):<9}"
        j = ridx.get(seq)
        if j is None:
            L.append(head + "(raw data not read or compacted)")
            continue
        ld, lat, p = raw["load"], raw["latency_ms"], raw["probes"]
        L.append(head + f"{_pair(ld['stable']['requests'][j], ld['canary']['requests'][j]):>13}"
                 f"{_pair(ld['stable']['errors'][j], ld['canary']['errors'][j]):>11}"
                 f"{_pair(ld['stable']['late'][j], ld['canary']['late'][j]):>9}"
                 f"{_pair(lat['stable']['p99'][j], lat['canary']['p99'][j], '{:.1f}'):>13}"
                 f"{p['pairs'][j]:>7} {_pair(p['stable_only'][j], p['canary_only'][j]):>9}")
    t = rep["totals"]
    L.append("")
    L.append("Load and errors" + (" (windows read)" if w["thinned"] else ""))
    codes = sorted(set(t["stable"]["errors_by_code"]) | set(t["canary"]["errors_by_code"]))
    for ver in ("stable", "canary"):
        v = t[ver]
        by = ", ".join(f"{c} {v['errors_by_code'].get(c, 0):,}" for c in codes) or "none"
        rate = f" ({100 * v['errors'] / v['requests']:.2f} %)" if v["requests"] else ""
        L += _wrap(f"{ver}: asked {v['intended']:,}, answered {v['requests']:,}, late {v['late']:,}, errors "
                   f"{v['errors']:,}{rate}: {by}")
    pr = t["probes"]
    L += _wrap(f"probe pairs: {pr['pairs']:,} ({pr['answered']:,} answered by both); only stable right "
               f"{pr['stable_only']:,}, only canary right {pr['canary_only']:,}")
    newest = rep["newest"]
    if newest.get("latency_ms"):
        L += _wrap(f"newest window with load: {newest['seq']} (histograms in the HTML form)")

    L.append("")
    L.append(f"Timeline ({len(rep['timeline'])} entries; consecutive alike entries grouped)")
    for g in rep["timeline_groups"]:
        when = fmt_time(g["first_ts"])[11:19]
        count = f"x{g['count']}" if g["count"] > 1 else ""
        status = str(g["status"]) if g.get("status") is not None else ""
        head = f"  {when} {_cut(g['kind'], 24):<25}{status:<4}{count:<6}"
        room = WIDTH - len(head)
        msg = " ".join(str(g["message"] or "").split())
        lines = textwrap.wrap(msg, room, break_on_hyphens=False) or [""]
        L.append(head + lines[0])
        if len(lines) > 1:  # a second line at most: the page and the JSON have the whole message
            L.append(" " * len(head) + _cut(" ".join(lines[1:]), room))
    L.append("")
    L.append(_cut(f"Built in {rep.get('built_in_ms')} ms from the store. Dates are UTC.", WIDTH))
    return "\n".join(line.rstrip() for line in L) + "\n"


def _n(v: Any) -> str:
    return f"{v:.1f}" if _finite(v) else "-"


def _pair(a: Any, b: Any, fmt: str = "{:,}") -> str:
    def one(v: Any) -> str:
        return fmt.format(v) if _finite(v) else "-"
    return f"{one(a)}/{one(b)}"

