"""Replicas sharing one real PostgreSQL: real `shadowgate serve` processes, the stand-in TF Serving, Flagger's calls.

- A replica measuring runs is SIGKILLed in the middle of a window: every one of its runs is claimed by
  another replica within one interval and goes on measuring, and the windows table has each run's
  windows numbered 1..n, none missing, none twice.
- A Flagger rollout is promoted while every replica is restarted in turn (SIGTERM, a new one started),
  its calls spread over the replicas that are up, as a Kubernetes Service does.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time

import numpy as np
import pytest
import requests
import yaml

from tests.webhook.drivers import FlaggerDriver
from tests.webhook.service import start_service
from webhook.store import open_store

pytestmark = pytest.mark.slow

INTERVAL_S = 3.0


def _config(tmp_path, demo_assets, modelserver, url: str, golden_rows: int | None, load: float, probes: float,
            interval_s: float = INTERVAL_S) -> dict:
    golden = str(demo_assets.golden)
    if golden_rows is not None:  # ten runs' golden-set checks at once: a small set keeps the stand-in calm
        d = np.load(demo_assets.golden)
        golden = str(tmp_path / "golden-small.npz")
        np.savez(golden, inputs=d["inputs"][:golden_rows], labels=d["labels"][:golden_rows])

    def target(**which):
        return {"protocol": "tfserving-grpc", "address": modelserver.grpc_target, "model": "digits",
                "timeout_s": 2, **which}

    return {
        "server": {"store": url, "interval_s": interval_s, "threads": 8},
        "analyses": {"good": {
            "stable": target(label="stable"), "canary": target(version=1),  # the same model: a good canary
            "golden": golden,
            "probe": {"rate": probes, "timeout_s": 2},
            "load": {"rate": load, "max_rate": 100, "timeout_s": 2, "concurrency": 16},
            "checks": {"latency": {"quantile": 0.9, "min_samples": 50, "alert": 1.5, "rollback": 2.5},
                       "accuracy": {"alert": 0.0, "rollback": 0.04}, "drift": {"inputs": False}},
            "interval_s": interval_s, "min_window_probes": 10, "allow_undecidable": True,
        }},
    }


def _start_replicas(path, tmp_path, n: int = 3) -> list:
    """n replicas started at once (each takes seconds to import and load its data sets)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(lambda i: start_service(path, tmp_path, name=f"replica{i}"), range(n)))


def _pid(replica_id: str) -> int:
    return int(replica_id.rsplit("-", 2)[1])  # webhook.replicas.replica_id: host-pid-nonce


class Pool:
    """The replicas that are up, called round-robin (a Kubernetes Service over ready pods)."""

    def __init__(self, services) -> None:
        self.services = list(services)
        self._lock = threading.Lock()
        self._next = itertools.count()

    def url(self) -> str:
        with self._lock:
            return self.services[next(self._next) % len(self.services)].url

    def remove(self, svc) -> None:
        with self._lock:
            self.services.remove(svc)

    def add(self, svc) -> None:
        with self._lock:
            self.services.append(svc)


class SpreadFlagger(FlaggerDriver):
    """Flagger calling a Service: each call may land on any replica that is up."""

    def __init__(self, pool: Pool, *args, **kw) -> None:
        super().__init__(pool.url(), *args, **kw)
        self.pool = pool

    def call(self, hook, phase="Progressing", **extra):
        self.url = self.pool.url()
        return super().call(hook, phase, **extra)


def _hook(url: str, hook: str, name: str) -> requests.Response:
    body = {"name": name, "namespace": "test", "phase": "Progressing", "checksum": f"{name}-1",
            "metadata": {"analysis": "good"}}
    return requests.post(f"{url}/flagger/{hook}", json=body, timeout=10)


def _leases(postgres, db) -> dict[str, tuple[str | None, int]]:
    return {r[0]: (r[1], r[2]) for r in postgres.sql(db, "SELECT run_id, owner, epoch FROM leases")}


def _seqs(postgres, db) -> dict[str, list[int]]:
    rows = postgres.sql(db, "SELECT run_id, array_agg(seq ORDER BY seq) FROM windows GROUP BY run_id")
    return {r[0]: list(r[1]) for r in rows}


def test_a_killed_replicas_runs_resume_elsewhere_within_one_interval(tmp_path, postgres, demo_assets, modelserver):
    db = "replicas_kill"
    url = postgres.create_database(db)
    path = tmp_path / "analyses.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, demo_assets, modelserver, url, golden_rows=40, load=8,
                                           probes=4)))
    services = _start_replicas(path, tmp_path)
    pool = Pool(services)
    stop = threading.Event()
    try:
        names = [f"app{i}" for i in range(10)]
        for name in names:  # Flagger's first calls, each on whichever replica the Service picks
            assert _hook(pool.url(), "confirm-rollout", name).status_code == 200
            assert _hook(pool.url(), "pre-rollout", name).status_code == 200

        def controller():  # Flagger's rollout hook every interval, spread over the replicas
            while not stop.wait(INTERVAL_S):
                for name in names:
                    try:
                        _hook(pool.url(), "rollout", name)
                    except requests.RequestException:
                        pass  # the killed replica: Flagger would count a failed check and go on

        t = threading.Thread(target=controller, daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        while True:  # all ten measured, each by one replica, with two windows stored
            leases, seqs = _leases(postgres, db), _seqs(postgres, db)
            if len(leases) == 10 and all(o for o, _ in leases.values()) and \
                    len(seqs) == 10 and min(len(s) for s in seqs.values()) >= 2:
                break
            assert time.monotonic() < deadline, (leases, seqs)
            time.sleep(0.2)
        by_owner: dict[str, list[str]] = {}
        for run_id, (owner, _) in leases.items():
            by_owner.setdefault(owner, []).append(run_id)
        assert len(by_owner) == 3, by_owner  # new runs go to the least-loaded replica: all three measure
        owner, victims = max(by_owner.items(), key=lambda kv: len(kv[1]))
        victim = next(s for s in services if s.proc.pid == _pid(owner))

        time.sleep(INTERVAL_S / 2)  # mid-window
        before = _seqs(postgres, db)
        os.kill(victim.proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        victim.proc.wait(10)
        pool.remove(victim)

        taken: dict[str, float] = {}
        while len(taken) < len(victims) and time.monotonic() - killed_at < 3 * INTERVAL_S:
            for run_id, (new_owner, _) in _leases(postgres, db).items():
                if run_id in victims and run_id not in taken and new_owner and new_owner != owner:
                    taken[run_id] = time.monotonic() - killed_at
            time.sleep(0.05)
        print(f"\n{len(victims)} runs of the killed replica taken over after "
              f"{', '.join(f'{t:.2f}' for t in sorted(taken.values()))} s (interval {INTERVAL_S:g} s)")
        assert set(taken) == set(victims), taken
        assert max(taken.values()) <= INTERVAL_S, taken

        deadline = time.monotonic() + 3 * INTERVAL_S
        while True:  # every run measures on: a new window stored after the kill, by its new owner
            after = _seqs(postgres, db)
            if all(len(after[r]) > len(before[r]) for r in victims):
                break
            assert time.monotonic() < deadline, (before, after)
            time.sleep(0.2)
        stop.set()
        t.join(15)
        leases, after = _leases(postgres, db), _seqs(postgres, db)
        for run_id, seqs in after.items():
            assert seqs == list(range(1, len(seqs) + 1)), (run_id, seqs)  # none lost, none twice
        assert {leases[r][1] for r in victims} == {2}  # claimed once at first, once after the kill
        assert all(leases[r][0] != owner for r in leases)
        for s in pool.services:
            assert "Traceback" not in s.log(), s.log()[-3000:]
    finally:
        stop.set()
        for s in services:
            s.stop()


def test_a_flagger_rollout_is_promoted_across_a_rolling_restart(tmp_path, postgres, demo_assets, modelserver):
    db = "replicas_rolling"
    url = postgres.create_database(db)
    path = tmp_path / "analyses.yaml"
    interval = 2.0  # a short rollout: the restarts take most of the time
    path.write_text(yaml.safe_dump(_config(tmp_path, demo_assets, modelserver, url, golden_rows=None, load=50,
                                           probes=25, interval_s=interval)))
    services = _start_replicas(path, tmp_path)
    pool = Pool(services)
    started = list(services)
    result = {}
    driver = SpreadFlagger(pool, "podinfo", analysis="good", checksum="roll1", interval_s=interval, threshold=2,
                           step_weight=15, max_weight=30)
    flagger = threading.Thread(target=lambda: result.update(r=driver.run(max_ticks=25)), daemon=True)
    t0 = time.time()
    try:
        flagger.start()
        deadline = time.monotonic() + 30
        while not _seqs(postgres, db):  # measuring
            assert time.monotonic() < deadline and flagger.is_alive(), driver.calls
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while not any(o for o, _ in _leases(postgres, db).values()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        owner = next(o for o, _ in _leases(postgres, db).values() if o)
        # The pod measuring the run goes first (a Deployment's order is arbitrary): the run must move.
        order = sorted(services, key=lambda svc: svc.proc.pid != _pid(owner))
        for old in order:
            # A Deployment's rolling update (maxSurge 1, maxUnavailable 0): a new pod is ready, then an old
            # one leaves the Service's endpoints and gets SIGTERM.
            new = start_service(path, tmp_path, name="replica-new")
            started.append(new)
            pool.add(new)
            pool.remove(old)
            assert old.stop() == 0, old.log()[-3000:]
            print(f"replaced a replica at {time.time() - t0:.1f} s")
        flagger.join(60)
        r = result.get("r")
        assert r is not None and r.outcome == "promoted", driver.calls
        assert not [c for c in r.calls if c[1] >= 500], r.calls
        seqs = _seqs(postgres, db)
        run_seqs = seqs[r.run]
        assert run_seqs == list(range(1, len(run_seqs) + 1)), run_seqs
        status = postgres.sql(db, "SELECT status FROM runs WHERE id = %s", (r.run,))[0][0]
        assert status == "succeeded"
        assert _leases(postgres, db) == {}  # the run ended: nobody measures it
        store = open_store(url)  # the finished run's timeline is folded into one archived row: read it whole
        try:
            timeline = [f"{e['ts'] - t0:5.1f} s {e['kind']}: {e['message'][:100]}" for e in store.timeline(r.run)]
        finally:
            store.close()
        print("\n" + "\n".join(timeline))
        # measured by more than one replica in turn, each resuming from the stored state
        assert any("session resumed" in line for line in timeline), timeline
    finally:
        for s in started:
            s.stop()
