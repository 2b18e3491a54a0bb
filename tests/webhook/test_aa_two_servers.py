"""Identical models, the canary on two stand-in processes behind one address, driven in Flagger's order:
never rolled back.

Stable is served by one process; the canary by two started with `--reuse_port`
on one port (one address, as pods behind one Service: the kernel spreads
connections over them), loaded over 8 gRPC connections per version
(`load.connections`) so both canary processes get load. The benchmark
(bench/aa_rollouts.py, `--canary-processes 1..3`) runs 20 of these (0 rolled
back, 15 promoted, 5 undecided on 3 processes); CI runs one, for time. Each rollout has the golden check at pre-rollout while nothing else loads
the servers, then 220 req/s per version in 3 s windows, latency on P90
(bench/aa_rollouts.py says why not P99 on two shared cores). The gate's
promise for identical versions is that they are never rolled back;
promotion needs the evidence to pass each stage, which a loaded host can
delay past the ticks allowed here (a quarter of the benchmark's rollouts),
so the test asks that it is not rolled back and that both canary processes
were loaded; the benchmark counts promotions.
"""

import pytest

from bench.aa_rollouts import run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def test_identical_versions_with_the_canary_on_two_processes_are_never_rolled_back(tmp_path):
    out = run(1, 220.0, tmp_path, progress=lambda line: None, canary_processes=2)
    assert out["rolled_back"] == 0, out["rollback_reasons"]
    assert out["promoted"] + out["timeout"] == 1, out  # promoted, or undecided after 30 ticks
    # one address, two processes: the load reached both
    assert len(out["canary_requests"]) == 2 and min(out["canary_requests"]) > 0, out["canary_requests"]
