"""The run store's footprint: bytes per window and per run before and after compaction, a year projected.

    .venv/bin/python -m bench.store_footprint [--runs 20] [--windows 20] [--live-runs 50] [--live-minutes 40]

Runs are written the way the service writes them (webhook/sessions.py
_update_and_store): windows of a simulated rollout (bench/gate_sim.py's
Rollout: 3000 requests per version, 300 probe pairs, CTR counts; the
golden-set check first), each through the gate (analyses.gate.Gate) for its
stored verdict and run state, its raw data encoded as webhook.codec does,
and the timeline a Flagger rollout leaves (the window entries, rollout and
confirm-traffic-increase after every window, the calls at the start and the
end). By default the probes carry what a classifier's do (class scores for
10 classes and 16 input features, as bench/sim.py's); `--classes 0
--features 0` leaves them as gate_sim makes them (labels and predictions
only).

Sizes are real file sizes: each reading is `VACUUM INTO` a fresh file (no
free pages) minus the size of an empty store; the per-table split comes from
SQLite's dbstat (pages, indexes included).

1. `--runs` runs of 1 golden + `--windows` windows, finished: bytes per window
   and per run before compaction (raw data kept) and after it
   (SQLiteStore.compact_run: what a run keeps once it ended), the time the
   compaction takes per run (post-rollout pays it), and the year projected
   at `--per-day` rollouts a day (retention_days 365).
2. `--live-runs` runs measuring at once, a window every `--interval-s`, for
   `--live-minutes`: the store's growth per minute with every raw window
   kept, and its size with the live bound (the newest `--keep` raw windows
   of each run; webhook/retention.py KEEP_RAW_WINDOWS).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sqlite3
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from analyses.config import JudgeConfig
from analyses.gate import Gate
from analyses.window import ProbePairs, Window
from webhook.codec import encode_window
from webhook.reporting.model import window_summary
from webhook.retention import KEEP_RAW_WINDOWS
from webhook.store import RunRecord, SQLiteStore, StoredWindow, load_json

from .gate_sim import Rollout, Scenario

DAY_S = 86400.0


# ------------------------------------------------------------------ windows as a session stores them


def _classifier_probes(rng: np.random.Generator, p: ProbePairs, golden: np.ndarray, classes: int) -> ProbePairs:
    """The same probe pairs with what a classifier's probes carry: class scores and the golden inputs."""
    def scores(pred: np.ndarray) -> np.ndarray | None:
        if not classes:
            return None
        n = pred.size
        conf = np.clip(rng.beta(8, 2, n), 0.11, 0.999)
        s = np.repeat(((1 - conf) / (classes - 1))[:, None], classes, axis=1)
        ok = pred >= 0
        s[np.arange(n)[ok], pred[ok] % classes] = conf[ok]
        s[~ok] = np.nan
        return s

    inputs = golden[p.rows] if golden.shape[1] else None
    return ProbePairs(labels=p.labels, stable_pred=p.stable_pred, canary_pred=p.canary_pred, rows=p.rows,
                      stable_scores=scores(p.stable_pred), canary_scores=scores(p.canary_pred), inputs=inputs)


def _one_line(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 1] + "…"


class RunWriter:
    """Writes simulated runs into a store as the service does: windows, verdicts, states, timeline."""

    def __init__(self, store: SQLiteStore, seed: int, features: int, classes: int, sc: Scenario) -> None:
        self.store, self.sc = store, sc
        self.rng = np.random.default_rng(seed)
        self.features, self.classes = features, classes
        self.golden = self.rng.normal(size=(sc.golden_rows, features)).astype(np.float32)
        self.reference = self.rng.normal(size=(1000, features)) if features else None
        self.n = 0

    def start(self, now: float) -> tuple[RunRecord, Rollout, Gate, object]:
        self.n += 1
        run = RunRecord(id=f"run-{self.n:016x}", analysis="digits", caller="flagger", namespace="prod",
                        name=f"app{self.n % 40}", revision=f"{self.rng.integers(1 << 40):010x}",
                        created_at=now, updated_at=now)
        self.store.create_run(run)
        self.store.add_event(run.id, "flagger:event", "Normal: New revision detected! Scaling up "
                             f"{run.name}.{run.namespace}", {"status": None}, ts=now)
        self.store.add_event(run.id, "flagger:confirm-rollout", f"200: Shadowgate is ready for revision "
                             f"{run.revision}: the canary is checked at pre-rollout, once it has a pod",
                             {"status": 200, "phase": "Initialized"}, ts=now)
        self.store.add_event(run.id, "session", "session started: golden-set check, then load and probes", ts=now)
        gate = Gate(JudgeConfig(), golden_rows=self.sc.golden_rows)
        return run, Rollout(self.rng, self.sc), gate, gate.new_state()

    def window(self, run: RunRecord, ro: Rollout, gate: Gate, state, seq: int, t: float,
               interval_s: float) -> tuple[dict, bytes]:
        """Window `seq` (1: the golden-set check) closed at `t`: the gate's update, stored as a session does."""
        w: Window = ro.golden_window() if seq == 1 else ro.window()[0]
        w.probes = _classifier_probes(self.rng, w.probes, self.golden, self.classes)
        w.reference_inputs = self.reference
        kind = "golden" if seq == 1 else "interval"
        report = gate.update(state, w)
        verdict = gate.verdict(state)
        stored = verdict.to_dict()
        stored["window"] = report.to_dict()
        blob = encode_window(w)
        self.write(run, seq, kind, t, interval_s, stored, blob, verdict.to_dict(), state.to_dict())
        return stored, blob

    def write(self, run: RunRecord, seq: int, kind: str, t: float, interval_s: float, stored: dict, blob: bytes,
              run_verdict: dict, state: dict) -> None:
        s = self.store
        s.add_window(StoredWindow(run.id, seq, kind, t - interval_s, t, stored, blob))
        s.update_run(run.id, verdict=run_verdict, state=state)
        reason = _one_line(stored.get("reason") or "", 300)
        health = (stored.get("window") or {}).get("health")
        s.add_event(run.id, "window", f"window {seq} ({kind}, {health}): {stored.get('outcome')}: {reason}",
                    {"seq": seq, "outcome": stored.get("outcome")}, ts=t)
        hooks = ("pre-rollout",) if seq == 1 else ("rollout", "confirm-traffic-increase")
        for hook in hooks:
            s.add_event(run.id, f"flagger:{hook}", f"200: {reason}", {"status": 200, "phase": "Progressing"}, ts=t)

    def finish(self, run: RunRecord, t: float) -> None:
        s = self.store
        s.add_event(run.id, "flagger:confirm-promotion", "200: promotion confirmed",
                    {"status": 200, "phase": "Promoting"}, ts=t)
        s.add_event(run.id, "decision", "promotion confirmed: load stopped, decision final", ts=t)
        s.update_run(run.id, status="succeeded")
        s.add_event(run.id, "flagger:event", f"Normal: Promotion completed! Scaling down {run.name}.{run.namespace}",
                    {"status": None}, ts=t)
        s.add_event(run.id, "flagger:post-rollout", "200: run succeeded", {"status": 200, "phase": "Succeeded"}, ts=t)


# ------------------------------------------------------------------ sizes


def file_size(store: SQLiteStore, tmp: Path, name: str) -> tuple[int, dict[str, int]]:
    """(bytes of the store written afresh, {table or index: bytes}) via VACUUM INTO and dbstat."""
    out = tmp / f"{name}.db"
    if out.exists():
        out.unlink()
    with store._lock:
        store._db.execute("VACUUM INTO ?", (str(out),))
    db = sqlite3.connect(out)
    try:
        split = {r[0]: int(r[1]) for r in db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")}
    except sqlite3.OperationalError:  # SQLite built without dbstat
        split = {}
    db.close()
    size = os.path.getsize(out)
    out.unlink()
    return size, split


def _group(split: dict[str, int], base: dict[str, int]) -> dict[str, int]:
    """Bytes per table, its indexes included (SQLite names them sqlite_autoindex_<table>_N or ours)."""
    owner = {"runs_by_time": "runs", "runs_to_compact": "runs", "timeline_by_run": "timeline"}
    out: dict[str, int] = {}
    for name, b in split.items():
        table = owner.get(name, name)
        if name.startswith("sqlite_autoindex_"):
            table = name[len("sqlite_autoindex_"):].rsplit("_", 1)[0]
        out[table] = out.get(table, 0) + b - base.get(name, 0)
    return out


def mb(b: float) -> str:
    return f"{b / 1e6:,.1f} MB" if b < 1e9 else f"{b / 1e9:,.2f} GB"


def kb(b: float) -> str:
    return f"{b / 1e3:,.1f} kB"


# ------------------------------------------------------------------ the store's preset dictionary


def dictionary_text(seed: int = 1) -> bytes:
    """What webhook/store/base.py's ZDICT_V1 was made of: a window's summary and its stored verdict (window 10
    of a simulated run with classifier probes), compact JSON as pack_json writes it, every decimal number
    written 0 (the keys, words and structure are what repeats from window to window)."""
    sc = Scenario()
    rng = np.random.default_rng(seed)
    ro = Rollout(rng, sc)
    golden = rng.normal(size=(sc.golden_rows, 16)).astype(np.float32)
    reference = rng.normal(size=(1000, 16))
    gate = Gate(JudgeConfig(), golden_rows=sc.golden_rows)
    state = gate.new_state()
    for seq in range(1, 11):
        w = ro.golden_window() if seq == 1 else ro.window()[0]
        w.probes = _classifier_probes(rng, w.probes, golden, 10)
        w.reference_inputs = reference
        report = gate.update(state, w)
    stored = gate.verdict(state).to_dict()
    stored["window"] = report.to_dict()
    compact = (",", ":")
    text = (json.dumps(window_summary(encode_window(w), seq=10), separators=compact)
            + json.dumps(stored, separators=compact))
    return re.sub(r"-?\d+\.\d+(e-?\d+)?", "0", text).encode()


def print_dictionary() -> None:
    """The literal for webhook/store/base.py (only for a new format version: blobs written need their dictionary)."""
    text = base64.b85encode(zlib.compress(dictionary_text(), 9)).decode()
    print(f"# {len(dictionary_text())} bytes, made by `python -m bench.store_footprint --make-dict`")
    print("_ZDICT = (")
    for i in range(0, len(text), 100):
        print(f'    "{text[i:i + 100]}"')
    print(")")


# ------------------------------------------------------------------ the benchmark


def finished_runs(args, tmp: Path) -> dict[str, float]:
    store = SQLiteStore(str(tmp / "finished.db"))  # no raw policy: compaction below, run by run, timed
    empty, base = file_size(store, tmp, "empty")
    writer = RunWriter(store, 1, args.features, args.classes, Scenario())
    t0 = time.time() - DAY_S
    ids = []
    raw_sizes, verdict_sizes = [], []
    for _ in range(args.runs):
        run, ro, gate, state = writer.start(t0)
        for seq in range(1, args.windows + 2):
            t = t0 + seq * args.interval_s
            stored, blob = writer.window(run, ro, gate, state, seq, t, args.interval_s)
            raw_sizes.append(len(blob))
        writer.finish(run, t0 + (args.windows + 2) * args.interval_s)
        ids.append(run.id)
        t0 += args.interval_s * (args.windows + 3)
    with store._lock:
        verdict_sizes = [r[0] for r in store._db.execute("SELECT length(verdict) FROM windows")]
        text_sizes = [len(json.dumps(load_json(r[0]))) for r in store._db.execute("SELECT verdict FROM windows")]
    windows = args.runs * (args.windows + 1)
    before, split_before = file_size(store, tmp, "before")
    costs = []
    for run_id in ids:
        t = time.perf_counter()
        store.compact_run(run_id)
        costs.append(time.perf_counter() - t)
    after, split_after = file_size(store, tmp, "after")
    with store._lock:
        summaries = [r[0] for r in store._db.execute("SELECT length(summary) FROM windows")]
        summary_text = [len(json.dumps(load_json(r[0]))) for r in store._db.execute("SELECT summary FROM windows")]
        left = store._db.execute("SELECT COUNT(*) FROM windows WHERE data IS NOT NULL").fetchone()[0]
    store.close()
    assert left == 0, f"{left} windows kept raw data"
    per_win_before = (before - empty) / windows
    per_win_after = (after - empty) / windows
    per_run_after = (after - empty) / args.runs
    print(f"## {args.runs} finished runs of 1 golden + {args.windows} windows "
          f"({'class scores for %d classes, ' % args.classes if args.classes else ''}"
          f"{'%d input features, ' % args.features if args.features else ''}3000 requests per version, "
          f"300 probe pairs)\n")
    print("| | per window | per run | all runs |")
    print("|---|---|---|---|")
    print(f"| raw data (codec) | {kb(statistics.mean(raw_sizes))} | {kb(sum(raw_sizes) / args.runs)} | "
          f"{mb(sum(raw_sizes))} |")
    print(f"| verdict (JSON text; stored compressed) | {kb(statistics.mean(text_sizes))}; "
          f"{kb(statistics.mean(verdict_sizes))} | | |")
    print(f"| summary of the raw data (JSON text; stored compressed) | {kb(statistics.mean(summary_text))}; "
          f"{kb(statistics.mean(summaries))} | | |")
    print(f"| store before compaction | {kb(per_win_before)} | {kb((before - empty) / args.runs)} | "
          f"{mb(before - empty)} |")
    print(f"| store after compaction | {kb(per_win_after)} | {kb(per_run_after)} | {mb(after - empty)} |")
    print(f"\ncompaction per run (post-rollout pays it): median {1000 * statistics.median(costs):.0f} ms, "
          f"max {1000 * max(costs):.0f} ms\n")
    g_before, g_after = _group(split_before, base), _group(split_after, base)
    if g_after:
        print("| table (with its indexes) | per window before | per window after |")
        print("|---|---|---|")
        for t in sorted(set(g_before) | set(g_after), key=lambda t: -g_before.get(t, 0)):
            if max(g_before.get(t, 0), g_after.get(t, 0)) > 0:
                print(f"| {t} | {kb(g_before.get(t, 0) / windows)} | {kb(g_after.get(t, 0) / windows)} |")
        print()
    year_runs = 365 * args.per_day
    print(f"A year at {args.per_day} rollouts a day ({year_runs:,} runs of {args.windows + 1} windows, "
          f"retention_days 365): {mb(year_runs * per_run_after)} compacted; it would be "
          f"{mb(year_runs * (before - empty) / args.runs)} with raw data kept.\n")
    return {"per_window_before": per_win_before, "per_window_after": per_win_after, "per_run_after": per_run_after,
            "raw_per_window": statistics.mean(raw_sizes)}


def live_runs(args, tmp: Path, keep: int | None) -> list[tuple[float, int]]:
    """Sizes (minutes, bytes) of a store with `args.live_runs` runs measuring at once."""
    store = SQLiteStore(str(tmp / f"live-{keep}.db"))
    store.set_raw_policy(compact_on_finish=True, keep_raw_windows=keep)
    empty, _ = file_size(store, tmp, "empty")
    writer = RunWriter(store, 2, args.features, args.classes, Scenario())
    # One simulated rollout's windows, replayed by every run (a gate update and an encoding per window
    # would make this benchmark minutes long; the bytes stored are the same).
    run0, ro, gate, state = writer.start(0.0)
    per_min = 60.0 / args.interval_s
    n_windows = int(args.live_minutes * per_min) + 1
    pool = []
    for seq in range(1, min(n_windows, 40) + 1):
        stored, blob = writer.window(run0, ro, gate, state, seq, float(seq), args.interval_s)
        pool.append((stored, blob, gate.verdict(state).to_dict(), state.to_dict()))
    store.prune(time.time() + 1)  # the pool's run goes; the live runs below are what is measured
    runs = [writer.start(time.time())[0] for _ in range(args.live_runs)]
    sizes = []
    t0 = time.time()
    marks = {int(m * per_min) for m in range(0, int(args.live_minutes) + 1, 5)} | {n_windows}
    for seq in range(1, n_windows + 1):
        stored, blob, rv, st = pool[0] if seq == 1 else pool[1 + (seq - 2) % (len(pool) - 1)]
        for run in runs:
            writer.write(run, seq, "golden" if seq == 1 else "interval", t0 + seq * args.interval_s,
                         args.interval_s, stored, blob, rv, st)
        if seq in marks:
            size, _ = file_size(store, tmp, "live")
            sizes.append((seq / per_min, size - empty))
    store.close()
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="finished runs written")
    ap.add_argument("--windows", type=int, default=20, help="windows per run after the golden-set check")
    ap.add_argument("--per-day", type=int, default=200, help="rollouts a day, for the year's projection")
    ap.add_argument("--live-runs", type=int, default=50, help="runs measuring at once")
    ap.add_argument("--live-minutes", type=float, default=40.0, help="minutes of windows of the live runs")
    ap.add_argument("--interval-s", type=float, default=30.0, help="window length (server.interval_s)")
    ap.add_argument("--keep", type=int, default=KEEP_RAW_WINDOWS, help="raw windows a live run keeps")
    ap.add_argument("--classes", type=int, default=10, help="class scores per probe (0: none)")
    ap.add_argument("--features", type=int, default=16, help="input features per probe (0: none)")
    ap.add_argument("--make-dict", action="store_true", help="print a preset dictionary for webhook/store/base.py")
    args = ap.parse_args(argv)
    if args.make_dict:
        print_dictionary()
        return 0
    with tempfile.TemporaryDirectory(prefix="shadowgate-footprint-") as d:
        tmp = Path(d)
        fin = finished_runs(args, tmp)
        if args.live_runs > 0 and args.live_minutes > 0:
            kept = live_runs(args, tmp, None)
            bounded = live_runs(args, tmp, args.keep)
            print(f"## {args.live_runs} live runs, a window every {args.interval_s:g} s "
                  f"({args.live_runs * 60 / args.interval_s:g} windows a minute)\n")
            print(f"| minutes | every raw window kept | newest {args.keep} raw windows per run kept |")
            print("|---|---|---|")
            for (m, a), (_, b) in zip(kept, bounded):
                print(f"| {m:g} | {mb(a)} | {mb(b)} |")
            (m0, a0), (m1, a1) = kept[0], kept[-1]
            rate = (a1 - a0) / (m1 - m0)
            bound = args.live_runs * (args.keep * fin["per_window_before"])
            per_window = rate / (args.live_runs * 60 / args.interval_s)
            print(f"\nGrowth with every raw window kept: {mb(rate)} a minute ({kb(per_window)} "
                  f"a window); with the bound, flat once each run has {args.keep} windows "
                  f"({args.keep * args.interval_s / 60:g} min), at about {args.live_runs} x {args.keep} raw windows "
                  f"= {mb(bound)} plus the compact rest.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
