"""The store keeps runs, windows, checks and timelines across processes and restarts."""

from __future__ import annotations

import numpy as np

from analyses.window import CtrCounts
from tests.webhook.conftest import payload
from tests.webhook.scripted import BAD, GOOD, window
from webhook.codec import decode_window, encode_window
from webhook.store import RunRecord, SQLiteStore, StoredWindow


def test_window_codec_round_trip():
    w = window(seed=3)
    w.ctr = CtrCounts(10, 1000, 7, 1000)
    back = decode_window(encode_window(w))
    np.testing.assert_array_equal(back.probes.labels, w.probes.labels)
    np.testing.assert_array_equal(back.probes.canary_pred, w.probes.canary_pred)
    np.testing.assert_allclose(back.canary.latencies_s, w.canary.latencies_s)
    assert back.canary.requests == w.canary.requests and back.stable.errors == w.stable.errors
    assert back.ctr == w.ctr


def test_latency_samples_are_bounded():
    w = window(seed=1)
    back = decode_window(encode_window(w, max_latency_samples=50))
    assert back.stable.latencies_s.size == 50
    assert back.stable.requests == 2000


def test_runs_windows_and_timeline_survive_a_new_store(tmp_path):
    path = str(tmp_path / "s.db")
    s1 = SQLiteStore(path)
    run = RunRecord(id="run-0000000000000001", analysis="digits", caller="flagger", namespace="test",
                    name="podinfo", revision="abc")
    s1.create_run(run)
    verdict = {"outcome": "fail", "passed": False, "checks": [
        {"name": "accuracy", "stable": 0.95, "canary": 0.6, "difference": -0.35, "p_value": 1e-9,
         "verdict": "fail", "critical": True, "reason": "drop"}]}
    s1.add_window(StoredWindow(run.id, 1, "interval", 1.0, 31.0, verdict, encode_window(window())))
    s1.add_event(run.id, "flagger:rollout", "412: accuracy dropped")
    s1.update_run(run.id, status="failed", verdict=verdict)
    s1.close()

    s2 = SQLiteStore(path)
    got = s2.get_run(run.id)
    assert got.status == "failed" and got.windows == 1 and got.verdict["outcome"] == "fail"
    assert s2.find_run("flagger", "digits", "test", "podinfo", "abc").id == run.id
    ws = s2.windows(run.id, with_data=True)
    assert ws[0].verdict["checks"][0]["name"] == "accuracy"
    assert len(decode_window(ws[0].data).probes) == 300
    assert s2.timeline(run.id)[0]["message"] == "412: accuracy dropped"
    assert [r.id for r in s2.list_runs(status="failed")] == [run.id]
    assert s2._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = s2._db.execute("SELECT canary, verdict FROM checks WHERE run_id=?", (run.id,)).fetchone()
    assert tuple(row) == (0.6, "fail")
    s2.close()


def test_a_restart_takes_the_run_over_from_its_stored_state(make_app, config_dict):
    """The gate state is stored after every window: a new process continues the same run."""
    from tests.webhook.test_flagger import close

    app1 = make_app(config_dict, spec=GOOD)
    c1 = app1.test_client()
    assert c1.post("/flagger/pre-rollout", json=payload()).status_code == 200
    close(app1)
    run_id = c1.get("/api/v1/runs").json["runs"][0]["id"]
    app1.extensions["shadowgate"].close()  # the process goes away

    app2 = make_app(config_dict, spec=BAD)
    c2 = app2.test_client()
    r = c2.post("/flagger/rollout", json=payload())
    assert r.json["run"] == run_id
    close(app2)
    detail = c2.get(f"/api/v1/runs/{run_id}").json
    assert [w["kind"] for w in detail["windows"]] == ["golden", "interval", "interval"]
    assert any("resumed after 2 stored windows" in e["message"] for e in detail["timeline"])
    # the decision covers the windows from before the restart too
    assert detail["verdict_full"]["look"] == 3


def test_idle_session_stops_and_resumes(make_app, config_dict):
    import time

    config_dict["server"]["idle_timeout_s"] = 0.3
    config_dict["analyses"]["digits"]["interval_s"] = 0.1
    config_dict["analyses"]["digits"]["allow_undecidable"] = True  # scripted windows; only idling matters
    app = make_app(config_dict, spec=GOOD)
    c = app.test_client()
    c.post("/flagger/rollout", json=payload())
    svc = app.extensions["shadowgate"]
    deadline = time.time() + 10
    while svc.sessions.active() and time.time() < deadline:
        time.sleep(0.05)
    assert not svc.sessions.active()
    run = c.get("/api/v1/runs").json["runs"][0]
    assert run["status"] == "idle"
    c.post("/flagger/rollout", json=payload())
    assert c.get("/api/v1/runs").json["runs"][0]["status"] == "running"
    import time
    deadline = time.time() + 5  # the load starts in the background, after the session resumes
    while app.factory.by_analysis["digits"].started < 2 and time.time() < deadline:
        time.sleep(0.01)
    assert app.factory.by_analysis["digits"].started == 2
