"""Nothing slow on a hook's path: a canary and a Prometheus that accept connections and never answer.

The service runs as its own process (bench/hooks_stalled.py drives it in
Flagger's order and with Argo calls). The CTR fetch (3 s deadline) and the
canary's probes and checks (2 s deadline) run beside the answers, so no hook but
pre-rollout, which checks the canary live, comes near those deadlines. The
figures (p99 per hook) are the benchmark's; here each answer must only be
faster than the deadlines it must not wait for, and the dead canary must
fail the run without any help.
"""

import pytest

from bench.hooks_stalled import measure

pytestmark = pytest.mark.slow


def test_hooks_answer_beside_a_stalled_canary_and_a_silent_prometheus(tmp_path):
    times = measure(60, tmp_path, progress=None)
    for hook in ("rollback", "rollout", "confirm-traffic-increase", "confirm-promotion", "event", "argo",
                 "post-rollout", "confirm-rollout"):
        assert max(times[hook]) < 1.5, (hook, max(times[hook]))  # under the canary's 2 s deadline
    assert times["status:confirm-rollout"] == [200]  # the canary is not asked before it has a pod
    assert times["status:pre-rollout"] == [412] and max(times["pre-rollout"]) < 8.0
    # The canary answers nothing: the run fails, every hook agrees, Argo gets a 200 verdict.
    # (on a busy test host the last few answers may be the front's busy ones: rollback 409, "not decided")
    assert 200 in times["status:rollback"][-5:] and 412 in times["status:rollout"][-5:], times
    assert set(times["status:argo"]) == {200}
