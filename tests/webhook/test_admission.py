"""Admission: a full Shadowgate makes Flagger and Argo wait, never fail (../shared/contracts.md).

Flagger counts every non-2xx answer of pre-rollout and rollout as a failed
check; Argo every non-2xx answer as a measurement Error. Capacity is
therefore reserved where the caller waits (Flagger's confirm-rollout: 412;
Argo: 200 Inconclusive), and a run once admitted keeps its slot until it
ends.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from tests.webhook.conftest import payload
from tests.webhook.scripted import GOOD
from webhook.admission import Admission
from webhook.config import ServerConfig

# ------------------------------------------------------------------------------------- the queue alone


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _admission(clock=None, lag=lambda: 0.0, **server) -> Admission:
    srv = ServerConfig(**{"max_target_rate": 1e6, **server})
    return Admission(srv, lag=lag, clock=clock or Clock())


RATES = {"127.0.0.1:1": 10.0}


def test_a_namespace_with_few_admitted_runs_is_admitted_at_the_next_free_slot():
    """Fair share: namespace A holds both slots and queues 30 more; B's one run is next, not 31st."""
    adm = _admission(max_sessions=2)
    assert adm.request("a-0", "a", "digits", RATES).admitted
    assert adm.request("a-1", "a", "digits", RATES).admitted
    for i in range(2, 32):
        t = adm.request(f"a-{i}", "a", "digits", RATES)
        assert not t.admitted and t.ahead == i - 2 and t.position == i - 1
    b = adm.request("b-0", "b", "digits", RATES)
    assert not b.admitted and b.ahead == 0 and b.namespace_admitted == 0, b  # first in fair order
    assert "queued: 0 ahead (namespace b has 0 admitted; 2 of 2 slots taken (server.max_sessions))" == b.reason
    assert adm.ticket("a-2").ahead == 1  # A's oldest now waits behind B
    adm.release("a-0")
    assert adm.holds("b-0") and not adm.holds("a-2")
    adm.release("a-1")  # A has 0 admitted now, B 1: A's oldest next
    assert adm.holds("a-2")
    assert adm.snapshot()["queued"][:2] == ["a-3", "a-4"]


def test_first_come_first_served_within_a_namespace_and_across_equal_namespaces():
    adm = _admission(max_sessions=1)
    assert adm.request("x", "a", "digits", RATES).admitted
    for rid, ns in (("q1", "a"), ("q2", "b"), ("q3", "a"), ("q4", "b")):
        adm.request(rid, ns, "digits", RATES)
    # a has 1 admitted (x): b's runs first, then a's, each namespace in arrival order (ties: oldest first)
    assert adm.snapshot()["queued"] == ["q2", "q1", "q4", "q3"]


def test_a_run_that_cannot_fit_holds_back_no_one():
    """Per-analysis and model-server caps skip the waiting run that does not fit, not the others."""
    adm = _admission(max_sessions=3, max_sessions_per_analysis=1)
    assert adm.request("d1", "a", "digits", RATES).admitted
    t = adm.request("d2", "a", "digits", RATES)
    assert not t.admitted and "max_sessions_per_analysis" in t.why
    assert adm.request("p1", "a", "podinfo", RATES).admitted  # another analysis still fits


def test_loop_lag_stops_admissions_but_never_evicts():
    lag = [0.0]
    adm = _admission(max_sessions=5, lag=lambda: lag[0])
    assert adm.request("r1", "a", "digits", RATES).admitted
    lag[0] = 1.0
    t = adm.request("r2", "a", "digits", RATES)
    assert not t.admitted and "loop runs 1000 ms late" in t.why
    assert adm.request("r1", "a", "digits", RATES).admitted  # the admitted run keeps its slot
    lag[0] = 0.0
    adm.sweep()
    assert adm.holds("r2")


def test_silent_runs_leave_the_queue_and_give_their_slots_back():
    clock = Clock()
    adm = _admission(clock, max_sessions=1, admission_queue_ttl_s=60, admission_ttl_s=600, idle_timeout_s=300)
    assert adm.request("r1", "a", "digits", RATES).admitted
    adm.request("r2", "a", "digits", RATES)
    adm.request("r3", "a", "digits", RATES)
    clock.t += 50
    adm.request("r3", "a", "digits", RATES)  # r3 keeps asking, r2 went away
    clock.t += 20
    adm.sweep()
    assert adm.snapshot()["queued"] == ["r3"]
    adm.touch("r1")
    clock.t += 599
    adm.sweep()
    assert adm.holds("r1")  # asked 599 s ago: keeps its slot
    clock.t += 2
    adm.request("r3", "a", "digits", RATES)
    assert adm.holds("r3") and not adm.holds("r1")
    # r1 calls again: it was admitted before, so it is admitted at once (beyond the cap), never queued
    t = adm.request("r1", "a", "digits", RATES)
    assert t.admitted and adm.counts() == (2, 0)


def test_a_slot_reserved_for_a_run_that_never_comes_back_is_given_back():
    clock = Clock()
    adm = _admission(clock, max_sessions=1, admission_queue_ttl_s=60)
    adm.request("r1", "a", "digits", RATES)
    adm.request("r2", "a", "digits", RATES)
    adm.request("r3", "a", "digits", RATES)
    clock.t += 40
    adm.request("r3", "a", "digits", RATES)
    adm.release("r1")
    assert adm.holds("r2")  # reserved for r2, which last asked 40 s ago
    clock.t += 30
    adm.sweep()  # r2 silent for 70 s > 60: its reserved slot goes to r3
    assert adm.holds("r3") and not adm.holds("r2")


def test_server_config_checks_the_admission_fields():
    from pydantic import ValidationError

    assert ServerConfig().admission_ttl() == 600
    assert ServerConfig(interval_s=120).admission_ttl() == 1200  # at least the idle timeout
    assert ServerConfig(threads=16).blocking_hooks() == 8
    with pytest.raises(ValidationError, match="admission_ttl_s"):
        ServerConfig(idle_timeout_s=300, admission_ttl_s=100)
    with pytest.raises(ValidationError, match="max_blocking_hooks"):
        ServerConfig(threads=4, max_blocking_hooks=4)


# ------------------------------------------------------------------------------------- through the hooks


def hook(client, kind, **kw):
    return client.post(f"/flagger/{kind}", json=payload(**{"analysis": "digits", **kw}))


def _config(config_dict, **server):
    config_dict["server"].update({"max_target_rate": 100000, **server})
    return config_dict


def _close_all(app) -> int:
    """Close a window on every live session whose golden check is done (the interval would); how many."""
    sessions = app.extensions["shadowgate"].sessions
    live = [s for s in sessions.active() if s.golden_done.done()]
    if not live:
        return 0

    async def close() -> None:
        await asyncio.gather(*(s.close_window("interval") for s in live))

    sessions.call(close(), 30)
    return len(live)


def _wait_golden(app, timeout_s=5.0) -> None:
    sessions = app.extensions["shadowgate"].sessions
    deadline = time.time() + timeout_s
    while time.time() < deadline and not all(s.golden_done.done() for s in sessions.active()):
        time.sleep(0.005)


def test_an_admitted_run_keeps_its_slot_and_post_rollout_hands_it_on(make_app, config_dict):
    app = make_app(_config(config_dict, max_sessions=1), spec=GOOD)
    c = app.test_client()
    assert hook(c, "confirm-rollout", name="first").status_code == 200
    r = hook(c, "confirm-rollout", name="second")
    assert r.status_code == 412 and r.json["queued"] == 1 and r.json["ok"] is False, r.json
    assert "queued: 0 ahead (namespace test has 1 admitted" in r.json["reason"]
    # the admitted run goes through its hooks untouched by the waiting one
    assert hook(c, "pre-rollout", name="first").status_code == 200
    for _ in range(3):
        _close_all(app)
        assert hook(c, "rollout", name="first").status_code == 200
        assert hook(c, "confirm-rollout", name="second").status_code == 412
    text = c.get("/metrics").get_data(as_text=True)
    assert 'shadowgate_admission_queued{namespace="test"} 1.0' in text
    assert hook(c, "post-rollout", name="first", phase="Succeeded").status_code == 200
    r = hook(c, "confirm-rollout", name="second")
    assert r.status_code == 200 and "admitted" in r.json["reason"], r.json
    assert hook(c, "pre-rollout", name="second").status_code == 200
    text = c.get("/metrics").get_data(as_text=True)
    assert 'shadowgate_admission_admitted{namespace="test"} 1.0' in text
    assert 'shadowgate_admission_queued{namespace="test"}' not in text  # no stale series
    assert "shadowgate_admission_waited_seconds_count 2.0" in text


def test_a_canary_without_confirm_rollout_is_held_not_blamed(make_app, config_dict):
    """Queued at pre-rollout: 200 not measured, the confirm-* gates hold, rollback does not fire."""
    app = make_app(_config(config_dict, max_sessions=1), spec=GOOD)
    c = app.test_client()
    assert hook(c, "pre-rollout", name="busy").status_code == 200
    answers = {k: hook(c, k, name="late") for k in ("rollback", "pre-rollout", "rollout",
                                                     "confirm-traffic-increase", "confirm-promotion")}
    assert answers["rollback"].status_code == 409
    for k in ("pre-rollout", "rollout"):
        r = answers[k]
        assert r.status_code == 200 and "not measured yet" in r.json["reason"] and r.json["queued"] == 1, r.json
    for k in ("confirm-traffic-increase", "confirm-promotion"):
        r = answers[k]
        assert r.status_code == 412 and "queued: 0 ahead" in r.json["reason"], r.json
    assert [s.run.name for s in app.extensions["shadowgate"].sessions.active()] == ["busy"]


def test_argo_queued_answer_is_200_inconclusive_with_its_place(make_app, config_dict):
    app = make_app(_config(config_dict, max_sessions=1), spec=GOOD)
    c = app.test_client()
    url = "/argo/v1/analyses/digits?rollout={}&revision=r1&namespace=prod"
    first = c.get(url.format("one"))
    assert first.status_code == 200 and first.json["queued"] == 0
    r = c.get(url.format("two"))
    assert r.status_code == 200, r.json
    body = r.json
    assert body["queued"] == 1 and body["decision"] == "continue" and body["phase"] == "Inconclusive"
    assert body["failed"] is False and body["passed"] is False
    assert body["reason"].startswith("queued: 0 ahead (namespace prod has 1 admitted")
    assert set(body) == set(first.json)  # the same keys: no condition reads a null
    assert all(body[k]["measured"] is False for k in ("accuracy", "latency"))
    # the queued run is not measured; the admitted one is
    assert [s.run.name for s in app.extensions["shadowgate"].sessions.active()] == ["one"]


def test_argo_rate_beyond_the_budget_is_a_warning_not_an_error(make_app, config_dict):
    config_dict["analyses"]["digits"]["load"] = {"rate": 100, "max_rate": 400}
    app = make_app(_config(config_dict, max_target_rate=300), spec=GOOD)
    c = app.test_client()
    r = c.get("/argo/v1/analyses/digits?rollout=one&revision=r1&rate=400")
    assert r.status_code == 200 and any("rate 400 not applied" in w for w in r.json["warnings"]), r.json


# ------------------------------------------------------------------------------------- Flagger's order, 100 at once


@dataclass
class Rollout:
    """One Canary as Flagger's scheduler drives it (demo/drivers.py FlaggerDriver, one tick per call)."""

    name: str
    namespace: str
    threshold: int = 2
    max_weight: int = 30
    step: int = 10
    phase: str = "Initialized"
    confirmed: bool = False
    pre_rollout_done: bool = False
    weight: int = 0
    failed: int = 0
    outcome: str | None = None
    calls: list[tuple[str, int]] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)

    def call(self, c, kind, phase="Progressing"):
        r = c.post(f"/flagger/{kind}", json=payload(name=self.name, namespace=self.namespace, phase=phase,
                                                     analysis="digits"))
        self.calls.append((kind, r.status_code))
        if isinstance(r.json, dict) and r.json.get("queued"):
            self.positions.append(r.json["queued"])
        return r.status_code <= 202

    def tick(self, c) -> None:
        if self.outcome is not None:
            return
        if not self.confirmed:
            if self.call(c, "confirm-rollout", "Initialized" if self.phase == "Initialized" else "Waiting"):
                self.confirmed, self.phase = True, "Progressing"  # scaled up from zero: analysis next tick
            else:
                self.phase = "Waiting"
            return
        if self.phase in ("Progressing", "Waiting", "WaitingPromotion"):
            if self.call(c, "rollback", self.phase):
                self.outcome = "rolled_back"
                self.call(c, "post-rollout", "Failed")
                return
        if self.phase == "Promoting":
            self.phase = "Finalising"
            return
        if self.phase == "Finalising":
            self.phase = "Succeeded"
            self.call(c, "post-rollout", "Succeeded")
            self.outcome = "promoted"
            return
        if self.failed >= self.threshold:
            self.outcome = "rolled_back"
            self.call(c, "post-rollout", "Failed")
            return
        kind = "rollout" if self.pre_rollout_done else "pre-rollout"
        if not self.call(c, kind):
            self.failed += 1
            return
        self.pre_rollout_done = True
        if self.phase != "WaitingPromotion" and not self.call(c, "confirm-traffic-increase"):
            return
        if self.weight < self.max_weight:
            self.weight = min(self.weight + self.step, self.max_weight)
            return
        if self.call(c, "confirm-promotion"):
            self.phase = "Promoting"
        else:
            self.phase = "WaitingPromotion"


def test_100_healthy_canaries_at_once_against_10_slots_are_all_promoted(make_app, config_dict):
    """Flagger's order of calls, 100 rollouts of healthy canaries arriving together, a service sized for 10:
    every one is promoted, none rolled back, no pre-rollout or rollout ever answers non-2xx."""
    app = make_app(_config(config_dict, max_sessions=10, max_sessions_per_analysis=10), spec=GOOD)
    c = app.test_client()
    rollouts = [Rollout(f"canary-{i:03d}", f"team-{i % 4}") for i in range(100)]
    started = time.perf_counter()
    ticks = 0
    max_admitted = 0
    while any(r.outcome is None for r in rollouts) and ticks < 400:
        ticks += 1
        for r in rollouts:
            r.tick(c)
        _wait_golden(app)
        _close_all(app)  # one analysis interval passes
        max_admitted = max(max_admitted, app.extensions["shadowgate"].sessions.admission.counts()[0])
    took = time.perf_counter() - started
    outcomes = {r.outcome for r in rollouts}
    bad = [(r.name, k, code) for r in rollouts for k, code in r.calls
           if k in ("pre-rollout", "rollout") and code > 202]
    rolled_back = [(r.name, k) for r in rollouts for k, code in r.calls if k == "rollback" and code <= 202]
    max_position = max(p for r in rollouts for p in r.positions)
    print(f"\n100 rollouts, 10 slots: all promoted after {ticks} ticks in {took:.1f} s; "
          f"max queue position {max_position}; max admitted {max_admitted}")
    assert outcomes == {"promoted"}, [(r.name, r.outcome, r.calls[-6:]) for r in rollouts if r.outcome != "promoted"]
    assert not bad and not rolled_back
    assert all(r.failed == 0 for r in rollouts)
    assert max_admitted <= 10 and max_position >= 80  # they really queued
    assert all(("confirm-promotion", 200) in r.calls for r in rollouts)
