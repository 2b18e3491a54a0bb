"""The open-loop generator: timetable, corrected latency, cap, errors, deadlines, windows."""

import asyncio
import time

import numpy as np
import pytest

from analyses.window import VersionTraffic
from loadtest.errors import ServingError
from loadtest.hist import LatencyHistogram
from loadtest.load import LoadGenerator, LoadStats, Schedule, _Backlog, _Reservoir, to_version_traffic
from tests.loadtest.util import run_against


class Recorder:
    """A `send` that notes when each request left and how many were in flight."""

    def __init__(self, work_s: float = 0.0) -> None:
        self.work_s = work_s
        self.times: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self):
        self.times.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.work_s)
        finally:
            self.in_flight -= 1


def run(gen: LoadGenerator, stop=None) -> LoadStats:
    return asyncio.run(gen.run(stop))


# ------------------------------------------------------------ timetable
def test_constant_rate_sends_exactly_the_timetable():
    send = Recorder(0.001)
    stats = run(LoadGenerator(send, Schedule.constant(200, 3.0)))
    assert stats.intended == stats.sent == stats.ok == 600
    assert stats.duration_s == pytest.approx(3.0, abs=0.02)
    assert stats.achieved_rps == pytest.approx(200, rel=0.01)
    # Open loop: every second of the run carries its share of the requests.
    t = np.asarray(send.times) - send.times[0]
    per_second = np.histogram(t, bins=[0, 1, 2, 3])[0]
    assert all(abs(n - 200) <= 20 for n in per_second), per_second


def test_steps_schedule_changes_rate_per_stage():
    send = Recorder()
    stats = run(LoadGenerator(send, Schedule.steps(400, (0.05, 0.25, 0.5), step_s=1.0)))
    assert stats.intended == stats.sent == 20 + 100 + 200
    t = np.asarray(send.times) - send.times[0]
    per_stage = np.histogram(t, bins=[0, 1, 2, 3.5])[0]
    assert abs(per_stage[0] - 20) <= 3 and abs(per_stage[1] - 100) <= 10 and abs(per_stage[2] - 200) <= 20


def test_warmup_is_sent_but_excluded():
    send = Recorder()
    stats = run(LoadGenerator(send, Schedule.constant(100, 1.0), warmup_s=0.5))
    assert len(send.times) == 150
    assert stats.intended == stats.sent == stats.ok == 100
    assert stats.corrected.count == 100


def test_constant_rate_until_stop_and_set_rate():
    send = Recorder()

    async def main():
        stop = asyncio.Event()
        gen = LoadGenerator(send, rate=50)
        task = asyncio.create_task(gen.run(stop))
        await asyncio.sleep(1.0)
        gen.set_rate(200)
        await asyncio.sleep(1.0)
        stop.set()
        return await task

    stats = asyncio.run(main())
    assert stats.intended == pytest.approx(250, abs=8)
    assert stats.sent == stats.intended


def test_constant_rate_needs_a_stop_event():
    with pytest.raises(ValueError, match="stop"):
        run(LoadGenerator(Recorder(), rate=10))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="schedule or a constant rate"):
        LoadGenerator(Recorder())
    with pytest.raises(ValueError, match="concurrency"):
        LoadGenerator(Recorder(), rate=1, concurrency=0)
    with pytest.raises(ValueError, match="timeout_s"):
        LoadGenerator(Recorder(), rate=1, timeout_s=0)
    with pytest.raises(ValueError, match="set_rate"):
        LoadGenerator(Recorder(), Schedule.constant(1, 1)).set_rate(5)


# ------------------------------------------------------------ cap and lateness
def test_cap_holds_and_late_sends_are_counted_not_dropped():
    gate = asyncio.Event

    class Gated(Recorder):
        def __init__(self):
            super().__init__()
            self.gate = None

        async def __call__(self):
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await self.gate.wait()
            finally:
                self.in_flight -= 1

    send = Gated()

    async def main():
        send.gate = gate()
        asyncio.get_running_loop().call_later(0.6, send.gate.set)
        return await LoadGenerator(send, Schedule.constant(100, 1.0), concurrency=5).run()

    stats = asyncio.run(main())
    assert send.max_in_flight == 5
    assert stats.intended == stats.sent == stats.ok == 100
    assert stats.late >= 30  # the slots due while 5 were held
    assert stats.unsent == 0
    # Those waited: their latency counts from when they were due.
    assert stats.corrected.max >= 0.4
    assert stats.send_lag.max >= 0.4


def test_slots_still_waiting_at_the_end_are_reported_unsent():
    send = Recorder(10.0)
    stats = run(LoadGenerator(send, Schedule.constant(50, 1.0), concurrency=1, timeout_s=0.3))
    assert stats.intended == 50
    assert 0 < stats.sent < 10
    assert stats.unsent == stats.intended - stats.sent
    assert stats.late == stats.intended - 1
    assert stats.errors_by_code == {"DEADLINE_EXCEEDED": stats.sent}
    assert stats.ok == 0


def test_backlog_memory_is_bounded_runs():
    b = _Backlog()
    for k in range(100_000):
        b.push(10.0 + k * 0.001)
    assert len(b) == 100_000 and len(b.runs) == 1
    assert b.pop() == 10.0 and b.pop() == pytest.approx(10.001)


# ------------------------------------------------------------ errors
def test_errors_counted_by_label():
    n = {"k": 0}

    async def send():
        n["k"] += 1
        if n["k"] % 4 == 0:
            raise ServingError("UNAVAILABLE", "down")
        if n["k"] % 4 == 1:
            raise ServingError("RESOURCE_EXHAUSTED", "busy", http_status=429)
        if n["k"] % 4 == 2:
            raise RuntimeError("bug in send")

    stats = run(LoadGenerator(send, Schedule.constant(100, 0.4)))
    assert stats.intended == 40
    assert stats.errors_by_code == {"UNAVAILABLE": 10, "429": 10, "RuntimeError": 10}
    assert stats.ok == 10 and stats.requests == 40
    assert stats.error_ratio == pytest.approx(0.75)


@pytest.mark.parametrize("protocol,label", [("grpc", "RESOURCE_EXHAUSTED"), ("rest", "429")])
def test_server_errors_by_status_and_http_code(echo_with, protocol, label):
    server = echo_with(error_ratio=1.0, error_code="RESOURCE_EXHAUSTED")
    address = server.grpc_target if protocol == "grpc" else server.rest_url
    stats = run_against(address, protocol, Schedule.constant(50, 0.6))
    assert stats.errors_by_code == {label: 30}
    assert stats.ok == 0


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_deadline_exceeded_when_the_server_is_too_slow(echo_with, protocol):
    server = echo_with(delay_s=2.0)
    address = server.grpc_target if protocol == "grpc" else server.rest_url
    stats = run_against(address, protocol, Schedule.constant(20, 0.5), timeout_s=0.3)
    assert stats.errors_by_code == {"DEADLINE_EXCEEDED": 10}


def test_backstop_deadline_for_a_send_without_one():
    async def hang():
        await asyncio.sleep(30)

    stats = run(LoadGenerator(hang, Schedule.constant(20, 0.25), timeout_s=0.2))
    assert stats.errors_by_code == {"DEADLINE_EXCEEDED": 5}


def test_unreachable_target_counts_unavailable():
    stats = run_against("127.0.0.1:1", "grpc", Schedule.constant(20, 0.5), timeout_s=1.0)
    assert stats.ok == 0
    assert set(stats.errors_by_code) == {"UNAVAILABLE"}


# ------------------------------------------------------------ coordinated omission
def test_stall_shows_in_corrected_p99_but_not_in_service_time(echo_with):
    # A server that pauses 1 s every 3 s. With one request allowed in flight
    # (as a closed-loop tool has), only one request per pause sees it in
    # service time; the ~100 that were due during it wait, and the corrected
    # latency says so.
    server = echo_with(stall_every_s=3.0, stall_for_s=1.0)
    stats = run_against(server.grpc_target, "grpc", Schedule.constant(100, 6.0), concurrency=1)
    assert stats.intended == 600
    assert stats.sent + stats.unsent == 600 and stats.sent >= 500
    assert stats.late >= 100
    assert stats.corrected.quantile(0.99) >= 0.6
    assert stats.service.quantile(0.99) < 0.3
    assert stats.service.max >= 0.6  # the one request that met each pause


def test_fast_server_corrected_close_to_service(echo):
    stats = run_against(echo.grpc_target, "grpc", Schedule.constant(100, 1.0))
    assert stats.ok == 100 and stats.late == 0
    assert stats.corrected.quantile(0.5) >= stats.service.quantile(0.5)


# ------------------------------------------------------------ windows and merging
def test_windows_partition_the_run():
    send = Recorder(0.002)

    async def main():
        stop = asyncio.Event()
        gen = LoadGenerator(send, rate=200)
        task = asyncio.create_task(gen.run(stop))
        windows = []
        for _ in range(3):
            await asyncio.sleep(0.5)
            windows.append(gen.take_window())
        stop.set()
        total = await task
        return windows, total

    windows, total = asyncio.run(main())
    assert [w.intended for w in windows] == pytest.approx([100, 100, 100], abs=3)
    assert all(w.duration_s == pytest.approx(0.5, abs=0.1) for w in windows)
    assert total.intended >= sum(w.intended for w in windows)
    assert total.ok == total.sent == total.intended
    assert total.corrected.count == total.ok


def test_merge_of_stats_adds_counts_and_histograms():
    def stats(values, codes, ok):
        h = LatencyHistogram()
        h.record_many(values)
        return LoadStats(intended=ok + sum(codes.values()), sent=ok + sum(codes.values()), ok=ok,
                         errors_by_code=codes, corrected=h, service=h.copy(),
                         latency_sample_s=np.asarray(values), duration_s=10.0, sample_size=100)

    a = stats(np.full(80, 0.01), {"UNAVAILABLE": 2}, 80)
    b = stats(np.full(80, 1.0), {"UNAVAILABLE": 1, "503": 4}, 80)
    m = a.merge(b)
    assert m.ok == 160 and m.errors_by_code == {"UNAVAILABLE": 3, "503": 4}
    assert m.corrected.count == 160
    assert m.corrected.quantile(0.25) == pytest.approx(0.01, rel=1e-3)
    assert m.corrected.quantile(0.75) == pytest.approx(1.0, rel=1e-3)
    assert m.latency_sample_s.size == 100  # bounded
    assert 30 <= np.sum(m.latency_sample_s == 1.0) <= 70  # drawn from both halves
    assert m.duration_s == 20.0
    assert a.merge(b, concurrent=True).duration_s == 10.0
    assert a.merge(b, concurrent=True).achieved_rps == pytest.approx(a.achieved_rps + b.achieved_rps)


def test_reservoir_is_uniform_and_bounded():
    r = _Reservoir(1000, np.random.default_rng(0))
    for chunk in np.array_split(np.arange(100_000, dtype=float), 37):
        r.add_many(chunk)
    assert r.values.size == 1000 and r.seen == 100_000
    assert np.unique(r.values).size == 1000
    assert np.mean(r.values) == pytest.approx(50_000, rel=0.05)
    assert np.mean(r.values < 50_000) == pytest.approx(0.5, abs=0.05)


def test_sample_size_bounds_a_long_run():
    stats = run(LoadGenerator(Recorder(), Schedule.constant(2000, 1.0), sample_size=300))
    assert stats.ok == 2000
    assert stats.latency_sample_s.size == 300


def test_version_traffic_for_the_window():
    stats = run(LoadGenerator(Recorder(), Schedule.constant(100, 0.5)))
    stats.errors_by_code = {"UNAVAILABLE": 3}
    vt = to_version_traffic(stats)
    assert isinstance(vt, VersionTraffic)
    assert vt.requests == 53 and vt.errors == 3
    assert vt.latencies_s.size == 50


def test_to_dict_is_json_ready():
    import json

    stats = run(LoadGenerator(Recorder(), Schedule.constant(100, 0.3)))
    doc = json.loads(json.dumps(stats.to_dict()))
    assert doc["sent"] == 30 and doc["latency_corrected"]["count"] == 30
    assert set(doc["latency_corrected"]) >= {"p50_s", "p90_s", "p99_s", "p99.9_s", "max_s", "mean_s"}
