"""Identical models on two separate stand-in processes, driven in Flagger's order: never rolled back.

The benchmark (bench/aa_rollouts.py) runs 20 of these; CI runs 2. Each rollout
has the golden check at pre-rollout while nothing else loads the servers,
then 220 req/s per version in 3 s windows, latency on P90 (bench/aa_rollouts.py
says why not P99 on two shared cores). The gate's promise for identical
versions is that they are never rolled back; promotion needs the evidence to
pass each stage, which a loaded host can delay past the ticks allowed here, so
the test asks for at least one promotion.
"""

import pytest

from bench.aa_rollouts import run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def test_identical_versions_on_two_servers_are_never_rolled_back(tmp_path):
    out = run(2, 220.0, tmp_path, progress=lambda line: None)
    assert out["rolled_back"] == 0, out["rollback_reasons"]
    assert out["promoted"] >= 1, out
