"""The store's footprint: a run that ends keeps summaries of its raw data, not the data; reports read the same.

Runs made by the real app (tests/webhook/report_runs.py) are finished by
Flagger's post-rollout and read back; the sizes are bounded by what is kept
(verdicts, summaries, the archived timeline), read from the file, never timed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
import zlib

import numpy as np
import pytest

from analyses.config import JudgeConfig
from analyses.gate import Gate
from tests.webhook.conftest import payload
from tests.webhook.report_runs import GOLDEN_ROWS, RichMeasurement, Spec, close, flagger_run, rich_app, rich_config
from webhook.codec import encode_window
from webhook.reporting.model import DigestCache, build_report
from webhook.reporting.source import ReportSource
from webhook.retention import DAY_S, KEEP_RAW_WINDOWS, Pruner
from webhook.store import ZDICT_V1, RunRecord, SQLiteStore, StoredWindow, load_json, pack_json


def _charts(html: str) -> set[str]:
    return set(re.findall(r'data-chart="([^"]+)"', html))


def _fresh_cache(app) -> None:
    """Forget the app's window digests: the next report reads the store (summaries, not cached raw digests)."""
    reports = app.extensions.get("shadowgate.reports")
    if reports is not None:
        reports.cache = DigestCache()


@pytest.fixture
def app(tmp_path):
    """An app that compacts a run when it finishes (server.compact_after_days: 0)."""
    a = rich_app(tmp_path, {"search": Spec(latency_scale=1.3, late=40, canary_errors=0.004)},
                 rich_config(tmp_path, ("search",), compact_after_days=0))
    yield a
    a.extensions["shadowgate"].close()


def test_a_finished_run_loses_its_raw_data_at_once_and_its_report_reads_the_same(app):
    svc = app.extensions["shadowgate"]
    store = svc.store
    assert store.compact_on_finish and store.keep_raw_windows == KEEP_RAW_WINDOWS
    c = app.test_client()
    run_id = flagger_run(app, "search", windows=5, finish=False)
    assert all(w.data for w in store.windows(run_id, with_data=True))  # measuring: every raw window kept
    before = c.get(f"/reports/{run_id}?format=json").json
    page_before = c.get(f"/reports/{run_id}").get_data(as_text=True)
    api_before = c.get(f"/api/v1/runs/{run_id}").json
    assert before["raw"]["seq"] == [1, 2, 3, 4, 5, 6] and before["totals"]["canary"]["late"] > 0

    assert c.post("/flagger/post-rollout", json=payload(name="search", phase="Succeeded")).status_code == 200

    # right after post-rollout: no raw data, a summary per window, no gate state
    ws = store.windows(run_id, with_data=True)
    assert [w.data for w in ws] == [None] * 6 and all(w.raw_summary["digest"] for w in ws)
    assert [bool(w.raw_summary.get("figures")) for w in ws] == [True, False, False, False, False, True]
    run = store.get_run(run_id)
    assert run.status == "succeeded" and run.state is None
    assert store.stats()["raw_bytes"] == 0 and store.stats()["rows"]["timeline_archive"] == 1

    _fresh_cache(app)
    after = c.get(f"/reports/{run_id}?format=json").json
    # the same decision and the same figures per window, now from the summaries
    for key in ("checks", "series", "raw", "totals", "newest", "drift"):
        assert after[key] == before[key], key
    for key in ("outcome", "deciding_check", "decided_at", "reason", "alpha", "beta"):
        assert after["decision"][key] == before["decision"][key], key
    assert after["run"]["status"] == "succeeded" and not after["decision"]["in_progress"]
    assert after["windows"]["total"] == after["windows"]["raw_read"] == 6
    assert after["windows"]["summarized"] == 6 and after["windows"]["without_data"] == 0
    assert after["timeline"][:len(before["timeline"])] == before["timeline"]
    assert after["timeline"][-1]["kind"] == "flagger:post-rollout"

    r = c.get(f"/reports/{run_id}")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert _charts(page) == _charts(page_before) and {"latency-histogram", "scores", "classes", "load"} <= _charts(page)
    assert "6 without raw data: compacted; their figures from the summaries kept" in page
    assert "raw data not read or compacted" not in page
    text = c.get(f"/reports/{run_id}?format=text").get_data(as_text=True)
    assert "Load and errors" in text and "raw data not read" not in text

    # the runs API shows the same windows, verdicts included (stored compressed, read back whole)
    api = c.get(f"/api/v1/runs/{run_id}").json
    assert api["windows"] == api_before["windows"] and api["verdict_full"] == api_before["verdict_full"]

    # the reports CLI reads the file directly (its own connection): the same report
    direct = json.loads(json.dumps(build_report(ReportSource(path=store.path), run_id, cache=DigestCache())))
    assert direct["raw"] == before["raw"] and direct["newest"] == before["newest"]


def test_a_window_or_hook_call_after_the_end_is_folded_in_by_the_next_pass(app):
    svc = app.extensions["shadowgate"]
    store = svc.store
    c = app.test_client()
    run_id = flagger_run(app, "search", windows=2, finish=False)
    assert c.post("/flagger/post-rollout", json=payload(name="search", phase="Failed")).status_code == 200
    svc.sessions.flush_events()
    timeline = store.timeline(run_id)
    # a window that was closing while the run was finished (the session stops in the background)
    last = store.windows(run_id)[-1]
    w = RichMeasurement(Spec(), *_golden(app)).take_window()
    store.add_window(StoredWindow(run_id, last.seq + 1, "interval", last.ended_at, last.ended_at + 1, last.verdict,
                                  encode_window(w)))
    assert store.windows(run_id, with_data=True)[-1].data is None  # compacted when it arrived
    c.post("/flagger/event", json=payload(name="search", phase="Failed", eventType="Warning",
                                          eventMessage="Canary failed! Scaling down search.test"))
    svc.sessions.flush_events()
    assert store._db.execute("SELECT COUNT(*) FROM timeline WHERE run_id = ?", (run_id,)).fetchone()[0] >= 1
    assert store.compact(time.time() + 1) == 0  # nothing raw left; the late entries are archived
    assert store._db.execute("SELECT COUNT(*) FROM timeline WHERE run_id = ?", (run_id,)).fetchone()[0] == 0
    full = store.timeline(run_id)
    assert full[:len(timeline)] == timeline and full[-1]["kind"] == "flagger:event"
    assert store.compact(time.time() + 1) == 0 and store.get_run(run_id).state is None


def _golden(app) -> tuple[np.ndarray, np.ndarray]:
    f = app.factory
    return f.golden, f.labels


def test_a_live_run_keeps_its_newest_raw_windows_and_resumes_from_its_state(tmp_path):
    config = rich_config(tmp_path, ("digits",), compact_after_days=0)
    app = rich_app(tmp_path, {"digits": Spec()}, config)
    store = app.extensions["shadowgate"].store
    store.set_raw_policy(compact_on_finish=True, keep_raw_windows=3)
    run_id = flagger_run(app, "digits", windows=6, finish=False)
    ws = store.windows(run_id, with_data=True)
    assert [w.seq for w in ws] == list(range(1, 8))
    assert [w.data is not None for w in ws] == [False] * 4 + [True] * 3  # the newest 3 raw windows kept
    assert all(w.raw_summary for w in ws[:4]) and ws[0].raw_summary.get("figures")  # the golden window's
    run = store.get_run(run_id)
    assert run.status == "running" and run.state and run.state["windows"] == 7
    rep = app.test_client().get(f"/reports/{run_id}?format=json").json
    assert rep["raw"]["seq"] == list(range(1, 8)) and rep["windows"]["summarized"] == 4
    assert rep["newest"]["seq"] == 7 and rep["newest"]["latency_ms"]["edges"]
    assert rep["newest"]["scores_seq"] == 7 and rep["newest"]["top_score"]
    app.extensions["shadowgate"].close()  # the process goes away

    # a new process resumes from the stored gate state (never from raw windows, most of which are gone)
    app2 = rich_app(tmp_path, {"digits": Spec()}, config)
    try:
        store2 = app2.extensions["shadowgate"].store
        store2.set_raw_policy(compact_on_finish=True, keep_raw_windows=3)
        r = app2.test_client().post("/flagger/rollout", json=payload(name="digits"))
        assert r.status_code in (200, 412) and r.json["run"] == run_id
        close(app2, run_id)
        assert any("resumed after 7 stored windows" in e["message"] for e in store2.timeline(run_id))
        run = store2.get_run(run_id)
        assert run.windows == 8 and run.state["windows"] == 8 and run.verdict["look"] == 8
        assert [w.data is not None for w in store2.windows(run_id, with_data=True)] == [False] * 5 + [True] * 3
    finally:
        app2.extensions["shadowgate"].close()


# ------------------------------------------------------------------ sizes


def _write_runs(store: SQLiteStore, runs: int, windows: int) -> list[str]:
    """Finished runs of a golden window and `windows` load windows, with the gate's verdicts, as a session."""
    rng = np.random.default_rng(5)
    golden = rng.normal(size=(GOLDEN_ROWS, 6)).astype(np.float32)
    labels = rng.integers(0, 10, GOLDEN_ROWS)
    ids = []
    for n in range(runs):
        m = RichMeasurement(Spec(latency_scale=1.1), golden, labels, seed=n)
        gate = Gate(JudgeConfig(), golden_rows=GOLDEN_ROWS)
        state = gate.new_state()
        run = RunRecord(id=f"run-{n + 1:016x}", analysis="digits", caller="flagger", namespace="test",
                        name=f"app{n}", revision="abc")
        store.create_run(run)
        for seq in range(1, windows + 2):
            w = m._window(np.arange(GOLDEN_ROWS), load=False) if seq == 1 else m.take_window()
            report = gate.update(state, w)
            verdict = gate.verdict(state)
            stored = {**verdict.to_dict(), "window": report.to_dict()}
            store.add_window(StoredWindow(run.id, seq, "golden" if seq == 1 else "interval", 30.0 * seq,
                                          30.0 * seq + 30, stored, encode_window(w)))
            store.update_run(run.id, verdict=verdict.to_dict(), state=state.to_dict())
            for hook in ("window", "flagger:rollout", "flagger:confirm-traffic-increase"):
                store.add_event(run.id, hook, f"200: {verdict.reason[:300]}", {"status": 200})
        store.update_run(run.id, status="succeeded")
        ids.append(run.id)
    return ids


def _file_size(store: SQLiteStore, path) -> int:
    if os.path.exists(path):
        os.unlink(path)
    store._db.execute("VACUUM INTO ?", (str(path),))
    return os.path.getsize(path)


def test_what_a_finished_run_keeps_is_bounded_by_its_verdicts_and_summaries(tmp_path):
    store = SQLiteStore(str(tmp_path / "runs.db"))
    empty = _file_size(store, tmp_path / "empty.db")
    ids = _write_runs(store, runs=3, windows=8)
    before = _file_size(store, tmp_path / "before.db")
    raw = store.stats()["raw_bytes"]
    assert raw > 0

    assert sum(store.compact_run(i) for i in ids) == 27
    after = _file_size(store, tmp_path / "after.db")
    db = store._db
    assert store.stats()["raw_bytes"] == 0
    kept = {
        "verdicts": db.execute("SELECT SUM(length(verdict)) FROM windows").fetchone()[0],
        "summaries": db.execute("SELECT SUM(length(summary)) FROM windows").fetchone()[0],
        "runs": db.execute("SELECT SUM(length(verdict)) FROM runs").fetchone()[0],
        "archive": db.execute("SELECT SUM(length(events)) FROM timeline_archive").fetchone()[0],
        # a checks row: its numbers (about 60 bytes) and its key, twice (the row and the primary key's index)
        "checks": db.execute("SELECT SUM(2 * (length(run_id) + length(name)) + length(verdict) + 60)"
                             " FROM checks").fetchone()[0],
    }
    rows = sum(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("windows", "runs", "checks"))
    # What each window keeps is small: its figures as a summary, its verdict compressed (with the dictionary)
    for w in db.execute("SELECT seq, kind, verdict, summary FROM windows").fetchall():
        summary = load_json(w["summary"])
        assert len(w["summary"]) <= (4000 if summary.get("figures") else 600), (w["seq"], len(w["summary"]))
        assert len(w["verdict"]) <= len(json.dumps(load_json(w["verdict"]))) / 5
    # ... and the file holds that and little else (row headers, keys, pages partly filled): no raw data
    # hiding in its pages (a window's raw data alone is about 40 kB here)
    payload_bytes = sum(kept.values())
    assert after - empty <= 1.5 * payload_bytes + 100 * rows, (after - empty, kept, rows)
    assert after - empty <= (before - empty) / 8
    store.close()


def test_the_live_bound_keeps_a_long_run_flat(tmp_path):
    """With keep_raw_windows, a run's raw data stops growing after that many windows."""
    store = SQLiteStore(str(tmp_path / "runs.db"))
    store.set_raw_policy(compact_on_finish=True, keep_raw_windows=4)
    rng = np.random.default_rng(1)
    m = RichMeasurement(Spec(), rng.normal(size=(GOLDEN_ROWS, 6)).astype(np.float32),
                        rng.integers(0, 10, GOLDEN_ROWS))
    run = RunRecord(id="run-00000000000000aa", analysis="digits", caller="flagger", namespace="t", name="a",
                    revision="r")
    store.create_run(run)
    store.update_run(run.id, state={"windows": 0})
    raw = []
    for seq in range(1, 13):
        store.add_window(StoredWindow(run.id, seq, "interval", seq, seq + 1, {"outcome": "continue"},
                                      encode_window(m.take_window())))
        raw.append(store.stats()["raw_bytes"])
        assert sum(w.data is not None for w in store.windows(run.id, with_data=True)) == min(seq, 4)
    assert max(raw[4:]) <= 1.1 * raw[3]  # flat: four windows' worth from the fourth on
    assert store.windows_compacted == 8
    store.close()


# ------------------------------------------------------------------ formats


def test_the_preset_dictionary_never_changes():
    """Rows written with it need it to be read: a new dictionary is a new format, this one stays."""
    assert hashlib.sha256(ZDICT_V1).hexdigest() == "15abfdf2cb7ceebcdb5568fa1618ba18a52ebcbaec89c46fd5f1b4a9f5149679"


def test_stored_json_reads_back_whatever_wrote_it():
    obj = {"outcome": "fail", "checks": [{"name": "latency", "estimate": 2.0000000000000004, "ci": [1.5, None]}],
           "reason": "latency: P99 canary/stable 2.00x", "n": 10 ** 12, "nan": None}
    blob = pack_json(obj)
    assert blob[:1] == b"\x01" and load_json(blob) == obj
    assert load_json(json.dumps(obj)) == obj  # JSON text: rows written before compression
    assert load_json(zlib.compress(json.dumps(obj).encode())) == obj  # a plain zlib stream
    assert load_json(None) is None


def test_a_store_from_before_compaction_is_upgraded_and_read(tmp_path):
    """An older file (text verdicts, no summaries, no timeline archive) opens, reads, and compacts."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE runs (id TEXT PRIMARY KEY, analysis TEXT NOT NULL, caller TEXT NOT NULL,
            namespace TEXT NOT NULL, name TEXT NOT NULL, revision TEXT NOT NULL, attempt INTEGER NOT NULL,
            status TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, verdict TEXT, state TEXT,
            UNIQUE (caller, analysis, namespace, name, revision, attempt));
        CREATE TABLE windows (run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
            started_at REAL NOT NULL, ended_at REAL NOT NULL, verdict TEXT, data BLOB, PRIMARY KEY (run_id, seq));
        CREATE TABLE checks (run_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, verdict TEXT,
            stable REAL, canary REAL, difference REAL, p_value REAL, critical INTEGER, reason TEXT,
            PRIMARY KEY (run_id, seq, name));
        CREATE TABLE timeline (run_id TEXT NOT NULL, ts REAL NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL,
            data TEXT);
    """)
    rng = np.random.default_rng(2)
    m = RichMeasurement(Spec(), rng.normal(size=(GOLDEN_ROWS, 6)).astype(np.float32),
                        rng.integers(0, 10, GOLDEN_ROWS))
    verdict = {"outcome": "pass", "decided_at": 2, "checks": []}
    now = time.time()
    db.execute("INSERT INTO runs VALUES ('run-00000000000000b1','digits','flagger','t','a','r',1,'succeeded',"
               "?,?,?,?)", (now - 60, now - 30, json.dumps(verdict), json.dumps({"windows": 2})))
    for seq in (1, 2):
        db.execute("INSERT INTO windows VALUES ('run-00000000000000b1',?,?,?,?,?,?)",
                   (seq, "interval", seq, seq + 1, json.dumps(verdict), encode_window(m.take_window())))
    db.execute("INSERT INTO timeline VALUES ('run-00000000000000b1', 1.5, 'window', 'window 1', NULL)")
    db.commit()
    # the reports read the old file as it is (read-only: no summary column, no archive table)
    before = build_report(ReportSource(path=path), "run-00000000000000b1", cache=DigestCache())
    assert before["raw"]["seq"] == [1, 2] and len(before["timeline"]) == 1
    db.close()

    store = SQLiteStore(str(path))
    assert store.windows("run-00000000000000b1")[0].verdict == verdict
    Pruner(store, None, retention_days=365, compact_after_days=0, interval_s=3600).run_once()
    ws = store.windows("run-00000000000000b1", with_data=True)
    assert [w.data for w in ws] == [None, None] and ws[0].verdict == verdict
    assert {r[0] for r in store._db.execute("SELECT typeof(verdict) FROM windows")} == {"blob"}
    after = build_report(ReportSource(path=path), "run-00000000000000b1", cache=DigestCache())
    assert after["raw"] == before["raw"] and after["newest"] == before["newest"]
    assert after["timeline"] == before["timeline"] and store.get_run("run-00000000000000b1").state is None
    store.close()


def test_stale_runs_are_compacted_but_keep_their_state(tmp_path):
    """An idle run untouched for a day (an Argo run ends so) resumes from its state: it is compacted, the
    state kept. One without a state (stored before states were kept) would replay its windows: they stay."""
    store = SQLiteStore(str(tmp_path / "runs.db"))
    rng = np.random.default_rng(3)
    m = RichMeasurement(Spec(), rng.normal(size=(GOLDEN_ROWS, 6)).astype(np.float32),
                        rng.integers(0, 10, GOLDEN_ROWS))
    ids = []
    for n, state in enumerate(({"windows": 2}, None)):
        run = RunRecord(id=f"run-00000000000000c{n}", analysis="digits", caller="flagger", namespace="t",
                        name=f"a{n}", revision="r")
        store.create_run(run)
        for seq in (1, 2):
            store.add_window(StoredWindow(run.id, seq, "interval", seq, seq + 1, {"outcome": "continue"},
                                          encode_window(m.take_window())))
        store.add_event(run.id, "argo:measure", "200: Inconclusive", {"status": 200})
        store.update_run(run.id, status="idle", state=state)
        store._db.execute("UPDATE runs SET updated_at = ? WHERE id = ?", (time.time() - 2 * DAY_S, run.id))
        ids.append(run.id)
    pruner = Pruner(store, None, retention_days=365, compact_after_days=0, interval_s=3600)
    assert pruner.run_once()["compacted"] == 2
    with_state, without = (store.windows(i, with_data=True) for i in ids)
    assert [w.data for w in with_state] == [None, None] and with_state[1].raw_summary["figures"]
    assert all(w.data for w in without)
    run = store.get_run(ids[0])
    assert run.state == {"windows": 2} and run.status == "idle"  # stored compressed, read back whole
    assert store._db.execute("SELECT typeof(state) FROM runs WHERE id = ?", (ids[0],)).fetchone()[0] == "blob"
    assert store.timeline(ids[0])[0]["message"] == "200: Inconclusive"
    assert store.stats()["rows"]["timeline_archive"] == 1
    assert pruner.run_once()["compacted"] == 0
    # it resumes: a new window and state, an entry; the next time it goes stale, all is folded in again
    store.update_run(ids[0], status="running", state={"windows": 3})
    store.add_window(StoredWindow(ids[0], 3, "interval", 3, 4, {"outcome": "continue"}, encode_window(m.take_window())))
    store.add_event(ids[0], "argo:measure", "200: Successful", {"status": 200})
    assert store.get_run(ids[0]).state == {"windows": 3}
    store._db.execute("UPDATE runs SET updated_at = ? WHERE id = ?", (time.time() - 2 * DAY_S, ids[0]))
    assert pruner.run_once()["compacted"] == 1
    assert [e["message"] for e in store.timeline(ids[0])] == ["200: Inconclusive", "200: Successful"]
    assert store.get_run(ids[0]).state == {"windows": 3}
    store.close()
