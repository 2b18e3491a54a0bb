"""Retention: finished runs go after `server.retention_days`, raw windows of finished runs are
compacted, and the store's size and rows are on /metrics, as are the process and the build."""

from __future__ import annotations

import time
from importlib import metadata

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.webhook.scripted import window
from webhook.codec import encode_window
from webhook.config import ConfigError, load_settings
from webhook.retention import DAY_S, KEEP_RAW_WINDOWS, Pruner
from webhook.store import RunRecord, SQLiteStore, StoredWindow

VERDICT = {"outcome": "pass", "passed": True, "checks": [
    {"name": "accuracy", "stable": 0.95, "canary": 0.95, "difference": 0.0, "p_value": 0.9, "verdict": "pass",
     "critical": True, "reason": "same"}]}


def _run(store: SQLiteStore, n: int, status: str, age_days: float, windows: int = 2) -> str:
    """A run `age_days` old with `windows` windows (raw data included), a timeline entry and `status`."""
    run = RunRecord(id=f"run-{n:016x}", analysis="digits", caller="flagger", namespace="test", name=f"app{n}",
                    revision="abc")
    store.create_run(run)
    for seq in range(1, windows + 1):
        store.add_window(StoredWindow(run.id, seq, "interval", 1.0, 31.0, VERDICT, encode_window(window(seed=seq))))
    store.add_event(run.id, "flagger:rollout", "200: pass")
    store.update_run(run.id, status=status)
    # Age it: the store stamps every write with the current time.
    then = time.time() - age_days * DAY_S
    store._db.execute("UPDATE runs SET updated_at = ?, created_at = ? WHERE id = ?", (then, then, run.id))
    return run.id


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "runs.db"))
    yield s
    s.close()


def test_finished_runs_older_than_retention_go_with_everything_they_own(store):
    old_done = _run(store, 1, "succeeded", age_days=40)
    old_failed = _run(store, 2, "failed", age_days=31)
    recent_done = _run(store, 3, "succeeded", age_days=2)
    live = _run(store, 4, "running", age_days=0)
    abandoned = _run(store, 5, "idle", age_days=45)  # no call and no window for 45 days

    deleted = store.prune(time.time() - 30 * DAY_S)

    assert deleted == {"runs": 3, "windows": 6, "checks": 6, "timeline": 3, "timeline_archive": 0}
    for gone in (old_done, old_failed, abandoned):
        assert store.get_run(gone) is None and store.windows(gone) == [] and store.timeline(gone) == []
    for kept in (recent_done, live):
        assert store.get_run(kept).windows == 2 and store.timeline(kept)
    assert store.stats()["rows"] == {"runs": 2, "windows": 4, "checks": 4, "timeline": 2, "timeline_archive": 0}


def test_pruning_works_in_batches(store):
    for n in range(25):
        _run(store, n, "failed", age_days=60, windows=1)
    assert store.prune(time.time() - DAY_S, batch=4)["runs"] == 25
    assert store.stats()["rows"]["runs"] == 0


def test_compaction_drops_raw_data_of_finished_runs_and_keeps_their_verdicts(store):
    done = _run(store, 1, "succeeded", age_days=10)
    running = _run(store, 2, "running", age_days=10)
    fresh = _run(store, 3, "failed", age_days=0.5)
    raw_before = store.stats()["raw_bytes"]

    assert store.compact(time.time() - 7 * DAY_S) == 2

    ws = store.windows(done, with_data=True)
    assert [w.data for w in ws] == [None, None]
    assert ws[0].verdict["outcome"] == "pass" and store.get_run(done).windows == 2
    assert all(w.data for w in store.windows(running, with_data=True))  # still measuring: kept
    assert all(w.data for w in store.windows(fresh, with_data=True))  # finished too recently
    assert store.stats()["raw_bytes"] == pytest.approx(raw_before * 2 / 3, rel=0.05)
    assert store.compact(time.time() - 7 * DAY_S) == 0  # nothing left to do


def test_stats_report_size_and_rows(store, tmp_path):
    empty = store.stats()
    _run(store, 1, "running", age_days=0, windows=3)
    stats = store.stats()
    assert stats["rows"] == {"runs": 1, "windows": 3, "checks": 3, "timeline": 1, "timeline_archive": 0}
    assert stats["bytes"] > empty["bytes"] > 0
    assert stats["raw_bytes"] > 0 and stats["free_bytes"] >= 0


def test_the_pruner_exports_the_store_and_counts_what_it_removed(store):
    _run(store, 1, "succeeded", age_days=40)
    _run(store, 2, "failed", age_days=10)
    _run(store, 3, "running", age_days=0)
    registry = CollectorRegistry()
    pruner = Pruner(store, registry, retention_days=30, compact_after_days=7, interval_s=3600)

    result = pruner.run_once()

    assert result["pruned"]["runs"] == 1 and result["compacted"] == 2
    value = registry.get_sample_value
    assert value("shadowgate_store_pruned_runs_total") == 1
    assert value("shadowgate_store_compacted_windows_total") == 2
    assert value("shadowgate_store_rows", {"table": "runs"}) == 2
    assert value("shadowgate_store_rows", {"table": "windows"}) == 4
    assert value("shadowgate_store_bytes") > 0 and value("shadowgate_store_raw_bytes") > 0
    assert value("shadowgate_store_last_prune_timestamp_seconds") == pytest.approx(time.time(), abs=60)


def test_the_pruner_sets_when_the_store_drops_raw_data(store):
    Pruner(store, None, retention_days=365, compact_after_days=0, interval_s=3600)
    assert store.compact_on_finish and store.keep_raw_windows == KEEP_RAW_WINDOWS
    Pruner(store, None, retention_days=365, compact_after_days=7, interval_s=3600, keep_raw_windows=None)
    assert not store.compact_on_finish and store.keep_raw_windows is None


def test_compact_after_days_0_compacts_a_run_when_it_finishes_and_counts_it(store):
    registry = CollectorRegistry()
    pruner = Pruner(store, registry, retention_days=365, compact_after_days=0, interval_s=3600)
    live = _run(store, 1, "running", age_days=0)
    done = _run(store, 2, "succeeded", age_days=0)  # post-rollout: the status is stored, the run compacted
    ws = store.windows(done, with_data=True)
    assert [w.data for w in ws] == [None, None] and all(w.raw_summary["digest"] for w in ws)
    assert ws[0].verdict == VERDICT and store.get_run(done).windows == 2 and store.timeline(done)
    assert all(w.data for w in store.windows(live, with_data=True))
    pruner.refresh()
    assert registry.get_sample_value("shadowgate_store_compacted_windows_total") == 2
    assert pruner.run_once()["compacted"] == 0  # nothing left for the pass


def test_retention_days_null_keeps_every_run(store):
    _run(store, 1, "succeeded", age_days=4000)
    Pruner(store, None, retention_days=None, compact_after_days=7, interval_s=3600).run_once()
    assert store.stats()["rows"]["runs"] == 1


def test_the_app_runs_retention_in_the_background_and_stops_it_on_close(make_app, config_dict, tmp_path):
    pre = SQLiteStore(config_dict["server"]["store"])
    _run(pre, 1, "succeeded", age_days=3)
    _run(pre, 2, "running", age_days=0)
    pre.close()
    config_dict["server"].update({"retention_days": 1, "compact_after_days": 0, "prune_interval_s": 0.2})
    app = make_app(config_dict)
    pruner = app.extensions["shadowgate"].pruner
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (pruner.last_stats or {}).get("rows", {}).get("runs") != 1:
        time.sleep(0.05)
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'shadowgate_store_rows{table="runs"} 1.0' in text
    assert "shadowgate_store_pruned_runs_total 1.0" in text
    thread = pruner._thread
    app.extensions["shadowgate"].pruner.stop()
    assert not thread.is_alive()


@pytest.mark.parametrize("server,field", [
    ({"retention_days": 0}, "server.retention_days"),
    ({"retention_days": -1}, "server.retention_days"),
    ({"compact_after_days": -1}, "server.compact_after_days"),
    ({"prune_interval_s": 0}, "server.prune_interval_s"),
])
def test_bad_retention_settings_name_the_field(config_dict, tmp_path, server, field):
    config_dict["server"].update(server)
    with pytest.raises(ConfigError) as err:
        load_settings(config_dict, tmp_path)
    assert err.value.field == field


def test_retention_defaults(config_dict, tmp_path):
    srv = load_settings(config_dict, tmp_path).server
    assert (srv.retention_days, srv.compact_after_days, srv.prune_interval_s) == (365.0, 0.0, 3600.0)
    config_dict["server"]["retention_days"] = None
    assert load_settings(config_dict, tmp_path).server.retention_days is None


def test_metrics_name_the_process_and_the_build(make_app):
    text = make_app().test_client().get("/metrics").get_data(as_text=True)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                 "process_start_time_seconds", "python_info{"):
        assert name in text, name
    version = metadata.version("shadowgate")
    assert f'version="{version}"' in [line for line in text.splitlines()
                                      if line.startswith("shadowgate_build_info{")][0]


def test_each_app_has_its_own_process_collectors():
    """Metrics take a registry: two apps in one process (as in tests) must not collide."""
    from webhook.metrics import Metrics

    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    assert b"shadowgate_build_info" in generate_latest(a.registry)
    assert b"process_cpu_seconds_total" in generate_latest(b.registry)
