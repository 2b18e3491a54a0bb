"""Several load processes: the same timetable split N ways, results merged."""

import numpy as np

from loadtest.schedule import Schedule
from loadtest.wire import Target, build_payloads
from loadtest.workers import LoadSpec, run_workers


def test_two_workers_keep_the_full_timetable(echo):
    target = Target(echo.grpc_target, "digits")
    spec = LoadSpec(target, tuple(build_payloads(target, np.zeros((1, 64), np.float32), "x")),
                    Schedule.constant(200, 2.0), concurrency=64, warmup_s=0.3)
    seen = []
    stats = run_workers(spec, 2, progress=seen.append, interval_s=0.2)
    assert stats.intended == stats.sent == stats.ok == 400
    assert stats.duration_s == 2.0 or abs(stats.duration_s - 2.0) < 0.05
    assert abs(stats.achieved_rps - 200) <= 2
    assert stats.corrected.count == 400 and stats.service.count == 400
    assert seen and seen[-1]["sent"] == 400  # progress sums both workers


def test_share_splits_rate_and_cap():
    target = Target("h:1", "m")
    spec = LoadSpec(target, (b"",), Schedule.steps(300, (0.1, 1.0), 5), concurrency=100)
    part = spec.share(3)
    assert [s.rate for s in part.schedule.stages] == [10, 100]
    assert part.concurrency == 34
