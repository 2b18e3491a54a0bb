"""Identical models on two separate stand-in processes, driven in Flagger's order: never rolled back.

The benchmark (bench/aa_rollouts.py) runs 20 of these; CI runs 3. Each rollout
has the golden check at pre-rollout while nothing else loads the servers,
then 220 req/s per version in 3 s windows: P99 at its minimum sample size.
"""

import pytest

from bench.aa_rollouts import run

pytestmark = pytest.mark.slow


def test_identical_versions_on_two_servers_are_promoted(tmp_path):
    out = run(3, 220.0, tmp_path, progress=lambda line: None)
    assert out["rolled_back"] == 0, out["rollback_reasons"]
    assert out["promoted"] == 3, out
