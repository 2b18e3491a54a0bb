"""Nothing of Shadowgate's is the canary's fault.

- Every run has connections of its own: a canary that died at an address
  while another run was still loading it is not the failure of the healthy
  canary that comes next at that address (reproduced first with the shared
  gRPC subchannel the clients had before).
- A request Shadowgate cancelled, one a server shed unanswered, one its loop
  held or noticed late is no error of its version; probe pairs with one are
  not kept; windows with more of them than the gate allows say so.
- The load adapts (loadtest.adapt): both versions' rates drop together when
  a server backs up and grow back slowly when it answers on time again.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from analyses.window import VersionTraffic
from loadtest.adapt import RateController, Tick
from loadtest.errors import ServingError
from loadtest.load import LoadGenerator, Schedule, to_version_traffic
from loadtest.shadow import ShadowProber


def run(gen: LoadGenerator, stop=None):
    return asyncio.run(gen.run(stop))


def with_deadline(fn):
    """Mark a send as enforcing its own deadline (as loadtest.wire's senders do)."""
    fn.has_deadline = True
    return fn


# ------------------------------------------------------------------ connections of one's own


def test_every_client_and_sender_has_its_own_subchannel_pool():
    from loadtest import clients, wire

    assert wire.ISOLATED_CHANNEL_OPTIONS == clients.ISOLATED_CHANNEL_OPTIONS
    opts = dict(clients._CHANNEL_OPTIONS)
    assert opts["grpc.use_local_subchannel_pool"] == 1
    assert opts["grpc.max_reconnect_backoff_ms"] <= 1000  # a server that is back is reached within a second


# ------------------------------------------------------------------ whose failure


@pytest.mark.parametrize("error", [ServingError("CANCELLED", "shed"),
                                   ServingError("CANCELLED", "client closed request", http_status=499)])
def test_a_cancelled_request_is_shadowgates_not_the_versions(error):
    n = {"k": 0}

    @with_deadline
    async def send():
        n["k"] += 1
        if n["k"] % 2:
            raise error

    stats = run(LoadGenerator(send, Schedule.constant(100, 0.4)))
    assert stats.intended == 40
    assert stats.errors == 0 and stats.errors_by_code == {}
    assert stats.own_by_code == {"CANCELLED": 20}
    assert stats.ok == 20 and stats.requests == 20
    vt = to_version_traffic(stats)
    assert isinstance(vt, VersionTraffic)
    assert vt.errors == 0 and vt.requests == 20
    assert vt.late == 20  # sends Shadowgate could not measure (VersionTraffic has no field of their own)


def test_a_deadline_noticed_late_is_shadowgates_one_noticed_on_time_the_servers():
    n = {"k": 0}

    @with_deadline
    async def send():
        n["k"] += 1
        k = n["k"]
        await asyncio.sleep(0.4)  # the deadline passes
        if k % 2:
            time.sleep(0.3)  # ...and the loop is busy elsewhere before it hears of it
        raise ServingError("DEADLINE_EXCEEDED", "deadline")

    stats = run(LoadGenerator(send, Schedule.constant(2, 2.0), timeout_s=0.4))
    assert stats.intended == 4
    assert stats.own_by_code == {"DEADLINE_EXCEEDED": 2}
    assert stats.errors_by_code == {"DEADLINE_EXCEEDED": 2}


def test_a_send_the_loop_held_past_its_deadline_is_shadowgates():
    @with_deadline
    async def send():
        await asyncio.sleep(0.001)

    async def main():
        stop = asyncio.Event()
        gen = LoadGenerator(send, rate=100, timeout_s=0.1)
        task = asyncio.create_task(gen.run(stop))
        await asyncio.sleep(0.3)
        time.sleep(0.4)  # the loop stalls: slots due meanwhile leave up to 0.4 s late
        await asyncio.sleep(0.3)
        stop.set()
        return await task

    stats = asyncio.run(main())
    assert stats.errors == 0
    assert stats.own_by_code.get("LATE_SEND", 0) >= 20
    assert stats.corrected.max < 0.25  # their latency is the loop's: not kept


def test_sends_late_because_the_server_filled_the_cap_stay_evidence():
    @with_deadline
    async def slow():
        await asyncio.sleep(0.05)

    stats = run(LoadGenerator(slow, Schedule.constant(100, 0.5), concurrency=1, timeout_s=0.1))
    assert stats.late > 10
    assert stats.own == 0 and stats.errors == 0
    assert stats.corrected.max > 0.1  # latency from the intended time: the server's slowness


class Client:
    def __init__(self, fail=None, every=1):
        self.fail, self.every, self.n = fail, every, 0

    async def predict(self, inputs, timeout_s=None):
        self.n += 1
        k = self.n
        await asyncio.sleep(0.005)
        if self.fail and k % self.every == 0:
            raise ServingError(self.fail, "injected")

        class R:
            outputs = {"probabilities": np.eye(10, dtype=np.float32)[[3]]}
            model_version = 1

        return R()


def test_probe_pairs_with_a_cancelled_side_are_not_kept_nor_blamed():
    x = np.zeros((20, 4), np.float32)
    y = np.full(20, 3)
    prober = ShadowProber(Client(), Client("CANCELLED", every=2), x, y, rate=100)
    stats = asyncio.run(prober.run(duration_s=0.2))
    assert stats.sent == 20
    assert stats.unmeasured == 10 and stats.canary_own_by_code == {"CANCELLED": 10}
    assert stats.canary_errors_by_code == {} and stats.stable_errors_by_code == {}
    assert len(stats.pairs) == 10
    assert (stats.pairs.canary_pred == 3).all() and (stats.pairs.stable_pred == 3).all()
    # A real failure of the canary is still its own.
    stats = asyncio.run(ShadowProber(Client(), Client("UNAVAILABLE"), x, y, rate=100).run(duration_s=0.1))
    assert stats.canary_errors_by_code == {"UNAVAILABLE": 10} and stats.unmeasured == 0


def test_probe_rate_changes_while_running():
    x = np.zeros((20, 4), np.float32)
    y = np.full(20, 3)
    prober = ShadowProber(Client(), Client(), x, y, rate=10)

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(prober.run(stop))
        await asyncio.sleep(0.5)
        prober.set_rate(100)
        await asyncio.sleep(0.5)
        prober.set_rate(0.5)  # one pair in two seconds: none more within the next second
        n = prober._win.sent
        await asyncio.sleep(0.5)
        grown = prober._win.sent - n
        stop.set()
        return await task, grown

    stats, grown = asyncio.run(main())
    assert 45 <= stats.sent <= 70  # 5 at 10/s, then 50 at 100/s
    assert grown <= 1


# ------------------------------------------------------------------ the rate controller


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def tick(done, bad=0, backlog=0, key="stable"):
    return Tick(done={key: done}, bad={key: bad}, backlog={key: backlog})


def test_rate_controller_cuts_at_once_and_recovers_slowly():
    clock, seen = FakeClock(), []
    c = RateController(apply=seen.append, decrease=0.5, increase=0.1, hold_s=2.0, tick_s=1.0, clock=clock)
    for _ in range(3):
        clock.t += 1
        assert c.step(tick(100, bad=2)) == 1.0  # 2 % late or failed: fine
    clock.t += 1
    assert c.step(tick(100, bad=20, key="canary")) == 0.5  # either version backing up cuts both
    assert c.backing_up() and "canary" in c.reason
    clock.t += 1
    assert c.step(tick(100, bad=50)) == 0.5  # requests sent before the cut: held
    clock.t += 1.5
    assert c.step(tick(100, backlog=3)) == 0.25  # sends waiting for the cap: backing up
    for _ in range(3):
        clock.t += 1
        c.step(tick(100))
    assert c.factor == pytest.approx(0.45)  # held one tick, then +0.1 per clean tick
    for _ in range(20):
        clock.t += 1
        c.step(tick(100))
    assert c.factor == 1.0 and not c.backing_up()
    assert seen[0] == 0.5 and seen[-1] == 1.0
    w = c.take_window()
    assert w["canary"] == {"done": 100, "bad": 20, "ticks": 1}
    assert w["stable"]["ticks"] == 2 and w["stable"]["bad"] == 2 * 3 + 50
    assert c.take_window() == {}


def test_rate_controller_has_a_floor_and_ignores_idle_ticks():
    clock = FakeClock()
    c = RateController(min_factor=0.1, hold_s=0.0, clock=clock)
    for _ in range(10):
        clock.t += 1
        c.step(tick(10, bad=10))
    assert c.factor == 0.1
    clock.t += 1
    c.step(tick(0))  # nothing finished: no news, no raise
    assert c.factor == 0.1
    with pytest.raises(ValueError, match="decrease"):
        RateController(decrease=1.0)


def _modelserver(tmp_path, demo_assets, name, **kw):
    from tests.servers import start_modelserver

    return start_modelserver(tmp_path, model_config=demo_assets.model_config, name=name, **kw)


@pytest.mark.slow
def test_rate_controller_on_a_server_that_backs_up_and_recovers(demo_assets, tmp_path):
    """Both versions on one stand-in; it slows down (as a saturated server does), then recovers."""
    from loadtest.wire import Target, build_payloads, make_sender

    rows = np.load(demo_assets.golden)["inputs"].astype(np.float32)
    with _modelserver(tmp_path, demo_assets, "backs-up") as ms:
        async def main():
            stop = asyncio.Event()
            gens, senders, history = {}, [], []
            c = RateController(apply=lambda f: [g.set_rate(20 * f) for g in gens.values()],
                               increase=0.1, hold_s=1.4, tick_s=0.4)
            for i, label in enumerate(("stable", "canary")):
                t = Target(ms.grpc_target, "digits", "grpc", label=label)
                s = make_sender(t, build_payloads(t, rows, "x"), timeout_s=1.0)
                senders.append(s)
                gens[label] = LoadGenerator(s, rate=20, concurrency=16, timeout_s=1.0, phase=i / 2)
                c.watch(label, gens[label].progress)
            tasks = [asyncio.create_task(g.run(stop)) for g in gens.values()] + [asyncio.create_task(c.run(stop))]

            async def watch(seconds):
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    await asyncio.sleep(0.2)
                    history.append(c.factor)
                return list(history)

            healthy = await watch(3.0)
            # Answers later than the deadline (and 16 in flight at most): the server backs up.
            await asyncio.to_thread(ms.set_faults, {"latency_s": 1.2})
            history.clear()
            backed_up = await watch(5.0)
            rates = {k: g.rate for k, g in gens.items()}
            await asyncio.to_thread(ms.clear_faults)
            history.clear()
            recovered = await watch(12.0)
            stop.set()
            await asyncio.gather(*tasks)
            for s in senders:
                await s.close()
            return healthy, backed_up, rates, recovered, c

        healthy, backed_up, rates, recovered, c = asyncio.run(main())
    assert min(healthy) == 1.0, healthy
    assert min(backed_up) <= 0.5, backed_up
    assert rates["stable"] == rates["canary"] < 20  # both versions alike
    assert recovered[-1] == 1.0, recovered
    # slowly: several clean ticks from the lowest point back to the full rate
    low = recovered.index(min(recovered))
    assert recovered.index(1.0, low) - low >= 4, recovered


# ------------------------------------------------------------------ LiveMeasurement against real servers


def _analysis(tmp_path, stable: str, canary: str, golden, *, labels=("stable", "stable"), load_rate=20.0,
              probe_rate=10.0, timeout_s=2.0):
    from webhook.config import load_settings

    def target(address, label):
        return {"protocol": "tfserving-grpc", "address": address, "model": "digits", "label": label,
                "timeout_s": timeout_s}

    cfg = {"server": {"store": str(tmp_path / "runs.db")}, "analyses": {"a": {
        "stable": target(stable, labels[0]), "canary": target(canary, labels[1]),
        "golden": str(golden), "probe": {"rate": probe_rate, "timeout_s": timeout_s},
        "load": {"rate": load_rate, "timeout_s": timeout_s, "concurrency": 16},
        "checks": {"drift": {"enabled": False}}, "interval_s": 2, "allow_undecidable": True}}}
    return load_settings(cfg, tmp_path).analyses["a"]


def _pre_fix_channels(monkeypatch):
    """The clients as they were: one process-wide subchannel per address and channel arguments,
    and the reconnect backoff a channel has after a minute of failures (gRPC's grows to 120 s)."""
    from loadtest import clients, wire

    backoff = [("grpc.initial_reconnect_backoff_ms", 30_000), ("grpc.max_reconnect_backoff_ms", 30_000)]
    monkeypatch.setattr(clients, "_CHANNEL_OPTIONS", [o for o in clients._CHANNEL_OPTIONS
                                                      if o[0] not in dict(clients.ISOLATED_CHANNEL_OPTIONS)]
                        + backoff)
    monkeypatch.setattr(wire, "ISOLATED_CHANNEL_OPTIONS", backoff)


@pytest.mark.slow
@pytest.mark.timeout(240)
# "shared (before)" (the channels before per-run connections) failed the new canary: run it by hand with
# `-k died_under_load` after adding it to this list; CI runs what the product does now.
@pytest.mark.parametrize("channels", ["own (now)"])
def test_new_canary_at_the_address_of_a_canary_that_died_under_load(channels, modelserver, demo_assets,
                                                                     tmp_path, monkeypatch):
    """Run 1 loads a canary that dies; a new, healthy canary starts at the same address while run 1
    is still live (an Argo run has no post-rollout: it idles out only after 120 s); run 2 checks it
    at pre-rollout, then measures it."""
    from webhook.measure import LiveMeasurement

    if channels.startswith("shared"):
        _pre_fix_channels(monkeypatch)
    first = _modelserver(tmp_path, demo_assets, "canary-1")
    port, rest_port = first.grpc_port, first.rest_port
    analysis = _analysis(tmp_path, modelserver.grpc_target, first.grpc_target, demo_assets.golden)
    second = None

    async def main():
        nonlocal second
        run1 = LiveMeasurement(analysis)
        assert (await run1.check_canary())[0]
        await run1.start()
        await asyncio.sleep(1.5)
        assert run1.take_window().canary.errors == 0
        await asyncio.to_thread(first.stop)  # the canary dies while run 1 still loads it
        await asyncio.sleep(2.5)
        dead = run1.take_window()
        assert dead.canary.errors_by_code.get("UNAVAILABLE", 0) > 0  # run 1's canary failed: its own errors
        second = await asyncio.to_thread(_modelserver, tmp_path, demo_assets, "canary-2",
                                         extra_args=["--port", str(port), "--rest_api_port", str(rest_port)])
        assert second.grpc_port == port
        run2 = LiveMeasurement(analysis)
        t0 = time.monotonic()
        check = await run2.check_canary()
        check_s = time.monotonic() - t0
        if not check[0]:
            await run1.stop()
            return check, check_s, None, None, None
        golden = await run2.golden_check()
        await run2.start()
        await asyncio.sleep(2.0)
        window = run2.take_window()
        await asyncio.sleep(1.0)
        run1.take_window()
        await asyncio.sleep(1.5)
        run1_later = run1.take_window()  # run 1's own channels reach the new server too
        await run2.stop()
        await run1.stop()
        return check, check_s, golden, window, run1_later

    try:
        check, check_s, golden, window, run1_later = asyncio.run(main())
    finally:
        first.stop()
        if second is not None:
            second.stop()
    ok, reason, culprit = check
    if channels.startswith("shared"):
        # The bug, reproduced: the healthy canary is refused at once with the dead one's cached failure.
        assert not ok and culprit == "canary" and "UNAVAILABLE" in reason, reason
        assert check_s < 0.5
        return
    assert ok, reason
    for w in (golden, window):
        assert int(np.count_nonzero(w.probes.canary_pred < 0)) == 0
        assert len(w.probes) > 0
    assert window.canary.errors == 0 and window.canary.requests > 0, window.canary
    assert window.stable.errors == 0
    assert window.unmeasured is None
    assert run1_later.canary.errors == 0 and run1_later.canary.requests > 0
    gate = analysis.gate
    state = gate.new_state()
    for w in (golden, window):
        w.reference_inputs = analysis.reference_inputs
        gate.update(state, w)
    assert gate.verdict(state).outcome != "fail"


@pytest.mark.slow
def test_identical_canary_on_a_server_shedding_requests_gets_no_errors(echo_with, tmp_path, demo_assets):
    """A stand-in that sheds a third of the requests unanswered (CANCELLED, as an overloaded gRPC
    server does): no error for either version, the windows say Shadowgate overloaded it, the load
    is cut, and the gate never fails the identical canary."""
    from webhook.measure import LiveMeasurement

    server = echo_with(error_ratio=0.3, error_code="CANCELLED")
    x = np.load(demo_assets.golden)["inputs"].astype(np.float32)[:40]
    golden = tmp_path / "golden.npz"
    np.savez(golden, inputs=x.reshape(40, -1), labels=np.zeros(40, np.int64))  # the echo answers class 0
    analysis = _analysis(tmp_path, server.grpc_target, server.grpc_target, golden, load_rate=40, probe_rate=10)

    async def main():
        m = LiveMeasurement(analysis)
        windows = [await m.golden_check()]
        await m.start()
        for _ in range(3):
            await asyncio.sleep(1.5)
            windows.append(m.take_window())
        state = m.load_state()
        await m.stop()
        return windows, state

    windows, state = asyncio.run(main())
    for w in windows:
        assert w.canary.errors == 0 and w.stable.errors == 0
        assert int(np.count_nonzero(w.probes.canary_pred < 0)) == 0
    for w in windows[1:]:
        assert w.canary.late > 0 and w.unmeasured and "Shadowgate's own failures" in w.unmeasured, w.unmeasured
    assert state["factor"] < 1.0 and state["cuts"] >= 1
    gate = analysis.gate
    st = gate.new_state()
    for w in windows:
        gate.update(st, w)
    assert gate.verdict(st).outcome != "fail"


class FakeServingClient:
    """status / metadata answering from a script: an exception to raise or a value."""

    def __init__(self, status=None, metadata=None):
        self.answers = {"status": status, "metadata": metadata}
        self.calls = []

    async def _answer(self, method):
        self.calls.append(method)
        a = self.answers[method]
        a = a.pop(0) if isinstance(a, list) else a
        if isinstance(a, Exception):
            raise a
        return a

    async def status(self, timeout_s=None):
        return await self._answer("status")

    async def metadata(self, timeout_s=None):
        return await self._answer("metadata")

    async def close(self):
        pass


SIG = {"signatures": {"serving_default": {"inputs": {"x": {"dtype": "DT_FLOAT", "shape": [-1, 64]}},
                                          "outputs": {}}}, "model_version": 1}
STATES = [{"version": 1, "state": "AVAILABLE"}]


@pytest.mark.parametrize("canary_status,stable_meta,culprit", [
    # a canary that does not answer while stable does: the canary's fault
    (ServingError("DEADLINE_EXCEEDED", "late"), SIG, "canary"),
    # neither answers in time: the servers are backed up, nothing says which version
    (ServingError("DEADLINE_EXCEEDED", "late"), ServingError("DEADLINE_EXCEEDED", "late"), "shadowgate"),
    # shed unanswered on every try (three fresh connections): not the canary's answer
    ([ServingError("CANCELLED", "shed")] * 3, SIG, "shadowgate"),
    # shed once, then answered on a fresh connection: passes
    ([ServingError("CANCELLED", "shed"), STATES], SIG, None),
    # refused: the canary is not there
    (ServingError("UNAVAILABLE", "Connection refused"), SIG, "canary"),
])
def test_canary_check_blames_only_what_the_canary_answered(canary_status, stable_meta, culprit, tmp_path,
                                                             demo_assets, monkeypatch):
    from webhook import measure

    analysis = _analysis(tmp_path, "127.0.0.1:1", "127.0.0.1:2", demo_assets.golden)
    canary = FakeServingClient(status=canary_status, metadata=SIG)
    stable = FakeServingClient(metadata=stable_meta)
    monkeypatch.setattr(measure, "_client",
                        lambda t, timeout_s: canary if t.address == "127.0.0.1:2" else stable)
    ok, reason, who = asyncio.run(measure.LiveMeasurement(analysis).check_canary())
    assert who == culprit, reason
    assert ok == (culprit is None)
