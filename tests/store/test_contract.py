"""The Store contract, the same tests against both backends: SQLite (one file) and a real PostgreSQL.

Then the lease contract: trivial with SQLite (one process owns every run), and with PostgreSQL one
owner per run at a time, the least-loaded replica first, windows stored only by the lease holder.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.webhook.scripted import window
from webhook.codec import decode_window, encode_window
from webhook.retention import DAY_S
from webhook.store import LeaseLost, RunRecord, SQLiteStore, StoredWindow, open_store

VERDICT = {"outcome": "pass", "passed": True, "checks": [
    {"name": "accuracy", "stable": 0.95, "canary": 0.94, "difference": -0.01, "p_value": 0.4, "verdict": "pass",
     "critical": True, "reason": "same"}]}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(str(tmp_path / "runs.db"))
    else:
        s = open_store(request.getfixturevalue("postgres_url"))
    yield s
    s.close()


def _run(store, n: int, **kw) -> RunRecord:
    run = RunRecord(id=f"run-{n:016x}", analysis="digits", caller="flagger", namespace="test", name=f"app{n}",
                    revision="abc", **kw)
    store.create_run(run)
    return run


def _age(store, run_id: str, days: float) -> None:
    """Make the run look `days` old (the store stamps every write with the current time)."""
    then = time.time() - days * DAY_S
    if isinstance(store, SQLiteStore):
        store._db.execute("UPDATE runs SET updated_at = ?, created_at = ? WHERE id = ?", (then, then, run_id))
    else:
        store._exec("UPDATE runs SET updated_at = %s, created_at = %s WHERE id = %s", (then, then, run_id))


def _window(run_id: str, seq: int, **kw) -> StoredWindow:
    return StoredWindow(run_id, seq, "interval", float(seq), seq + 1.0, VERDICT, encode_window(window(seed=seq)), **kw)


def test_runs_windows_and_timeline_round_trip(store):
    run = _run(store, 1)
    assert store.get_run(run.id).status == "running" and store.get_run("run-nope") is None
    store.add_window(_window(run.id, 1), state={"windows": 1}, run_verdict={"outcome": "continue"})
    store.add_window(_window(run.id, 2))
    store.add_event(run.id, "flagger:rollout", "200: continue", {"status": 200}, ts=10.0)
    store.add_event(run.id, "session", "started", ts=5.0)
    store.update_run(run.id, status="failed", verdict={"outcome": "fail"})

    got = store.get_run(run.id)
    assert (got.status, got.windows, got.verdict, got.state) == ("failed", 2, {"outcome": "fail"}, {"windows": 1})
    assert store.find_run("flagger", "digits", "test", "app1", "abc").id == run.id
    assert store.find_run("flagger", "digits", "test", "app1", "other") is None
    ws = store.windows(run.id, with_data=True)
    assert [w.seq for w in ws] == [1, 2] and ws[0].verdict["checks"][0]["canary"] == 0.94
    assert len(decode_window(ws[1].data).probes) == 300
    assert store.windows(run.id)[0].data is None  # without data unless asked
    assert [e["message"] for e in store.timeline(run.id)] == ["started", "200: continue"]
    assert store.timeline(run.id)[1]["data"] == {"status": 200}
    assert [r.id for r in store.list_runs(status="failed")] == [run.id]
    assert store.list_runs(analysis="podinfo") == []
    with pytest.raises(ValueError):
        store.update_run(run.id, status="exploded")
    store.ping()


def test_a_later_attempt_is_the_one_found(store):
    _run(store, 1)
    second = RunRecord(id="run-0000000000000002", analysis="digits", caller="flagger", namespace="test",
                       name="app1", revision="abc", attempt=2)
    store.create_run(second)
    assert store.find_run("flagger", "digits", "test", "app1", "abc").attempt == 2


def test_retention_prunes_old_runs_with_everything_they_own(store):
    old = _run(store, 1)
    for seq in (1, 2):
        store.add_window(_window(old.id, seq))
    store.add_event(old.id, "x", "y")
    store.update_run(old.id, status="succeeded")
    _age(store, old.id, 40)
    kept = _run(store, 2)
    store.add_window(_window(kept.id, 1))

    deleted = store.prune(time.time() - 30 * DAY_S)
    assert deleted == {"runs": 1, "windows": 2, "checks": 2, "timeline": 1, "timeline_archive": 0}
    assert store.get_run(old.id) is None and store.windows(old.id) == [] and store.timeline(old.id) == []
    assert store.get_run(kept.id).windows == 1
    assert store.stats()["rows"] == {"runs": 1, "windows": 1, "checks": 1, "timeline": 0, "timeline_archive": 0}


def test_a_finished_run_is_compacted_and_reads_the_same(store):
    run = _run(store, 1)
    for seq in (1, 2, 3):
        store.add_window(_window(run.id, seq), state={"w": seq})
        store.add_event(run.id, "window", f"window {seq}", ts=float(seq))
    store.update_run(run.id, status="succeeded")
    before = ([w.summary() for w in store.windows(run.id)], store.timeline(run.id))
    raw = store.stats()["raw_bytes"]
    assert raw > 0

    assert store.compact(time.time() + 1) == 3
    assert store.stats()["raw_bytes"] == 0 and store.stats()["rows"]["timeline_archive"] == 1
    assert ([w.summary() for w in store.windows(run.id)], store.timeline(run.id)) == before
    ws = store.windows(run.id, with_data=True)
    assert all(w.data is None and w.raw_summary for w in ws)
    assert store.get_run(run.id).state is None  # a finished run never resumes
    assert store.compact(time.time() + 1) == 0  # nothing left to do


def test_a_live_run_keeps_only_its_newest_raw_windows(store):
    store.set_raw_policy(compact_on_finish=True, keep_raw_windows=2)
    run = _run(store, 1)
    for seq in range(1, 6):
        store.add_window(_window(run.id, seq), state={"w": seq})
    ws = store.windows(run.id, with_data=True)
    assert [w.seq for w in ws if w.data is not None] == [4, 5]
    assert all(w.raw_summary for w in ws if w.data is None)
    store.update_run(run.id, status="failed")  # compacted at once
    assert all(w.data is None for w in store.windows(run.id, with_data=True))


def test_the_stale_pass_keeps_the_gate_state(store):
    run = _run(store, 1)
    store.add_window(_window(run.id, 1), state={"windows": 1})
    store.update_run(run.id, status="idle")
    _age(store, run.id, 3)
    assert store.compact_stale(time.time() - DAY_S) == 1
    assert store.get_run(run.id).state == {"windows": 1}


def test_leases_with_sqlite_are_always_this_process(tmp_path):
    s = open_store(str(tmp_path / "runs.db"))
    run = _run(s, 1)
    assert s.shared is False and s.claim_run(run.id, "me", 5.0, grace_s=1.0)
    assert s.renew_leases("me", [run.id], 5.0)[run.id].since_call_s == 0.0
    s.add_window(_window(run.id, 1), owner="me")
    assert s.claimable() == [] and s.lease(run.id) is None
    s.close()


# ------------------------------------------------------------------ PostgreSQL: leases between replicas


@pytest.fixture
def pg(postgres_url):
    s = open_store(postgres_url)
    yield s
    s.close()


def test_one_replica_wins_a_race_for_a_free_run(pg):
    run = _run(pg, 1)
    for r in ("a", "b", "c", "d"):
        pg.heartbeat(r, 0, 5.0)
    pg.want_run(run.id)
    wins = []
    barrier = threading.Barrier(4)

    def claim(r):
        barrier.wait()
        if pg.claim_run(run.id, r, 5.0, grace_s=0.0):  # grace 0: anyone may claim, one wins
            wins.append(r)

    threads = [threading.Thread(target=claim, args=(r,)) for r in ("a", "b", "c", "d")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and pg.lease(run.id).owner == wins[0]
    assert not pg.claim_run(run.id, "b" if wins[0] != "b" else "c", 5.0, grace_s=0.0)  # held: nobody else


def test_new_runs_go_to_the_least_loaded_replica(pg):
    for r in ("a", "b", "c"):
        pg.heartbeat(r, 0, 5.0)
    owners = []
    for n in range(1, 7):
        run = _run(pg, n)
        pg.want_run(run.id)
        # every replica tries, in the worst order: only the least loaded (ties by id) gets it
        got = [r for r in ("c", "b", "a") if pg.claim_run(run.id, r, 5.0, grace_s=60.0)]
        owners += got
    assert owners == ["a", "b", "c", "a", "b", "c"]
    assert sorted(r["live_runs"] for r in pg.replicas()) == [2, 2, 2]


def test_after_the_grace_period_any_replica_claims(pg):
    pg.heartbeat("a", 0, 5.0)
    pg.heartbeat("b", 0, 5.0)
    run = _run(pg, 1)
    pg.want_run(run.id)
    assert not pg.claim_run(run.id, "b", 5.0, grace_s=0.3)  # "a" is the least loaded
    time.sleep(0.4)
    assert pg.claim_run(run.id, "b", 5.0, grace_s=0.3)


def test_an_expired_lease_is_taken_over_and_its_old_owner_can_store_nothing(pg):
    pg.heartbeat("a", 0, 0.5)
    pg.heartbeat("b", 0, 30.0)
    run = _run(pg, 1)
    pg.want_run(run.id)
    assert pg.claim_run(run.id, "a", 0.5, grace_s=0.0)
    pg.add_window(_window(run.id, 1), owner="a", state={"w": 1})
    assert pg.claimable() == [] and not pg.claim_run(run.id, "b", 30.0, grace_s=0.0)
    time.sleep(0.6)  # "a" died: no renewal, no heartbeat
    assert pg.claimable() == [run.id]
    assert pg.claim_run(run.id, "b", 30.0, grace_s=60.0)  # the only live replica, the least loaded
    assert pg.renew_leases("a", [run.id], 0.5) == {}  # "a" learns it lost the run
    with pytest.raises(LeaseLost):
        pg.add_window(_window(run.id, 2), owner="a")
    pg.add_window(_window(run.id, 2), owner="b")
    with pytest.raises(LeaseLost):  # a seq is stored once, whoever tries again
        pg.add_window(_window(run.id, 2), owner="b")
    assert [w.seq for w in pg.windows(run.id)] == [1, 2]
    assert pg.lease(run.id).epoch == 2


def test_renewal_reports_calls_and_requests_in_order(pg):
    pg.heartbeat("a", 0, 5.0)
    run = _run(pg, 1)
    pg.want_run(run.id)
    assert pg.claim_run(run.id, "a", 5.0, grace_s=0.0)
    time.sleep(0.3)
    pg.request(run.id, "stage", "weight-initial")
    pg.request(run.id, "stage", "traffic-increase@3")
    pg.request(run.id, "rate", "50.0")
    r = pg.renew_leases("a", [run.id], 5.0)[run.id]
    assert r.since_call_s >= 0.25
    assert r.requests == (("stage", "weight-initial"), ("stage", "traffic-increase@3"), ("rate", "50.0"))
    pg.touch_run(run.id)
    r = pg.renew_leases("a", [run.id], 5.0)[run.id]
    assert r.since_call_s < 0.2 and r.requests == ()  # each request is delivered once


def test_a_released_lease_is_claimed_by_another_and_an_ended_run_takes_no_window(pg):
    pg.heartbeat("a", 0, 5.0)
    pg.heartbeat("b", 0, 5.0)
    run = _run(pg, 1)
    pg.want_run(run.id)
    assert pg.claim_run(run.id, "a", 5.0, grace_s=0.0)
    pg.leave("a")  # a replica stopping: leaves, then gives its runs back
    pg.release_run(run.id, "a")
    assert pg.claimable() == [run.id] and pg.claim_run(run.id, "b", 5.0, grace_s=60.0)
    pg.update_run(run.id, status="succeeded")
    with pytest.raises(LeaseLost):
        pg.add_window(_window(run.id, 1), owner="b")
    pg.end_lease(run.id)
    assert pg.lease(run.id) is None and pg.claimable() == []


def test_a_final_decision_from_another_replica_is_not_replaced_by_a_window(pg):
    pg.heartbeat("a", 0, 5.0)
    run = _run(pg, 1)
    pg.want_run(run.id)
    assert pg.claim_run(run.id, "a", 5.0, grace_s=0.0)
    pg.update_run(run.id, verdict={"outcome": "pass", "final": True})
    pg.add_window(_window(run.id, 1), owner="a", run_verdict={"outcome": "fail", "final": False})
    assert pg.get_run(run.id).verdict == {"outcome": "pass", "final": True}


def test_the_url_password_never_reaches_an_error(postgres):
    from webhook.config import ConfigError, load_settings
    from tests.webhook.conftest import base_config

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        cfg = base_config(Path(d))
        cfg["server"]["store"] = "postgresql://u:hunter2secret@db.example:5432/"
        with pytest.raises(ConfigError) as err:
            load_settings(cfg, d)
        assert err.value.field == "server.store" and "hunter2secret" not in str(err.value)
        assert "database name" in str(err.value)
