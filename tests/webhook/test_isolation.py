"""Isolation: one namespace's stalled canary costs its own runs only.

A canary that accepts connections and never answers used to hold a front
thread per waiting pre-rollout; 20 of them took the threads every other
team's hooks needed, and those got 503 (a failed check for Flagger). Now
at most `server.max_blocking_hooks_per_namespace` hooks of one namespace
(and `server.blocking_hooks()` in all) wait on a live check; the others
answer at once while the check goes on in the background, and its result
gates the run's next hooks.

The first test drives the app in process (threads, scripted measurements);
the second runs the real service with its HTTP front against a real
stand-in TF Serving and a silent canary (slow: it starts servers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest
import requests
import yaml

from tests.webhook.conftest import payload
from tests.webhook.scripted import GOOD, ScriptedMeasurement


class StalledCheck(ScriptedMeasurement):
    """A canary whose status and metadata never answer (the check ends at the hook deadline)."""

    async def check_canary(self):
        await asyncio.sleep(3600)


def _post(client, kind, **kw):
    t = time.perf_counter()
    r = client.post(f"/flagger/{kind}", json=payload(**kw))
    return r.status_code, time.perf_counter() - t, r.json


def _p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


def test_a_stalled_canary_holds_two_hooks_at_most_and_blames_only_its_runs(make_app, config_dict):
    config_dict["server"].update(threads=8, hook_deadline_s=1.5, max_sessions_per_analysis=50,
                                 max_target_rate=100000)
    app = make_app(config_dict, spec=GOOD)
    app.factory.by_analysis["digits"] = StalledCheck()
    barrier = threading.Barrier(21, timeout=15)
    for i in range(20):
        assert _post(app.test_client(), "confirm-rollout", name=f"a-{i:02d}", namespace="team-a",
                     analysis="digits")[0] == 200

    def team_a(i: int):
        c = app.test_client()
        kw = dict(name=f"a-{i:02d}", namespace="team-a", analysis="digits")
        barrier.wait()
        return _post(c, "pre-rollout", **kw)

    def team_b():
        c = app.test_client()
        kw = dict(name="b", namespace="team-b", analysis="podinfo")
        barrier.wait()
        time.sleep(0.05)  # while team A's pre-rollouts wait
        out = [(k, *_post(c, k, **kw)[:2]) for k in ("confirm-rollout", "pre-rollout", "rollout")]
        return out

    with concurrent.futures.ThreadPoolExecutor(21) as pool:
        a = [pool.submit(team_a, i) for i in range(20)]
        b = pool.submit(team_b)
        a_answers = [f.result(timeout=30) for f in a]
        b_answers = b.result(timeout=30)
    waited = [t for _, t, _ in a_answers if t > 1.0]
    assert len(waited) <= 2, sorted(t for _, t, _ in a_answers)  # server.max_blocking_hooks_per_namespace
    # nothing waits past the hook deadline (1.5 s; the check itself would stall an hour): 1 s of slack for a
    # busy test host, whose threads may start late
    assert all(t < 2.5 for _, t, _ in a_answers), sorted(t for _, t, _ in a_answers)
    background = [j for code, _, j in a_answers if code == 200 and j.get("background")]
    assert len(background) >= 18
    assert {code for code, t, _ in a_answers if t > 1.0} <= {412}  # the waiters: the canary did not answer
    for kind, code, t in b_answers:
        assert code == 200 and t < 1.0, (kind, code, t)
    # The checks went on in the background: every run of team A is blamed at its next hook, B never.
    time.sleep(1.7)
    c = app.test_client()
    for i in range(20):
        code, _, body = _post(c, "rollout", name=f"a-{i:02d}", namespace="team-a", analysis="digits")
        assert code == 412 and "hook deadline" in body["reason"], body
    assert _post(c, "rollout", name="b", namespace="team-b", analysis="podinfo")[0] == 200
    text = c.get("/metrics").get_data(as_text=True)
    assert 'shadowgate_hook_background_total{cap="namespace"} 18.0' in text
    assert "shadowgate_hooks_blocking 0.0" in text


# ------------------------------------------------------------------------------------- the real service


@pytest.mark.slow
def test_another_namespace_answers_within_its_deadline_beside_20_stalled_pre_rollouts(tmp_path, demo_assets,
                                                                                     modelserver):
    from bench.hooks_stalled import Silent
    from tests.webhook.service import start_service

    silent = Silent()

    def target(address, **which):
        return {"protocol": "tfserving-grpc", "address": address, "model": "digits", "timeout_s": 2, **which}

    def analysis(canary):
        return {"stable": target(modelserver.grpc_target, label="stable"), "canary": canary,
                "golden": str(demo_assets.golden), "probe": {"rate": 5, "timeout_s": 2},
                "load": {"rate": 5, "max_rate": 50, "timeout_s": 2, "concurrency": 8},
                "checks": {"drift": {"inputs": False}}, "allow_undecidable": True, "interval_s": 5}

    config = {"server": {"store": str(tmp_path / "runs.db"), "interval_s": 5, "threads": 8,
                         "max_sessions_per_analysis": 50},
              "analyses": {"stalled": analysis(target(f"127.0.0.1:{silent.port}", label="canary")),
                           "healthy": analysis(target(modelserver.grpc_target, version=1))}}
    path = tmp_path / "analyses.yaml"
    path.write_text(yaml.safe_dump(config))
    svc = start_service(path, tmp_path)
    deadline_s = 8.0  # server.hook_deadline_s (Flagger gives up at 10 s)

    def post(kind, name, namespace, analysis, phase="Progressing"):
        body = {"name": name, "namespace": namespace, "phase": phase, "checksum": "c1",
                "metadata": {"analysis": analysis}}
        t = time.perf_counter()
        r = requests.post(f"{svc.url}/flagger/{kind}", json=body, timeout=12)
        return r.status_code, time.perf_counter() - t

    try:
        # 20 canaries of team A on the stalled canary, 20 healthy ones of 5 other teams, all starting together.
        a = [(f"a-{i:02d}", "team-a", "stalled") for i in range(20)]
        c = [(f"c-{i:02d}", f"team-c{i % 5}", "healthy") for i in range(20)]
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            for f in [pool.submit(post, "confirm-rollout", n, ns, an, "Initialized") for n, ns, an in a + c]:
                assert f.result()[0] == 200
            barrier = threading.Barrier(21, timeout=15)

            def pre_rollout(n, ns, an):
                barrier.wait()
                return post("pre-rollout", n, ns, an)

            def team_b():
                barrier.wait()
                time.sleep(0.1)  # while team A's pre-rollouts are in flight
                out = [("confirm-rollout", *post("confirm-rollout", "b", "team-b", "healthy", "Initialized"))]
                for kind in ("pre-rollout", "rollout", "rollout", "confirm-traffic-increase"):
                    out.append((kind, *post(kind, "b", "team-b", "healthy")))
                return out

            a_futs = [pool.submit(pre_rollout, *x) for x in a]
            b_fut = pool.submit(team_b)
            a_answers = [f.result() for f in a_futs]
            b_answers = b_fut.result()
            time.sleep(1.0)
            barrier = threading.Barrier(20, timeout=15)
            c_answers = [f.result() for f in [pool.submit(pre_rollout, *x) for x in c]]
        a_times = [t for _, t in a_answers]
        c_times = [t for _, t in c_answers]
        print(f"\nteam A (stalled canary) pre-rollout: p50 {sorted(a_times)[10]:.3f} s, p99 {_p99(a_times):.3f} s, "
              f"statuses {sorted({s for s, _ in a_answers})}")
        print("team B hooks beside it: " + ", ".join(f"{k} {s} {t:.3f} s" for k, s, t in b_answers))
        print(f"20 healthy pre-rollouts together: p50 {sorted(c_times)[10]:.3f} s, p99 {_p99(c_times):.3f} s, "
              f"statuses {sorted({s for s, _ in c_answers})}")
        for kind, status, t in b_answers:
            assert status <= 202 or kind == "confirm-traffic-increase", (kind, status, t)  # cti: no window yet
            assert t < deadline_s, (kind, t)
        assert all(s == 200 for s, _ in c_answers)
        assert max(a_times) < deadline_s + 0.5 and max(c_times) < deadline_s + 0.5
        # The stalled canary is blamed on its own runs: at pre-rollout (the waiters) or at the next rollout.
        time.sleep(2.5)
        for n, ns, an in a:
            assert post("rollout", n, ns, an)[0] == 412, n
    finally:
        svc.stop()
        silent.close()


# ------------------------------------------------------------------------------------- per-namespace caps


def _per_run(config_dict, tmp_path):
    """Planned req/s and connections of one run of the test analysis."""
    from webhook.admission import planned_connections
    from webhook.config import load_settings
    from webhook.sessions import planned_rates

    analysis = load_settings(config_dict, tmp_path).analyses["digits"]
    return sum(planned_rates(analysis).values()), planned_connections(analysis.config)


def _team_b_unaffected(c):
    kw = dict(name="b", namespace="team-b", analysis="digits")
    for kind in ("confirm-rollout", "pre-rollout", "rollout"):
        code, _, body = _post(c, kind, **kw)
        assert code == 200 and "queued" not in body, (kind, body)


@pytest.mark.parametrize("cap,field", [("rate", "max_rate_per_namespace"),
                                       ("connections", "max_connections_per_namespace")])
def test_a_namespace_at_its_cap_waits_while_another_namespace_is_admitted(make_app, config_dict, tmp_path, cap,
                                                                           field):
    """Team A's third run would take more than its namespace's share of the load budget (req/s) or of the
    outbound connections: it waits at confirm-rollout (412, not a failed check); team B is admitted and
    measured as if A were not there; when one of A's runs ends, A's waiting run is admitted."""
    config_dict["analyses"]["digits"]["load"] = {"rate": 10, "max_rate": 50}
    config_dict["server"].update(max_target_rate=100000)
    rate, conns = _per_run(config_dict, tmp_path)
    config_dict["server"][field] = 2 * rate if cap == "rate" else 2 * conns
    app = make_app(config_dict, spec=GOOD)
    c = app.test_client()
    for i in range(2):
        assert _post(c, "confirm-rollout", name=f"a-{i}", namespace="team-a", analysis="digits")[0] == 200
    code, _, body = _post(c, "confirm-rollout", name="a-2", namespace="team-a", analysis="digits")
    assert code == 412 and body["queued"] == 1 and f"server.{field}" in body["reason"], body
    # A's pre-rollout and rollout of the waiting run: never a failed check
    for kind in ("pre-rollout", "rollout"):
        code, _, body = _post(c, kind, name="a-2", namespace="team-a", analysis="digits")
        assert code == 200 and "not measured yet" in body["reason"], body
    _team_b_unaffected(c)
    assert _post(c, "post-rollout", name="a-0", namespace="team-a", analysis="digits", phase="Succeeded")[0] == 200
    code, _, body = _post(c, "confirm-rollout", name="a-2", namespace="team-a", analysis="digits")
    assert code == 200 and "admitted" in body["reason"], body


def test_a_rate_beyond_the_namespace_budget_is_not_applied(make_app, config_dict, tmp_path):
    """Team A's two runs fill its namespace's load budget: a metadata.rate raise is not applied (said in the
    answer, never a failed check); the same raise in team B, whose budget is free, is applied."""
    config_dict["analyses"]["digits"]["load"] = {"rate": 10, "max_rate": 500}
    config_dict["server"].update(max_target_rate=100000)
    rate, _ = _per_run(config_dict, tmp_path)
    config_dict["server"]["max_rate_per_namespace"] = 2 * rate
    app = make_app(config_dict, spec=GOOD)
    c = app.test_client()
    for name, ns in (("a-0", "team-a"), ("a-1", "team-a"), ("b", "team-b")):
        assert _post(c, "pre-rollout", name=name, namespace=ns, analysis="digits")[0] == 200
    for name, ns in (("a-0", "team-a"), ("b", "team-b")):
        assert _post(c, "rollout", name=name, namespace=ns, analysis="digits", rate="20")[0] == 200
    sessions = app.extensions["shadowgate"].sessions
    overrides = {s.run.name: s.rate_override for s in sessions.active()}
    assert overrides == {"a-0": None, "a-1": None, "b": 20.0}  # A stays at its load.rate, B moves
    a0 = next(s for s in sessions.active() if s.run.name == "a-0")
    assert "server.max_rate_per_namespace" in sessions.rate_problem(a0, 20)
