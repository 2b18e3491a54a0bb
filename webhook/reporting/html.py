"""The report as one HTML page: server-side SVG charts, inline CSS, no JavaScript, nothing from the internet.

Every chart is an inline `<svg data-chart="...">` inside a `<figure>` with a
caption that says what to look for; every table has an id. The page reads
top-down the way an on-call SRE asks: what was decided and why (the
decision in words), which check and with which evidence, then the
measurements behind it (latency, load, errors, accuracy, predictions), the
windows and the timeline.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any
from urllib.parse import urlencode

from . import svg
from .model import (fmt_ci, fmt_duration, fmt_est, fmt_time, fmt_value, kind_of, pct)

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d1d1f;margin:0;background:#f6f7f9}
main{max-width:1400px;margin:0 auto;padding:16px 20px 40px}
a{color:#0b5cad}
nav{font-size:13px;color:#555;margin-bottom:10px}
h1{font-size:22px;margin:0 0 8px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:14px 0 6px}
section.decision{border-left:8px solid #999;background:#fff;padding:14px 18px;border-radius:6px;
  box-shadow:0 1px 2px rgba(0,0,0,.08)}
section.decision.fail{border-color:#D55E00}
section.decision.pass{border-color:#009E73}
section.decision.continue{border-color:#E69F00}
section.decision ul{margin:6px 0 6px 18px;padding:0}
.guarantee{color:#333;font-size:13px}
.warn{background:#fff6e0;border:1px solid #f0d48a;padding:6px 10px;border-radius:4px;margin:6px 0;font-size:13px}
.progress{background:#e8f1fb;border:1px solid #a9c8ee;padding:6px 10px;border-radius:4px;margin:6px 0}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;
  background:#777}
.badge.fail,.badge.failed{background:#D55E00}.badge.pass,.badge.succeeded{background:#009E73}
.badge.continue,.badge.running{background:#E69F00}.badge.idle{background:#8a8a8a}.badge.nodata{background:#aaa}
.badge.info{background:#56B4E9}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:4px 0 8px}
th,td{border:1px solid #e1e3e6;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f1f3;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.reason{min-width:280px;max-width:560px;font-size:12px;color:#333}
tr.why td{font-size:12px;color:#444;border-top:none;padding-left:22px}
.scroll{overflow-x:auto;max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;background:#fff;border:1px solid #e1e3e6;border-radius:6px;padding:6px}
figcaption{font-size:12px;color:#555;max-width:660px;padding:2px 4px}
.muted{color:#666;font-size:12px}
form.filters{display:flex;flex-wrap:wrap;gap:8px;align-items:end;background:#fff;padding:10px;border:1px solid #e1e3e6;
  border-radius:6px}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:#444}
form.filters input,form.filters select{font:inherit;padding:3px 5px}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:0;font-size:13px}
dl.facts dt{color:#555}dl.facts dd{margin:0}
code{font-size:12px}
""" + svg.CSS


def e(v: Any) -> str:
    return escape("" if v is None else str(v))


def _page(title: str, body: str) -> str:
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>\n")


def _badge(word: Any, cls: str | None = None) -> str:
    return f'<span class="badge {e(cls or word)}">{e(word)}</span>'


def _figure(chart: svg.Chart, caption: str) -> str:
    return f"<figure>{chart.render()}<figcaption>{e(caption)}</figcaption></figure>"


def _num(v: Any, fmt: str = "{:,}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return fmt.format(v)


# ------------------------------------------------------------------ error pages


def error_page(status: int, message: str) -> str:
    title = {400: "Bad request", 401: "Token needed", 403: "Forbidden", 404: "Not found"}.get(status, "Error")
    body = (f'<nav><a href="/reports">All reports</a></nav><h1>{status}: {e(title)}</h1>'
            f'<p id="error">{e(message)}</p>')
    if status == 401:
        body += ("<p class=\"muted\">Reports need the service's token: the browser asks for it (any user name, the "
                 "token as password), or send <code>Authorization: Bearer &lt;token&gt;</code>.</p>")
    return _page(f"Shadowgate: {status} {title}", body)


# ------------------------------------------------------------------ the run list


OUTCOMES = ("pass", "fail", "continue")
CALLERS = ("flagger", "argo")


def list_page(rows: list[dict[str, Any]], filters: dict[str, str | None], statuses: tuple[str, ...],
              limit: int) -> str:
    def text(name: str, label: str) -> str:
        return (f'<label>{e(label)}<input name="{name}" value="{e(filters.get(name) or "")}" size="14"></label>')

    def select(name: str, label: str, options: tuple[str, ...]) -> str:
        cur = filters.get(name) or ""
        opts = "".join(f'<option value="{e(o)}"{" selected" if o == cur else ""}>{e(o or "any")}</option>'
                       for o in ("",) + options)
        return f'<label>{e(label)}<select name="{name}">{opts}</select></label>'

    form = ('<form class="filters" method="get" action="/reports">' + text("namespace", "namespace")
            + text("name", "name") + text("analysis", "analysis") + select("caller", "caller", CALLERS)
            + select("outcome", "outcome", OUTCOMES) + select("status", "status", statuses)
            + f'<input type="hidden" name="limit" value="{limit}"><button type="submit">Filter</button>'
            + '<a href="/reports">clear</a></form>')
    head = ("<tr><th>outcome</th><th>status</th><th>run</th><th>analysis</th><th>caller</th>"
            "<th>namespace/name</th><th>revision</th><th>started</th><th>duration</th><th>windows</th>"
            "<th>deciding check</th><th>reason</th></tr>")
    body = []
    for r in rows:
        deciding = r["deciding_check"] or ("waiting: " + ", ".join(r["waiting"]) if r["waiting"] else "-")
        if r["deciding_check"] and r.get("decided_at"):
            deciding += f" (window {r['decided_at']})"
        body.append(
            f'<tr data-run="{e(r["id"])}"><td>{_badge(r["outcome"])}</td><td>{_badge(r["status"])}</td>'
            f'<td><a href="/reports/{e(r["id"])}">{e(r["id"])}</a></td><td>{e(r["analysis"])}</td>'
            f'<td>{e(r["caller"])}</td><td>{e(r["namespace"])}/{e(r["name"])}</td><td><code>{e(r["revision"])}</code>'
            f'{" #" + e(r["attempt"]) if r["attempt"] and r["attempt"] > 1 else ""}</td>'
            f'<td class="num">{e(fmt_time(r["started_at"]))}</td>'
            f'<td class="num">{e(fmt_duration(r["duration_s"]))}</td>'
            f'<td class="num">{r["windows"]}</td><td>{e(deciding)}</td>'
            f'<td class="reason">{e(_short(r["reason"], 220))}</td></tr>')
    active = {k: v for k, v in filters.items() if v}
    summary = (f"{len(rows)} run{'s' if len(rows) != 1 else ''}, newest first"
               + (f" (filtered: {', '.join(f'{k}={v}' for k, v in active.items())})" if active else "")
               + (f"; showing at most {limit}" if len(rows) >= limit else ""))
    table = (f'<div class="scroll"><table id="runs">{head}{"".join(body)}</table></div>' if rows else
             '<p id="runs-empty">No run matches.</p>')
    page = (f'<nav>Shadowgate · <a href="/api/v1/runs">runs API</a></nav><h1>Analysis reports</h1>{form}'
            f'<p class="muted" id="summary">{e(summary)}</p>{table}')
    return _page("Shadowgate: analysis reports", page)


def _short(text: Any, n: int) -> str:
    t = " ".join(str(text or "").split())
    return t if len(t) <= n else t[: n - 1] + "…"


# ------------------------------------------------------------------ one run


def run_page(rep: dict[str, Any], drift_kinds: list[tuple[str, str]] | None = None, base: str | None = "") -> str:
    """The page of one run.

    drift_kinds: (kind, label) of the evidently reports the service can build.
    base: what the service's links start with ("" on the service itself, its
    public URL in a file written elsewhere, None: no links to the service).
    """
    run, dec = rep["run"], rep["decision"]
    if base is None:
        parts = [f'<nav>Shadowgate report · run <code>{e(run["id"])}</code></nav>']
        drift_kinds = []
    else:
        parts = [f'<nav><a href="{e(base)}/reports">All reports</a> · <a href="{e(base)}{e(run["api"])}">JSON</a> · '
                 f'run <code>{e(run["id"])}</code></nav>']
    parts.append(_decision(dec, run))
    parts.append(_facts(rep, drift_kinds, base or ""))
    parts.append(_checks_table(rep))
    parts.append(_evidence(rep))
    parts.append(_latency(rep))
    parts.append(_accuracy(rep))
    parts.append(_windows_table(rep))
    parts.append(_timeline(rep))
    w = rep["windows"]
    foot = f"Report built in {rep.get('built_in_ms')} ms from {w['total']} stored windows"
    if w["thinned"]:
        foot += (f"; the per-window charts read {w['read']} of them (decisions) and {w['raw_read']} (raw data): "
                 "evenly spaced, the newest, and every window where a check or the run was decided")
    parts.append(f'<p class="muted" id="footer">{e(foot)}.</p>')
    title = f"Shadowgate: {run['analysis']} {run['namespace']}/{run['name']}: {dec['headline']}"
    return _page(title, "".join(parts))


def _decision(dec: dict[str, Any], run: dict[str, Any]) -> str:
    out = [f'<section id="decision" class="decision {e(dec["outcome"])}">',
           f'<h1 id="headline">{e(dec["headline"])}</h1>',
           f'<p>{_badge(dec["outcome"])} {_badge(dec["status"])} <span class="muted">analysis '
           f'{e(run["analysis"])} · {e(run["caller"])} · {e(run["namespace"])}/{e(run["name"])} revision '
           f'<code>{e(run["revision"])}</code></span></p>']
    if dec["in_progress"]:
        now = ("The session is measuring now: reload for newer windows." if dec["live"] else
               f"No session is measuring now (the run is {e(dec['status'])}): the next hook call resumes it.")
        out.append(f'<p class="progress" id="in-progress"><b>In progress.</b> {now}</p>')
    out.append('<ul id="decision-text">' + "".join(f"<li>{e(s)}</li>" for s in dec["sentences"]
                                                   if not s.startswith("In progress")) + "</ul>")
    if dec.get("guarantee"):
        out.append(f'<p class="guarantee" id="guarantee">{e(dec["guarantee"])}</p>')
    for w in dec.get("warnings") or []:
        out.append(f'<p class="warn">Warning: {e(w)}</p>')
    out.append(f'<p class="muted">The gate\'s own words: {e(dec["reason"])}</p></section>')
    return "".join(out)


def _facts(rep: dict[str, Any], drift_kinds: list[tuple[str, str]] | None, base: str) -> str:
    run, w = rep["run"], rep["windows"]
    facts = [("run", f"<code>{e(run['id'])}</code>"), ("analysis", e(run["analysis"])),
             ("caller", e(run["caller"])), ("rollout", f"{e(run['namespace'])}/{e(run['name'])}"),
             ("revision", f"<code>{e(run['revision'])}</code> (attempt {e(run['attempt'])})"),
             ("status", _badge(run["status"])), ("started", e(fmt_time(run["started_at"]))),
             ("last update", e(fmt_time(run["updated_at"]))), ("duration", e(fmt_duration(run["duration_s"]))),
             ("windows", f"{w['total']}" + (f" ({w['without_data']} without raw data: compacted)"
                                             if w["without_data"] else "")
              + (f" ({w['summarized']} without raw data: compacted; their figures from the summaries kept)"
                 if w.get("summarized") else ""))]
    if run.get("url"):
        facts.append(("report link", f'<a href="{e(run["url"])}">{e(run["url"])}</a>'))
    links = []
    for kind, label in drift_kinds or []:
        href = f'{base}{rep["drift_report"]}?{urlencode({"kind": kind})}'
        links.append(f'<a class="drift-link" href="{e(href)}">{e(label)}</a>')
    facts.append(("drift report", " · ".join(links) + ' <span class="muted">(evidently; built on first open, a '
                  'few seconds)</span>' if links else '<span class="muted">not available here</span>'))
    return ('<h2>Run</h2><dl class="facts" id="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
            + "</dl>")


def _checks_table(rep: dict[str, Any]) -> str:
    head = ("<tr><th>check</th><th>verdict</th><th>estimate [interval]</th><th>alert</th><th>rollback</th>"
            "<th>evidence to fail</th><th>evidence to pass</th><th>alpha</th><th>decided at</th><th>windows</th>"
            "<th>newest window: stable / canary</th></tr>")
    rows = []
    for c in rep["checks"]:
        n = c["name"]
        fe, fa, llr, pa = c.get("fail_evidence"), c.get("fail_at"), c.get("llr"), c.get("pass_at")
        rows.append(
            f'<tr data-check="{e(n)}"><td><b>{e(n)}</b>{" (critical)" if c.get("critical") else ""}</td>'
            f'<td>{_badge(c.get("verdict"))}</td>'
            f'<td class="num">{e(fmt_est(n, c.get("estimate")))} {e(fmt_ci(n, c.get("ci")))}</td>'
            f'<td class="num">{e(fmt_est(n, c.get("alert")))}</td>'
            f'<td class="num">{e(fmt_est(n, c.get("rollback")))}</td>'
            f'<td class="num">{_num(fe, "{:.2f}")} / {_num(fa, "{:.2f}")}</td>'
            f'<td class="num">{_num(llr, "{:.2f}")} / {_num(pa, "{:.2f}")}</td>'
            f'<td class="num">{e(pct(c.get("alpha"), 2))}</td>'
            f'<td class="num">{e(c.get("decided_at") or "-")}</td><td class="num">{e(c.get("windows"))}</td>'
            f'<td class="num">{e(fmt_value(n, c.get("stable")))} / {e(fmt_value(n, c.get("canary")))}</td></tr>'
            f'<tr class="why"><td colspan="11">{e(c.get("reason"))}</td></tr>')
    drift = []
    for c in rep["drift"]:
        drift.append(f'<tr data-drift="{e(c["name"])}"><td>{e(c["name"])}</td><td>{_badge(c.get("verdict"))}</td>'
                     f'<td class="num">{_num(c.get("canary"), "{:.4g}")}</td>'
                     f'<td class="num">{_num(c.get("p_value"), "{:.3g}")}</td>'
                     f'<td class="reason">{e(c.get("reason"))}</td></tr>')
    out = ('<h2>Checks</h2><p class="muted">Evidence is a log-likelihood ratio of "as bad as rollback" against '
           '"at alert": a check fails when its evidence to fail reaches log(1/alpha_k) and passes when its evidence '
           'to pass falls to log(beta). The interval is the run\'s two-sided 1 - 2 alpha_k interval.</p>'
           f'<div class="scroll"><table id="checks">{head}{"".join(rows)}</table></div>')
    if drift:
        out += ('<h3>Drift (reported, never gating; newest window)</h3><div class="scroll"><table id="drift">'
                '<tr><th>report</th><th>verdict</th><th>statistic</th><th>p-value</th><th>reason</th></tr>'
                + "".join(drift) + "</table></div>")
    return out


def _clip(values: list[Any], must: list[Any], cap_lo: float | None, cap_hi: float | None) -> tuple[float, float]:
    vals = [v for v in list(values) + list(must) if svg._ok(v)]
    if not vals:
        return (0.0, 1.0)
    lo, hi = min(vals), max(vals)
    if cap_lo is not None:
        lo = max(lo, cap_lo)
    if cap_hi is not None:
        hi = min(hi, cap_hi)
    for m in must:
        if svg._ok(m):
            lo, hi = min(lo, m), max(hi, m)
    pad = (hi - lo) * 0.08 or 1.0
    return lo - pad, hi + pad


def _evidence(rep: dict[str, Any]) -> str:
    s = rep["series"]
    xs = s["seq"]
    figs = []
    for c in rep["checks"]:
        n = c["name"]
        k = kind_of(n)
        sc = s["checks"].get(n)
        if sc is None:
            continue
        at = c.get("decided_at")
        fa, pa = c.get("fail_at"), c.get("pass_at")
        color = svg.FAIL if c.get("verdict") == "fail" else svg.PASS
        fe, llr = sc["fail_evidence"], sc["llr"]
        span = max(abs(fa or 0), abs(pa or 0), 1.0)
        lo, hi = _clip(fe + llr, [0.0, fa, pa], -4 * span, 4 * span)
        ev = svg.Chart(f"{n}: evidence over the windows", f"evidence-{n}", y_label="log LR", ylim=(lo, hi),
                       note="clipped to ±4x the boundaries" if any(
                           svg._ok(v) and not lo <= v <= hi for v in fe + llr) else None)
        ev.hline(fa, svg.FAIL, "fail boundary log(1/alpha_k)").hline(pa, svg.PASS, "pass boundary log(beta)")
        ev.line(xs, fe, svg.FAIL, "evidence to fail").line(xs, llr, svg.STABLE, "evidence to pass", dash="5 2")
        if at:
            i = _index(xs, at)
            y = (fe if c.get("verdict") == "fail" else llr)[i] if i is not None else None
            ev.vline(at, color).marker(at, y, color, f"decided at window {at}")
        figs.append(_figure(ev, f"{n}: the check fails when the red line reaches the red boundary and passes when "
                                f"the blue line falls to the green one"
                                + (f"; decided at window {at} ({c.get('verdict')})." if at else "; not decided yet.")))
        f = k.scale
        est = [_mul(v, f) for v in sc["estimate"]]
        lo_ci = [_mul(v, f) for v in sc["ci_low"]]
        hi_ci = [_mul(v, f) for v in sc["ci_high"]]
        west = [_mul(v, f) for v in sc["window_estimate"]]
        alert, rollback = _mul(c.get("alert"), f), _mul(c.get("rollback"), f)
        span = abs((rollback or 1) - (alert or 0)) or 1.0
        cap_lo = (alert or 0) - 6 * span
        cap_hi = (rollback or 1) + 6 * span
        if n == "latency":
            cap_lo = max(cap_lo, 0.0)
        ylo, yhi = _clip(est + lo_ci + hi_ci + west, [alert, rollback, 0.0 if n != "latency" else 1.0],
                         cap_lo, cap_hi)
        ch = svg.Chart(f"{n}: {k.estimate} with its interval", f"estimate-{n}", y_label=k.axis, ylim=(ylo, yhi))
        ch.band(xs, lo_ci, hi_ci, svg.CANARY, "interval (run)").line(xs, est, svg.CANARY, "estimate (run)")
        ch.points(xs, west, svg.GREY, "this window")
        ch.hline(alert, svg.PASS, "alert").hline(rollback, svg.FAIL, "rollback")
        if at:
            i = _index(xs, at)
            ch.vline(at, color).marker(at, est[i] if i is not None else None, color)
        figs.append(_figure(ch, f"{n}: the run's estimate ({k.estimate}, {k.axis}) and its interval after each "
                                f"window, against alert {fmt_est(n, c.get('alert'))} and rollback "
                                f"{fmt_est(n, c.get('rollback'))}; grey dots are single windows."))
    return '<h2>Evidence per check</h2><div class="grid" id="evidence">' + "".join(figs) + "</div>"


def _mul(v: Any, f: float) -> float | None:
    return v * f if svg._ok(v) else None


def _index(xs: list[Any], x: Any) -> int | None:
    try:
        return xs.index(x)
    except ValueError:
        return None


def _offset(xs: list[float], frac: float) -> list[float]:
    if len(xs) < 2:
        return [x + frac for x in xs]
    gap = min(b - a for a, b in zip(xs, xs[1:]) if b > a) if any(b > a for a, b in zip(xs, xs[1:])) else 1.0
    return [x + frac * gap for x in xs]


def _latency(rep: dict[str, Any]) -> str:
    raw = rep["raw"]
    xs = raw["seq"]
    figs = []
    if xs:
        lat = raw["latency_ms"]
        vals = [v for ver in lat.values() for q in ver.values() for v in q if svg._ok(v) and v > 0]
        ylog = bool(vals) and max(vals) / max(min(vals), 1e-9) > 30
        ch = svg.Chart("Latency percentiles per window", "latency-percentiles", y_label="ms", ylog=ylog,
                       y_zero=not ylog)
        for ver, color in (("stable", svg.STABLE), ("canary", svg.CANARY)):
            for q, dash in (("p50", "2 2"), ("p90", "6 3"), ("p99", None)):
                ch.line(xs, lat[ver][q], color, f"{ver} {q.upper()}", dash=dash)
        figs.append(_figure(ch, "P50, P90 and P99 of successful requests per window (from the intended send "
                                "time: a stalled server shows here), stable in blue, canary in orange."))
        L = raw["load"]
        ch = svg.Chart("Load: asked vs sent", "load", y_label="requests/s", y_zero=True)
        for ver, color in (("stable", svg.STABLE), ("canary", svg.CANARY)):
            ch.line(xs, L[ver]["rate_asked"], color, f"{ver} asked", dash="5 3")
            ch.line(xs, L[ver]["rate_sent"], color, f"{ver} answered")
        figs.append(_figure(ch, "Requests per second the timetable asked for (dashed) and the requests with a "
                                "known outcome (solid), per version and window."))
        ch = svg.Chart("Late sends per window", "late", y_label="sends", y_zero=True)
        ch.bars(_offset(xs, -0.2), L["stable"]["late"], svg.STABLE, "stable late")
        ch.bars(_offset(xs, 0.2), L["canary"]["late"], svg.CANARY, "canary late")
        tot = rep["totals"]
        figs.append(_figure(ch, f"Sends that left after their slot because Shadowgate's concurrency cap was full "
                                f"(its own limit, not the server's): {tot['stable']['late']:,} stable, "
                                f"{tot['canary']['late']:,} canary in the windows shown."))
        figs.append(_figure(_errors_chart(raw), "Failed requests per window by status code: canary above the "
                                                "axis, stable below it."))
    newest = rep["newest"]
    if newest.get("latency_ms"):
        h = newest["latency_ms"]
        ch = svg.Chart(f"Latency histogram, window {newest['seq']}", "latency-histogram", x_label="ms (log scale)",
                       y_label="% of requests", xlog=True, y_zero=True, x_integer=False)
        ch.stairs(h["edges"], h["stable"], svg.STABLE, f"stable ({h['samples']['stable']:,})")
        ch.stairs(h["edges"], h["canary"], svg.CANARY, f"canary ({h['samples']['canary']:,})")
        figs.append(_figure(ch, f"Both versions' latencies in the newest window with load (window {newest['seq']}), "
                                "share of successful requests per bin."))
    if not figs:
        return '<h2>Latency, load and errors</h2><p class="muted" id="latency">No window with raw data yet.</p>'
    return ('<h2>Latency, load and errors</h2><div class="grid" id="latency">' + "".join(figs) + "</div>"
            + _errors_table(rep))


def _errors_chart(raw: dict[str, Any]) -> svg.Chart:
    xs = raw["seq"]
    ch = svg.Chart("Errors by status code", "errors", y_label="failed requests")
    codes = sorted(set(raw["errors_by_code"]["stable"]) | set(raw["errors_by_code"]["canary"]))
    colors = {c: svg.PALETTE[(i + 3) % len(svg.PALETTE)] for i, c in enumerate(codes)}
    for ver, sign in (("canary", 1), ("stable", -1)):
        base = [0.0] * len(xs)
        for code in codes:
            ys = raw["errors_by_code"][ver].get(code)
            if not ys:
                continue
            ch.bars(xs, [sign * y for y in ys], colors[code], code, base=base)
            base = [b + sign * y for b, y in zip(base, ys)]
    ch.hline(0.0, svg.GREY, None, dash=None)
    if not codes:
        ch.line(xs, [0] * len(xs), svg.GREY, "no error")
    return ch


def _errors_table(rep: dict[str, Any]) -> str:
    t = rep["totals"]
    codes = sorted(set(t["stable"]["errors_by_code"]) | set(t["canary"]["errors_by_code"]))
    head = "<tr><th>version</th><th>asked</th><th>answered</th><th>late</th><th>errors</th>" + "".join(
        f"<th>{e(c)}</th>" for c in codes) + "</tr>"
    rows = []
    for ver in ("stable", "canary"):
        v = t[ver]
        rate = f" ({100 * v['errors'] / v['requests']:.2f} %)" if v["requests"] else ""
        rows.append(f"<tr><td>{ver}</td><td class=\"num\">{v['intended']:,}</td><td class=\"num\">{v['requests']:,}"
                    f"</td><td class=\"num\">{v['late']:,}</td><td class=\"num\">{v['errors']:,}{rate}</td>"
                    + "".join(f"<td class=\"num\">{v['errors_by_code'].get(c, 0):,}</td>" for c in codes) + "</tr>")
    title = ("Load and errors over the windows read" if rep["windows"]["thinned"] else
             "Load and errors over all windows")
    return f'<h3>{title}</h3><div class="scroll"><table id="load-totals">{head}{"".join(rows)}</table></div>'


def _accuracy(rep: dict[str, Any]) -> str:
    raw, s, newest = rep["raw"], rep["series"], rep["newest"]
    figs = []
    xs = raw["seq"]
    if xs and any(raw["probes"]["pairs"]):
        p = raw["probes"]
        ch = svg.Chart("Discordant probe pairs per window", "discordant", y_label="pairs")
        ch.bars(xs, p["stable_only"], svg.STABLE, "only stable right")
        ch.bars(xs, [-v for v in p["canary_only"]], svg.CANARY, "only canary right")
        ch.hline(0.0, svg.GREY, None, dash=None)
        t = rep["totals"]["probes"]
        figs.append(_figure(ch, f"Pairs where the versions disagree on correctness (the paired test's evidence): "
                                f"only stable right above the axis, only canary right below. Windows shown: "
                                f"{t['stable_only']:,} vs {t['canary_only']:,} of {t['answered']:,} answered pairs."))
    acc = s["checks"].get("accuracy")
    if acc is not None and any(svg._ok(v) for v in s["golden_rows_seen"]):
        ch = svg.Chart("Golden rows seen", "golden-rows", y_label="distinct rows", y_zero=True)
        ch.line(s["seq"], s["golden_rows_seen"], svg.PASS, "distinct golden rows counted")
        figs.append(_figure(ch, "Distinct golden rows the accuracy check has counted so far (a deterministic model "
                                "answers a repeated input the same way: each row counts once)."))
        ch = svg.Chart("Accuracy per window", "accuracy", y_label="% right")
        ch.line(s["seq"], [_mul(v, 100) for v in acc["stable"]], svg.STABLE, "stable")
        ch.line(s["seq"], [_mul(v, 100) for v in acc["canary"]], svg.CANARY, "canary")
        figs.append(_figure(ch, "Share of the window's probe pairs each version got right."))
    if newest.get("top_score"):
        h = newest["top_score"]
        ch = svg.Chart(f"Top-class score, window {newest.get('scores_seq')}", "scores", x_label="score",
                       y_label="% of probes", y_zero=True, x_integer=False)
        ch.stairs(h["edges"], h["stable"], svg.STABLE, f"stable ({h['probes']['stable']:,})")
        ch.stairs(h["edges"], h["canary"], svg.CANARY, f"canary ({h['probes']['canary']:,})")
        figs.append(_figure(ch, "Prediction drift on the same inputs: the distribution of each version's highest "
                                "class score."))
    if newest.get("classes"):
        cl = newest["classes"]
        k = list(range(len(cl["stable"])))
        ch = svg.Chart(f"Predicted classes, window {newest.get('scores_seq') or newest.get('seq')}", "classes",
                       x_label="class", y_label="probes", y_zero=True)
        ch.bars(_offset(k, -0.2), cl["stable"], svg.STABLE, "stable")
        ch.bars(_offset(k, 0.2), cl["canary"], svg.CANARY, "canary")
        figs.append(_figure(ch, "How often each version predicted each class on the same probes."))
    if not figs:
        return '<h2>Accuracy and predictions</h2><p class="muted" id="accuracy-section">No probe pairs yet.</p>'
    return '<h2>Accuracy and predictions</h2><div class="grid" id="accuracy-section">' + "".join(figs) + "</div>"


def _windows_table(rep: dict[str, Any]) -> str:
    s, raw = rep["series"], rep["raw"]
    rows_by_seq = {q: i for i, q in enumerate(raw["seq"])}
    idx = {q: i for i, q in enumerate(s["seq"])}
    head = ("<tr><th>window</th><th>kind</th><th>health</th><th>ended</th><th>run outcome</th>"
            "<th>requests s / c</th><th>errors s / c</th><th>late s / c</th><th>P99 ms s / c</th>"
            "<th>pairs</th><th>only stable / only canary right</th></tr>")
    out = []
    for seq in rep["windows"]["table"]:
        i = idx.get(seq)
        if i is None:
            continue
        j = rows_by_seq.get(seq)
        if j is not None:
            L, lat, p = raw["load"], raw["latency_ms"], raw["probes"]
            cells = (f'<td class="num">{L["stable"]["requests"][j]:,} / {L["canary"]["requests"][j]:,}</td>'
                     f'<td class="num">{L["stable"]["errors"][j]:,} / {L["canary"]["errors"][j]:,}</td>'
                     f'<td class="num">{L["stable"]["late"][j]:,} / {L["canary"]["late"][j]:,}</td>'
                     f'<td class="num">{_num(lat["stable"]["p99"][j], "{:.1f}")} / '
                     f'{_num(lat["canary"]["p99"][j], "{:.1f}")}</td>'
                     f'<td class="num">{p["pairs"][j]:,}</td>'
                     f'<td class="num">{p["stable_only"][j]:,} / {p["canary_only"][j]:,}</td>')
        else:
            cells = '<td colspan="6" class="muted">raw data not read or compacted</td>'
        out.append(f'<tr data-window="{seq}"><td class="num">{seq}</td><td>{e(s["kind"][i])}</td>'
                   f'<td>{e(s["health"][i])}</td><td class="num">{e(fmt_time(s["ended_at"][i]))}</td>'
                   f'<td>{_badge(s["outcome"][i] or "-", s["outcome"][i])}</td>{cells}</tr>')
    w = rep["windows"]
    note = (f"The first window, the newest {min(w['total'], 20)} and every decision window "
            f"(of {w['total']})." if w["total"] > len(w["table"]) else f"All {w['total']} windows.")
    return (f'<h2>Windows</h2><p class="muted">{e(note)}</p><div class="scroll"><table id="windows">{head}'
            f'{"".join(out)}</table></div>')


def _timeline(rep: dict[str, Any]) -> str:
    head = "<tr><th>time</th><th>what</th><th>answer</th><th>calls</th><th>message</th></tr>"
    rows = []
    for g in rep["timeline_groups"]:
        when = fmt_time(g["first_ts"])
        if g["count"] > 1:
            when += f" … +{fmt_duration(g['last_ts'] - g['first_ts'])}"
        msg = e(_short(g["message"], 400))
        if g.get("last_message") and g["last_message"] != g["message"]:
            msg += f'<br><span class="muted">last: {e(_short(g["last_message"], 400))}</span>'
        status = g.get("status")
        rows.append(f'<tr data-kind="{e(g["kind"])}"><td class="num">{e(when)}</td><td>{e(g["kind"])}</td>'
                    f'<td class="num">{e(status) if status is not None else ""}</td>'
                    f'<td class="num">{g["count"]}</td><td class="reason">{msg}</td></tr>')
    n = len(rep["timeline"])
    return (f'<h2>Timeline</h2><p class="muted">{n} entries: every hook call with its answer (Flagger\'s '
            'rollback hook when it rolls back: its "no rollback" of every tick is not recorded), controller '
            'events, windows, decisions and sessions (started, resumed, idle); repeated alike entries are one '
            'row with their count.</p>'
            f'<div class="scroll"><table id="timeline">{head}{"".join(rows)}</table></div>')
