"""The report of one run: a JSON-safe dict that the page, the terminal form and the API share.

Sources, all from the store (reporting.source):
- the run's stored decision (analyses.results.Verdict.to_dict()): every
  check's estimate, interval, evidence and boundaries;
- per window, the run's decision as of that window plus the window's own
  figures (analyses.gate.WindowReport: "window" in the stored verdict): the
  evidence over time;
- per window, the raw data (webhook.codec): latency samples, load asked
  and sent, late sends, errors by status code, probe pairs, scores; once
  the raw data is dropped (a finished run, a live run's older windows:
  webhook/store/), the summary of it the store kept instead
  (`window_summary`: the same figures);
- the timeline: hook calls with their answers, Flagger events, sessions.

Cost: the per-window series are read for at most `MAX_WINDOWS` windows
(their stored decisions, about 0.15 ms each) and `MAX_RAW_WINDOWS` windows
(their raw data, about 0.7 ms each): every window of a short run; for a long
one, evenly spaced windows plus the newest and every window where a check
or the run was decided. So a report of 1000 windows costs about what one
of 120 does (bench/report_render.py measures it). Each window's digest is
kept in a small cache (windows never change once stored), so a page
reloaded while a run goes on reads only the new windows.
"""

from __future__ import annotations

import io
import json
import math
import re
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..store import FINAL_STATUSES, RunRecord
from ..verdicts import json_safe
from .source import ReportSource, WindowRow

MAX_WINDOWS = 120  # windows whose stored decision is read for the per-window series
MAX_RAW_WINDOWS = 36  # windows whose raw data (samples, probes) is read
NEWEST = 20  # newest windows always read (and listed in the windows table)
TABLE_ROWS = 40  # rows of the windows table at most
LATENCY_BINS = 32
SCORE_BINS = 20


# ------------------------------------------------------------------ units and words per check


@dataclass(frozen=True)
class CheckKind:
    """How a check's numbers read: the estimate's scale and the stable/canary values' unit."""

    title: str
    estimate: str  # what the estimate is
    scale: float  # plotted estimate = estimate * scale
    axis: str  # y label of the estimate chart
    value: str  # what stable/canary are


KINDS: dict[str, CheckKind] = {
    "accuracy": CheckKind("Accuracy on the golden set", "accuracy drop", 100.0, "drop (points)",
                          "accuracy of the window's probes"),
    "latency": CheckKind("Latency: canary / stable quantile", "canary/stable quantile ratio", 1.0, "x-fold",
                         "latency quantile (ms)"),
    "errors": CheckKind("Canary error rate", "canary error rate", 100.0, "%", "error rate"),
    "errors_increase": CheckKind("Error rate increase over stable", "error-rate increase", 100.0, "points",
                                 "error rate"),
    "ctr": CheckKind("CTR drop", "relative CTR drop", 100.0, "% drop", "CTR"),
}


def kind_of(name: str) -> CheckKind:
    return KINDS.get(name) or CheckKind(name, "estimate", 1.0, "estimate", "value")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_est(name: str, v: Any) -> str:
    """An estimate or threshold in the check's units, for people."""
    if not _finite(v):
        return "-"
    if name == "latency":
        return f"{v:.2f}x"
    if name == "accuracy":
        return f"{100 * v:.1f} points"
    if name == "errors":
        return f"{100 * v:.2f} %"
    if name == "errors_increase":
        return f"{100 * v:+.2f} points"
    if name == "ctr":
        return f"{100 * v:.0f} % drop" if v >= 0 else f"{-100 * v:.0f} % higher"
    return f"{v:.4g}"


def fmt_value(name: str, v: Any) -> str:
    """A stable or canary value of one window (latency in ms, rates in %)."""
    if not _finite(v):
        return "-"
    if name == "latency":
        return f"{1000 * v:.1f} ms"
    if name in ("accuracy", "errors", "errors_increase"):
        return f"{100 * v:.2f} %"
    if name == "ctr":
        return f"{100 * v:.3f} %"
    return f"{v:.4g}"


def fmt_ci(name: str, ci: Any) -> str:
    if not ci or len(ci) != 2 or not all(_finite(x) for x in ci):
        return ""
    return f"[{fmt_est(name, ci[0])}, {fmt_est(name, ci[1])}]"


def fmt_time(ts: Any) -> str:
    if not _finite(ts):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def fmt_duration(s: Any) -> str:
    if not _finite(s):
        return "-"
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s // 60:.0f} min {s % 60:02.0f} s"
    return f"{s // 3600:.0f} h {(s % 3600) // 60:02.0f} min"


def pct(v: Any, digits: int = 1) -> str:
    return f"{100 * v:.{digits}f} %" if _finite(v) else "-"


# ------------------------------------------------------------------ the run list


def deciding_check(verdict: dict | None) -> dict[str, Any]:
    """The check that decided a run: {"name", "verdict", "decided_at", "waiting": [...]}.

    fail: the critical check that failed first; pass: the critical check
    that passed last (the run passes when the last one does); continue:
    none, and the critical checks still waiting.
    """
    v = verdict or {}
    checks = [c for c in v.get("checks") or [] if is_gated(c)]
    crit = [c for c in checks if c.get("critical")]
    outcome = v.get("outcome") or "continue"
    big = 10 ** 9
    if outcome == "fail":
        failed = [c for c in checks if c.get("verdict") == "fail"]
        failed.sort(key=lambda c: (not c.get("critical"), c.get("decided_at") or big))
        if failed:
            c = failed[0]
            return {"name": c["name"], "verdict": "fail", "decided_at": c.get("decided_at"), "waiting": []}
    if outcome == "pass" and crit:
        c = max(crit, key=lambda c: c.get("decided_at") or 0)
        return {"name": c["name"], "verdict": "pass", "decided_at": c.get("decided_at"), "waiting": []}
    waiting = [c["name"] for c in crit if c.get("verdict") in ("continue", "nodata")]
    return {"name": None, "verdict": outcome, "decided_at": None, "waiting": waiting}


def run_row(run: RunRecord, now: float | None = None) -> dict[str, Any]:
    """One row of the run list."""
    v = run.verdict or {}
    d = deciding_check(v)
    final = run.status in FINAL_STATUSES
    end = run.updated_at if final else (now or time.time())
    return json_safe({
        "id": run.id, "analysis": run.analysis, "caller": run.caller, "namespace": run.namespace, "name": run.name,
        "revision": run.revision, "attempt": run.attempt, "status": run.status,
        "outcome": v.get("outcome") or "continue", "decided_at": v.get("decided_at"),
        "started_at": run.created_at, "updated_at": run.updated_at, "duration_s": end - run.created_at,
        "windows": run.windows, "deciding_check": d["name"], "waiting": d["waiting"],
        "reason": v.get("reason") or "no window closed yet",
    })


# ------------------------------------------------------------------ window digests


class DigestCache:
    """Digests of stored windows, by (run, seq, end time): a window never changes once stored."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._d: OrderedDict[tuple, dict] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> dict | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: tuple, value: dict) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.max_entries:
                self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)


DEFAULT_CACHE = DigestCache()


_NPY_HEADER = re.compile(r"'descr':\s*'([^']+)'.*'fortran_order':\s*(True|False).*'shape':\s*\(([^)]*)\)", re.S)


def _npy(raw: bytes) -> np.ndarray:
    """One .npy member. The header is parsed with a regex (numpy's reader runs ast.literal_eval per array,
    which is most of the cost for small arrays); anything unusual goes to numpy's reader."""
    if raw[:6] == b"\x93NUMPY":
        major = raw[6]
        if major == 1:
            hlen, start = int.from_bytes(raw[8:10], "little"), 10
        else:
            hlen, start = int.from_bytes(raw[8:12], "little"), 12
        m = _NPY_HEADER.search(raw[start:start + hlen].decode("latin1"))
        if m and m.group(2) == "False" and not m.group(1).startswith(("|O", "O")):
            shape = tuple(int(x) for x in m.group(3).replace(" ", "").split(",") if x)
            return np.frombuffer(raw, dtype=np.dtype(m.group(1)), offset=start + hlen).reshape(shape)
    return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)


def _npz(data: bytes, keys: tuple[str, ...]) -> dict[str, Any]:
    """The members `keys` of a stored window (webhook.codec's npz): only those are decompressed."""
    out: dict[str, Any] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        for k in keys:
            if f"{k}.npy" in names:
                out[k] = _npy(zf.read(f"{k}.npy"))
    if "header" in out:
        out["header"] = json.loads(out["header"].tobytes().decode())
    return out


def _quantiles_ms(lat: np.ndarray) -> list[float | None]:
    """P50, P90, P99 in ms (nearest rank: O(n) with a partition, no full sort)."""
    lat = lat[np.isfinite(lat)]
    n = lat.size
    if n == 0:
        return [None, None, None]
    ranks = [min(n - 1, max(0, math.ceil(q * n) - 1)) for q in (0.5, 0.9, 0.99)]
    part = np.partition(lat, ranks)
    return [float(part[r]) * 1000.0 for r in ranks]


def _raw_digest(data: bytes) -> dict[str, Any]:
    z = _npz(data, ("header", "stable_latencies_s", "canary_latencies_s", "labels", "stable_pred", "canary_pred"))
    header = z.get("header") or {}
    out: dict[str, Any] = {"unmeasured": header.get("unmeasured"), "ctr": header.get("ctr")}
    for ver in ("stable", "canary"):
        h = header.get(ver) or {}
        lat = np.asarray(z.get(f"{ver}_latencies_s", np.empty(0)), dtype=np.float64)
        p50, p90, p99 = _quantiles_ms(lat)
        out[ver] = {"requests": int(h.get("requests", 0)), "errors": int(h.get("errors", 0)),
                    "errors_by_code": {str(k): int(n) for k, n in (h.get("errors_by_code") or {}).items()},
                    "late": int(h.get("late", 0)), "intended": int(h.get("intended", 0)),
                    "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "samples": int(lat.size)}
    labels = z.get("labels")
    if labels is not None and len(labels):
        sp, cp = z["stable_pred"], z["canary_pred"]
        both = (sp >= 0) & (cp >= 0)
        sr, cr = (sp == labels) & both, (cp == labels) & both
        out["probes"] = {"pairs": int(labels.size), "answered": int(both.sum()),
                         "stable_failed": int(np.count_nonzero(sp < 0)),
                         "canary_failed": int(np.count_nonzero(cp < 0)),
                         "stable_right": int(sr.sum()), "canary_right": int(cr.sum()),
                         "stable_only": int((sr & ~cr).sum()), "canary_only": int((cr & ~sr).sum())}
    else:
        out["probes"] = {"pairs": 0, "answered": 0, "stable_failed": 0, "canary_failed": 0, "stable_right": 0,
                         "canary_right": 0, "stable_only": 0, "canary_only": 0}
    return out


SUMMARY_VERSION = 1


def window_summary(data: bytes, *, seq: int, figures: bool = False) -> dict[str, Any]:
    """What a report reads of one window's raw data, kept by the store when it drops the data.

    {"v": 1, "digest": the window's figures (_raw_digest: counts, latency
    quantiles, probe tallies; about 0.7 kB of JSON), "figures": the
    histograms and score distributions (_newest_figures, about 2 kB) when
    `figures` (the store asks for them for the run's newest load window and
    its golden window: the only ones a report draws them of)}.
    """
    out: dict[str, Any] = {"v": SUMMARY_VERSION}
    try:
        out["digest"] = _raw_digest(data)
    except Exception as exc:  # as _digest: a damaged blob costs its figures
        out["digest"] = None
        out["error"] = f"{exc.__class__.__name__}: {exc}"
    if figures:
        try:
            out["figures"] = _newest_figures(seq, data)
        except Exception:
            out["figures"] = {}
    return out


def is_gated(check: dict) -> bool:
    """A check of the gate (it has thresholds), not a drift report (never gating)."""
    return check.get("verdict") != "info" and (check.get("fail_at") is not None or check.get("alert") is not None)


def _digest(row: WindowRow, verdict: dict | None, data: bytes | None,
            summary: dict | None = None) -> dict[str, Any]:
    """What the report needs of one window: small (about 1 kB), so many can be cached.

    The raw-data figures come from `data`, or from `summary` (window_summary) once the data is dropped."""
    v = verdict or {}
    rep = v.get("window") or {}
    wchecks = rep.get("checks") or {}
    d: dict[str, Any] = {"seq": row.seq, "kind": row.kind, "started_at": row.started_at, "ended_at": row.ended_at,
                         "health": rep.get("health"), "outcome": v.get("outcome"), "checks": {}, "drift": {},
                         "raw": None}
    for c in v.get("checks") or []:
        name = c.get("name")
        if not name:
            continue
        if not is_gated(c):
            if c.get("measured"):
                d["drift"][name] = c.get("canary")
            continue
        w = wchecks.get(name) or {}
        ci = c.get("ci") or [None, None]
        measured = bool(w.get("measured"))
        d["checks"][name] = {
            "verdict": c.get("verdict"), "estimate": c.get("estimate"), "ci_low": ci[0], "ci_high": ci[1],
            "llr": c.get("llr"), "fail_evidence": c.get("fail_evidence"), "fail_at": c.get("fail_at"),
            "pass_at": c.get("pass_at"), "alert": c.get("alert", w.get("alert")),
            "rollback": c.get("rollback", w.get("rollback")), "measured": measured, "why": w.get("why"),
            "window_estimate": c.get("window_estimate") if measured else None,
            "stable": w.get("stable"), "canary": w.get("canary"), "n_stable": c.get("n_stable"),
        }
    if data is not None:
        try:
            d["raw"] = _raw_digest(data)
        except Exception as exc:  # a damaged blob costs its figures, never the page
            d["raw"] = None
            d["raw_error"] = f"{exc.__class__.__name__}: {exc}"
    elif summary is not None:
        d["raw"] = summary.get("digest")
        if summary.get("error"):
            d["raw_error"] = summary["error"]
    return d


def select_windows(seqs: list[int], keep: set[int], limit: int = MAX_WINDOWS) -> list[int]:
    """Which windows to read: all up to `limit`; else evenly spaced, the newest and those in `keep`."""
    if len(seqs) <= limit:
        return list(seqs)
    present = set(seqs)
    chosen = {seqs[0]} | set(seqs[-NEWEST:]) | {s for s in keep if s in present}
    room = max(limit - len(chosen), 2)
    step = (len(seqs) - 1) / (room - 1)
    chosen |= {seqs[round(i * step)] for i in range(room)}
    return sorted(chosen)


# ------------------------------------------------------------------ newest window figures


def _hist(values: dict[str, np.ndarray], edges: np.ndarray) -> dict[str, list[float]]:
    """Share of each version's values per bin, in percent."""
    out = {}
    for ver, x in values.items():
        counts, _ = np.histogram(np.clip(x, edges[0], edges[-1]), bins=edges)
        out[ver] = (100.0 * counts / max(x.size, 1)).tolist()
    return out


def _newest_figures(seq: int, data: bytes) -> dict[str, Any]:
    """Both latency histograms and both score distributions of one window."""
    z = _npz(data, ("stable_latencies_s", "canary_latencies_s", "stable_scores", "canary_scores", "stable_pred",
                    "canary_pred"))
    out: dict[str, Any] = {"seq": seq}
    lat = {v: np.asarray(z.get(f"{v}_latencies_s", np.empty(0)), dtype=np.float64) * 1000.0
           for v in ("stable", "canary")}
    lat = {v: x[np.isfinite(x) & (x > 0)] for v, x in lat.items()}
    if all(x.size for x in lat.values()):
        lo = min(float(np.quantile(x, 0.001)) for x in lat.values())
        hi = max(float(x.max()) for x in lat.values())
        hi = max(hi, lo * 1.01)
        edges = np.geomspace(lo, hi, LATENCY_BINS + 1)
        out["latency_ms"] = {"edges": edges.tolist(), **_hist(lat, edges),
                             "samples": {v: int(x.size) for v, x in lat.items()}}
    scores = {v: z.get(f"{v}_scores") for v in ("stable", "canary")}
    if all(s is not None and s.ndim == 2 and s.shape[0] for s in scores.values()):
        top = {v: np.nanmax(np.where(np.isfinite(s), s, np.nan), axis=1) for v, s in scores.items()}
        top = {v: t[np.isfinite(t)] for v, t in top.items()}
        if all(t.size for t in top.values()):
            lo = min(0.0, min(float(t.min()) for t in top.values()))
            hi = max(1.0, max(float(t.max()) for t in top.values()))
            edges = np.linspace(lo, hi, SCORE_BINS + 1)
            out["top_score"] = {"edges": edges.tolist(), **_hist(top, edges),
                                "probes": {v: int(t.size) for v, t in top.items()}}
    preds = {v: z.get(f"{v}_pred") for v in ("stable", "canary")}
    if all(p is not None and p.size for p in preds.values()):
        k = int(max(int(p.max()) for p in preds.values())) + 1
        if 0 < k <= 1000:
            out["classes"] = {v: np.bincount(p[p >= 0], minlength=k).tolist() for v, p in preds.items()}
    return out


# ------------------------------------------------------------------ the decision in words


def _kinds_word(kind: str | None) -> str:
    return {"golden": "the golden-set check", "interval": "an interval window", "early": "a window closed early "
            "by a hook", "final": "the final window"}.get(kind or "", f"a {kind} window" if kind else "a window")


def decision(run: RunRecord, verdict: dict | None, kinds: dict[int, str], live: bool) -> dict[str, Any]:
    """The run's decision in words: what, at which window, against which threshold, with which guarantee."""
    v = verdict or {}
    outcome = v.get("outcome") or "continue"
    alpha, beta = v.get("alpha"), v.get("beta")
    checks = [c for c in v.get("checks") or [] if is_gated(c)]
    crit = [c for c in checks if c.get("critical")]
    d = deciding_check(v)
    at = v.get("decided_at")
    sentences: list[str] = []
    status = run.status
    in_progress = status not in FINAL_STATUSES
    guarantee = []
    if _finite(alpha):
        guarantee.append(f"a canary no worse than `alert` on every check fails the run with probability at most "
                         f"alpha = {pct(alpha, 2 if alpha < 0.01 else 0)}")
    if _finite(beta):
        guarantee.append(f"a canary at or beyond `rollback` on a critical check passes with probability at most "
                         f"beta = {pct(beta, 0)}")
    guarantee_text = ("Guarantee: " + "; ".join(guarantee) + ", however many windows are looked at."
                      if guarantee else "")

    def check_sentence(c: dict, head: str) -> str:
        name = c["name"]
        est = fmt_est(name, c.get("estimate"))
        ci = fmt_ci(name, c.get("ci"))
        return (f"{head}{name}: {kind_of(name).estimate} {est}{' ' + ci if ci else ''} against alert "
                f"{fmt_est(name, c.get('alert'))} and rollback {fmt_est(name, c.get('rollback'))}")

    if outcome == "fail":
        c = next((x for x in checks if x["name"] == d["name"]), None)
        word = "Rolled back" if status == "failed" else "Failed"
        where = f"window {at} ({_kinds_word(kinds.get(at))})" if at else "a window"
        headline = f"{word}: {d['name'] or 'a check'} failed at {where}"
        if c is not None:
            sentences.append(check_sentence(c, "") + ".")
            fe, fa = c.get("fail_evidence"), c.get("fail_at")
            if _finite(fe) and _finite(fa) and fe >= fa:
                sentences.append(f"Its evidence for rollback (log-likelihood ratio of rollback against alert) "
                                 f"reached {fe:.1f}, past the fail boundary log(1/alpha_k) = {fa:.1f} "
                                 f"(alpha_k = {pct(c.get('alpha'), 2)} for this check).")
            else:
                sentences.append(f"Reason: {c.get('reason')}.")
        others = [x for x in checks if x.get("verdict") == "fail" and x["name"] != d["name"]]
        if others:
            sentences.append("Also failed: " + ", ".join(f"{x['name']} (window {x.get('decided_at')})"
                                                         for x in others) + ".")
        sentences.append("A failed run stays failed: every later hook answers fail.")
    elif outcome == "pass":
        word = "Promoted" if status == "succeeded" else "Passed"
        headline = f"{word}: every critical check passed by window {at}"
        for c in sorted(crit, key=lambda c: c.get("decided_at") or 0):
            sentences.append(check_sentence(c, "") + f": passed at window {c.get('decided_at')} "
                             f"(not as bad as rollback).")
        if d["name"]:
            sentences.append(f"The run passed at window {at}, when the last of them ({d['name']}) passed.")
    else:
        n = v.get("look") or run.windows or 0
        headline = f"Undecided after {n} window{'s' if n != 1 else ''}"
        if in_progress:
            headline += ": the run is in progress"
        for c in crit:
            if c.get("verdict") in ("continue", "nodata"):
                fe, fa, llr, pa = c.get("fail_evidence"), c.get("fail_at"), c.get("llr"), c.get("pass_at")
                if c.get("verdict") == "nodata" or not _finite(fa):
                    sentences.append(f"{c['name']}: {c.get('reason') or 'no data yet'}.")
                else:
                    sentences.append(check_sentence(c, "") + f"; evidence for rollback {fe:.1f} of {fa:.1f} to fail, "
                                     f"{llr:.1f} of {pa:.1f} to pass.")
        passed = [c["name"] for c in crit if c.get("verdict") == "pass"]
        if passed:
            sentences.append("Passed already: " + ", ".join(passed) + ".")
    if status == "succeeded" and outcome != "pass":
        sentences.append("The controller promoted the canary before Shadowgate's decision was pass.")
    if status == "failed" and outcome != "fail":
        sentences.append("The controller rolled the canary back without a fail from Shadowgate (another check, "
                         "a timeout or a manual abort).")
    if in_progress:
        sentences.append("In progress: this report shows the windows stored so far"
                         + (" (the session is measuring now)." if live else
                            f" (status {status}: no session is measuring now; the next hook call resumes it)."))
    return json_safe({
        "outcome": outcome, "status": status, "headline": headline, "sentences": sentences,
        "guarantee": guarantee_text, "decided_at": at, "decided_window_kind": kinds.get(at) if at else None,
        "deciding_check": d["name"], "waiting": d["waiting"], "alpha": alpha, "beta": beta,
        "reason": v.get("reason") or "no window closed yet", "warnings": list(v.get("warnings") or []),
        "window_health": v.get("window_health"), "in_progress": in_progress, "live": live,
    })


# ------------------------------------------------------------------ timeline


def _group_key(e: dict) -> tuple | None:
    kind = e.get("kind") or ""
    data = e.get("data") or {}
    msg = e.get("message") or ""
    if kind.startswith("flagger:") and kind != "flagger:event" or kind.startswith("argo:"):
        rest = msg.split(": ", 1)[1] if ": " in msg else msg
        return (kind, data.get("status"), rest.split(":", 1)[0][:40])
    if kind == "window":
        return (kind, data.get("outcome"))
    if kind == "flagger:event":
        return (kind, msg)
    return None


def group_timeline(events: list[dict]) -> list[dict[str, Any]]:
    """The timeline with repeated entries folded: one row per run of alike entries.

    Alike: the same hook with the same status and answer (or windows with the
    same outcome, or the same controller event). Hook calls and windows
    alternate all run long, so a row stays open across other foldable
    entries; it closes when the same hook answers differently, and every
    row closes at an entry that is never folded (a decision, a session
    started or resumed, an error). Rows keep the order of their first entry
    and say how many entries they hold, first and last.
    """
    groups: list[dict[str, Any]] = []
    open_: dict[tuple, dict[str, Any]] = {}
    for e in events:
        key = _group_key(e)
        data = e.get("data") or {}
        if key is None:
            open_.clear()
        else:
            g = open_.get(key)
            if g is not None:
                g["count"] += 1
                g["last_ts"] = e.get("ts")
                g["last_message"] = e.get("message")
                continue
            for k in [k for k in open_ if k[0] == key[0]]:  # the same hook answering differently
                del open_[k]
        g = {"kind": e.get("kind"), "status": data.get("status"), "first_ts": e.get("ts"), "last_ts": e.get("ts"),
             "count": 1, "message": e.get("message"), "last_message": None}
        groups.append(g)
        if key is not None:
            open_[key] = g
    return groups


# ------------------------------------------------------------------ the report


def _series(digests: list[dict[str, Any]], check_names: list[str], drift_names: list[str]) -> dict[str, Any]:
    """Per-window series from the stored decisions: one entry per window read."""
    s: dict[str, Any] = {"seq": [d["seq"] for d in digests], "kind": [d["kind"] for d in digests],
                         "health": [d.get("health") for d in digests], "outcome": [d.get("outcome") for d in digests],
                         "ended_at": [d["ended_at"] for d in digests]}
    fields = ("estimate", "ci_low", "ci_high", "window_estimate", "fail_evidence", "llr", "fail_at", "pass_at",
              "alert", "rollback", "measured", "stable", "canary", "verdict")
    s["checks"] = {name: {f: [(d["checks"].get(name) or {}).get(f) for d in digests] for f in fields}
                   for name in check_names}
    s["drift"] = {name: [d["drift"].get(name) for d in digests] for name in drift_names}
    s["golden_rows_seen"] = [(d["checks"].get("accuracy") or {}).get("n_stable") for d in digests]
    return s


def _raw_series(digests: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-window series from the raw window data (windows whose data is still stored)."""
    digests = [d for d in digests if d.get("raw")]
    raw = [d["raw"] for d in digests]
    dur = [max(d["ended_at"] - d["started_at"], 0.0) for d in digests]
    s: dict[str, Any] = {"seq": [d["seq"] for d in digests], "kind": [d["kind"] for d in digests],
                         "duration_s": dur, "unmeasured": [r.get("unmeasured") for r in raw]}
    s["latency_ms"] = {ver: {q: [r[ver][f"{q}_ms"] for r in raw] for q in ("p50", "p90", "p99")}
                       for ver in ("stable", "canary")}
    load: dict[str, Any] = {}
    for ver in ("stable", "canary"):
        L = {k: [r[ver][k] for r in raw] for k in ("intended", "requests", "late", "errors")}
        L["rate_asked"] = [r[ver]["intended"] / t if t > 0 and r[ver]["intended"] else None for r, t in zip(raw, dur)]
        L["rate_sent"] = [r[ver]["requests"] / t if t > 0 else None for r, t in zip(raw, dur)]
        load[ver] = L
    s["load"] = load
    s["errors_by_code"] = {ver: {c: [r[ver]["errors_by_code"].get(c, 0) for r in raw]
                                 for c in sorted({c for r in raw for c in r[ver]["errors_by_code"]})}
                           for ver in ("stable", "canary")}
    s["probes"] = {k: [r["probes"][k] for r in raw]
                   for k in ("pairs", "answered", "stable_right", "canary_right", "stable_only", "canary_only",
                             "stable_failed", "canary_failed")}
    return s


def _totals(raw: dict[str, Any]) -> dict[str, Any]:
    """Sums over the windows whose raw data was read."""
    out: dict[str, Any] = {}
    for ver in ("stable", "canary"):
        L = raw["load"][ver]
        out[ver] = {k: int(sum(L[k])) for k in ("intended", "requests", "late", "errors")}
        out[ver]["errors_by_code"] = {c: int(sum(xs)) for c, xs in raw["errors_by_code"][ver].items()}
    out["probes"] = {k: int(sum(raw["probes"][k]))
                     for k in ("pairs", "answered", "stable_only", "canary_only", "stable_failed", "canary_failed")}
    return out


def _read(source: ReportSource, run_id: str, rows: dict[int, WindowRow], seqs: list[int], raw: bool,
          cache: DigestCache) -> dict[int, dict]:
    """Digests of windows `seqs` (with their raw data when `raw`), from the cache or the store."""
    out: dict[int, dict] = {}
    missing = []
    # A digest from the raw data and one from its summary are the same: one cache entry serves both.
    for seq in seqs:
        w = rows[seq]
        hit = cache.get((run_id, seq, w.ended_at, raw and w.has_raw))
        if hit is not None:
            out[seq] = hit
        else:
            missing.append(seq)
    stored = source.windows(run_id, missing, with_data=raw)
    summaries = source.summaries(run_id, [s for s, (_, data) in stored.items() if data is None]) if raw else {}
    for seq, (wv, data) in stored.items():
        w = rows[seq]
        out[seq] = _digest(w, wv, data if raw else None, summaries.get(seq))
        cache.put((run_id, seq, w.ended_at, raw and w.has_raw), out[seq])
    return out


def _newest(source: ReportSource, run_id: str, index: list[WindowRow]) -> dict[str, Any]:
    """Histograms and score distributions of the newest window with load (scores: of the golden window if
    no later window has them)."""
    newest: dict[str, Any] = {}
    for golden in (False, True):
        for w in reversed(index):
            if not w.has_raw or (w.kind == "golden") != golden:
                continue
            got = source.windows(run_id, [w.seq], with_data=True).get(w.seq)
            fig: dict[str, Any] | None = None
            if got and got[1] is not None:
                try:
                    fig = _newest_figures(w.seq, got[1])
                except Exception:
                    fig = {}
            else:  # raw data dropped: the figures the store kept (a copy: `newest` is changed below)
                summary = source.summaries(run_id, [w.seq]).get(w.seq)
                if summary is not None:
                    fig = dict(summary.get("figures") or {})
            if fig is not None:
                if not golden:
                    newest = fig
                else:
                    for k in ("top_score", "classes"):
                        if k not in newest and k in fig:
                            newest[k] = fig[k]
                            newest["scores_seq"] = w.seq
            break
        if "top_score" in newest:
            break
    if "top_score" in newest and "scores_seq" not in newest:
        newest["scores_seq"] = newest.get("seq")
    return newest


def build_report(source: ReportSource, run_id: str, *, live: bool = False, cache: DigestCache | None = None,
                 url: str | None = None, max_windows: int = MAX_WINDOWS, max_raw_windows: int = MAX_RAW_WINDOWS,
                 timeline_flush: Callable[[], None] | None = None) -> dict[str, Any] | None:
    """The report of run `run_id` (None when there is no such run).

    live: a session is measuring the run now (the page says so).
    url: the report's public address, when the service has one.
    max_windows, max_raw_windows: windows read for the series from the
    stored decisions (cheap) and from the raw data (latency samples, probes).
    """
    cache = DEFAULT_CACHE if cache is None else cache
    t0 = time.perf_counter()
    run = source.run(run_id)
    if run is None:
        return None
    verdict = run.verdict or {}
    index = source.window_index(run_id)
    seqs = [w.seq for w in index]
    rows = {w.seq: w for w in index}
    keep = {c.get("decided_at") for c in verdict.get("checks") or [] if c.get("decided_at")}
    if verdict.get("decided_at"):
        keep.add(verdict["decided_at"])
    raw_seqs = select_windows([w.seq for w in index if w.has_raw], keep, max_raw_windows)
    chosen = sorted(set(select_windows(seqs, keep, max_windows)) | set(raw_seqs))
    raw_digests = _read(source, run_id, rows, raw_seqs, True, cache)
    rest = [s for s in chosen if s not in raw_digests]
    digests = {**raw_digests, **_read(source, run_id, rows, rest, False, cache)}
    ordered = [digests[s] for s in chosen if s in digests]

    final_checks = [c for c in verdict.get("checks") or [] if is_gated(c)]
    drift_checks = [c for c in verdict.get("checks") or [] if not is_gated(c)]
    drift_names = [c["name"] for c in drift_checks]
    names = [c["name"] for c in final_checks]
    for d in ordered:
        for n in d["checks"]:
            if n not in names:
                names.append(n)
    series = _series(ordered, names, drift_names)
    raw = _raw_series([raw_digests[s] for s in raw_seqs if s in raw_digests])

    if timeline_flush is not None:
        timeline_flush()
    events = source.timeline(run_id)
    kinds = {w.seq: w.kind for w in index}
    newest_seqs = set(seqs[-NEWEST:])
    table = [s for s in chosen if s in newest_seqs or s in keep or s == (seqs[0] if seqs else None)][-TABLE_ROWS:]
    report = {
        "run": {**run_row(run), "live": live, "url": url, "api": f"/api/v1/runs/{run.id}"},
        "decision": decision(run, verdict, kinds, live),
        "checks": json_safe(final_checks),
        "drift": json_safe(drift_checks),
        "windows": {"total": len(index), "read": len(ordered), "raw_read": len(raw["seq"]),
                    "thinned": len(ordered) < len(index) or len(raw["seq"]) < sum(w.has_raw for w in index),
                    # windows whose raw-data figures are gone (dropped before summaries were kept)
                    "without_data": sum(1 for w in index if not w.has_raw),
                    "summarized": sum(1 for w in index if w.has_summary and not w.has_data), "table": table},
        # Plain floats and ints already (from JSON and numpy .tolist()): no json_safe pass over them.
        "series": series,
        "raw": raw,
        "totals": _totals(raw),
        "newest": _newest(source, run_id, index),
        "timeline": events,
        "timeline_groups": group_timeline(events),
        "drift_report": f"/reports/{run.id}/drift",
        "built_in_ms": None,
    }
    report["built_in_ms"] = round((time.perf_counter() - t0) * 1000.0, 2)
    return report
