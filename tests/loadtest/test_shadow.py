"""Shadow probes: golden inputs to stable and canary at the same moment, bounded pairs."""

import asyncio

import numpy as np
import pytest

from analyses.window import ProbePairs
from loadtest.errors import ServingError
from loadtest.shadow import ProbeStats, ShadowProber


class FakeResult:
    def __init__(self, outputs, version=None):
        self.outputs = outputs
        self.model_version = version


class LoggingClient:
    """An in-process async client that logs when each request enters and leaves."""

    def __init__(self, name, log, *, cls=3, version=1, fail=None, work_s=0.01):
        self.name, self.log, self.cls, self.version = name, log, cls, version
        self.fail, self.work_s = fail, work_s

    async def predict(self, inputs, timeout_s=None):
        row = int(inputs["x"][0, 0])
        self.log.append(("enter", self.name, row))
        await asyncio.sleep(self.work_s)
        self.log.append(("leave", self.name, row))
        if self.fail:
            raise ServingError(self.fail, "injected")
        scores = np.zeros((1, 10), np.float32)
        scores[0, self.cls] = 1.0
        return FakeResult({"probabilities": scores}, self.version)


def golden(n=20):
    x = np.zeros((n, 64), np.float32)
    x[:, 0] = np.arange(n)
    return x, np.full(n, 3, np.int64)


def test_pair_requests_leave_together_and_are_recorded():
    log = []
    x, y = golden()
    prober = ShadowProber(LoggingClient("s", log), LoggingClient("c", log, cls=5, version=2), x, y, rate=40)
    stats = asyncio.run(prober.run(duration_s=0.5))
    assert stats.sent == 20 and stats.pairs_seen == 20
    # Both requests of a pair are issued before either answers.
    for row in range(20):
        enters = [i for i, e in enumerate(log) if e[0] == "enter" and e[2] == row]
        leaves = [i for i, e in enumerate(log) if e[0] == "leave" and e[2] == row]
        assert len(enters) == 2 and max(enters) < min(leaves)
        assert enters[1] - enters[0] == 1
    p = stats.pairs
    assert set(p.stable_pred) == {3} and set(p.canary_pred) == {5}
    assert set(p.labels) == {3}
    assert p.stable_scores.shape == (20, 10) and p.inputs.shape == (20, 64)
    assert sorted(p.inputs[:, 0].astype(int)) == list(range(20))  # one cycle through the golden set
    assert list(p.stable_code) == ["OK"] * 20
    assert stats.stable_versions == {"1": 20} and stats.canary_versions == {"2": 20}
    assert stats.summary()["agreement"] == 0.0
    assert stats.summary()["stable_accuracy"] == 1.0 and stats.summary()["canary_accuracy"] == 0.0
    assert stats.stable_latency.count == 20


def test_failures_become_minus_one_and_are_counted_by_code():
    log = []
    x, y = golden(10)
    prober = ShadowProber(LoggingClient("s", log), LoggingClient("c", log, fail="UNAVAILABLE"), x, y, rate=50)
    stats = asyncio.run(prober.run(duration_s=0.2))
    assert stats.canary_errors_by_code == {"UNAVAILABLE": 10}
    assert set(stats.pairs.canary_pred) == {-1}
    assert np.isnan(stats.pairs.canary_scores).all()
    assert list(stats.pairs.canary_code) == ["UNAVAILABLE"] * 10
    pairs = stats.to_probe_pairs()
    assert isinstance(pairs, ProbePairs) and len(pairs) == 10


def test_probe_all_gives_up_on_a_version_that_answers_nothing():
    """A dead canary shows itself in the first pairs; the other golden rows are not waited out."""
    log = []
    x, y = golden(400)
    prober = ShadowProber(LoggingClient("s", log), LoggingClient("c", log, fail="DEADLINE_EXCEEDED"), x, y)
    stats = asyncio.run(prober.probe_all(concurrency=8, give_up_after=32))
    assert 32 <= stats.pairs_seen < 64  # at most the pairs already in flight finish
    assert set(stats.pairs.canary_pred) == {-1}
    healthy = asyncio.run(ShadowProber(LoggingClient("s", []), LoggingClient("c", []), x, y)
                          .probe_all(concurrency=8, give_up_after=32))
    assert healthy.pairs_seen == 400 and len(set(healthy.pairs.rows.tolist())) == 400


def test_pairs_are_a_bounded_sample_on_long_runs():
    log = []
    x, y = golden(20)
    prober = ShadowProber(LoggingClient("s", log, work_s=0), LoggingClient("c", log, work_s=0), x, y,
                          rate=200, max_pairs=25)
    stats = asyncio.run(prober.run(duration_s=0.5))
    assert stats.pairs_seen == 100
    assert len(stats.pairs) == 25
    assert stats.stable_latency.count == 100  # histograms keep every latency


def test_take_window_swaps_and_merge_stays_bounded():
    log = []
    x, y = golden(20)
    prober = ShadowProber(LoggingClient("s", log, work_s=0), LoggingClient("c", log, work_s=0), x, y,
                          rate=100, max_pairs=30)

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(prober.run(stop))
        await asyncio.sleep(0.5)
        pending_before = prober.pending()
        first = prober.take_window()
        pending_after = prober.pending()
        await asyncio.sleep(0.5)
        stop.set()
        return first, await task, pending_before, pending_after

    first, whole, pending_before, pending_after = asyncio.run(main())
    assert pending_before == first.pairs_seen and pending_after == 0
    assert first.pairs_seen >= 40
    assert whole.pairs_seen >= first.pairs_seen + 40  # run() returns the whole run
    assert len(whole.pairs) == 30  # still bounded
    assert whole.stable_latency.count == whole.pairs_seen
    again = first.merge(first)
    assert again.pairs_seen == 2 * first.pairs_seen and len(again.pairs) == 30


def test_predicted_class_from_scores_or_classes():
    x, y = golden(2)
    p = ShadowProber(None, None, x, y)
    assert p.predicted_class({"probabilities": np.array([[0.1, 0.7, 0.2]])})[0] == 1
    assert p.predicted_class({"classes": np.array([4])}) == (4, None)
    with pytest.raises(ValueError, match="classes"):
        p.predicted_class({"other": np.array(["a"])})


def test_bad_golden_sets_are_named():
    x, y = golden(5)
    with pytest.raises(ValueError, match="labels"):
        ShadowProber(None, None, x, y[:3])
    with pytest.raises(ValueError, match="empty"):
        ShadowProber(None, None, x[:0], y[:0])
    with pytest.raises(ValueError, match="rate"):
        ShadowProber(None, None, x, y, rate=0)


# ------------------------------------------------------------ against the stand-in TF Serving
@pytest.fixture(scope="module")
def golden_set(demo_assets):
    data = np.load(demo_assets.golden)
    return data["inputs"].astype(np.float32), data["labels"]


@pytest.mark.parametrize("protocol", ["tfserving-grpc", "tfserving-rest"])
def test_probe_all_against_the_stand_in(modelserver, golden_set, protocol):
    from loadtest.clients import ModelRef, make_client

    x, y = golden_set
    target = modelserver.grpc_target if protocol == "tfserving-grpc" else modelserver.rest_url

    async def main() -> ProbeStats:
        stable = make_client(protocol, target, ModelRef("digits", label="stable"), asynchronous=True)
        canary = make_client(protocol, target, ModelRef("digits", label="canary"), asynchronous=True)
        try:
            return await ShadowProber(stable, canary, x, y, max_pairs=10).probe_all(concurrency=8)
        finally:
            await stable.close()
            await canary.close()

    stats = asyncio.run(main())
    n = len(y)
    assert stats.pairs_seen == n and len(stats.pairs) == n  # every pair kept
    assert not stats.stable_errors_by_code and not stats.canary_errors_by_code
    s = stats.summary()
    # The demo canary is the worse model: measurably less accurate, mostly agreeing.
    assert s["stable_accuracy"] > s["canary_accuracy"]
    assert s["stable_accuracy"] > 0.8
    if protocol == "tfserving-grpc":
        assert stats.stable_versions == {"1": n} and stats.canary_versions == {"2": n}
    pairs = stats.to_probe_pairs()
    assert pairs.stable_scores.shape == (n, 10)
    assert np.array_equal(np.sort(pairs.labels), np.sort(y))


@pytest.mark.slow
def test_run_against_a_failing_canary(demo_assets, golden_set, tmp_path):
    from loadtest.clients import AsyncRestClient, ModelRef
    from tests.servers import start_modelserver

    x, y = golden_set
    faults = {"error_ratio": 1.0, "error_code": "UNAVAILABLE", "labels": ["canary"]}
    with start_modelserver(tmp_path, model_config=demo_assets.model_config, faults=faults) as ms:
        async def main() -> ProbeStats:
            stable = AsyncRestClient(ms.rest_url, ModelRef("digits", label="stable"))
            canary = AsyncRestClient(ms.rest_url, ModelRef("digits", label="canary"))
            try:
                return await ShadowProber(stable, canary, x, y, rate=20).run(duration_s=1.0)
            finally:
                await stable.close()
                await canary.close()

        stats = asyncio.run(main())
    assert stats.sent == 20
    assert stats.canary_errors_by_code == {"503": 20}
    assert not stats.stable_errors_by_code
    assert set(stats.pairs.canary_pred) == {-1}
    assert (stats.pairs.stable_pred >= 0).all()
