"""LatencyHistogram: same buckets as the reference HdrHistogram, mergeable, portable."""

import pickle

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram

from loadtest.hist import LatencyHistogram, merge_all


def _latencies(seed: int = 1, n: int = 20000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.lognormal(-7, 1, n), rng.uniform(0, 3, n // 100), [0.0, 1e-7, 59.0]])


def test_quantiles_match_the_reference_implementation():
    x = _latencies()
    h = LatencyHistogram()
    h.record_many(x)
    ref = HdrHistogram(1, 60_000_000, 3)
    for v in x:
        ref.record_value(int(round(v * 1e6)))
    for q in (0.5, 0.9, 0.99, 0.999):
        assert h.quantile(q) == ref.get_value_at_percentile(q * 100) / 1e6
    assert h.count == ref.get_total_count() == x.size
    assert h.mean == pytest.approx(ref.get_mean_value() / 1e6)


def test_quantiles_are_within_three_digits_of_exact():
    x = _latencies(2)
    h = LatencyHistogram()
    h.record_many(x)
    for q in (0.5, 0.9, 0.99):
        exact = float(np.quantile(x, q, method="inverted_cdf"))
        assert exact - 1e-6 <= h.quantile(q) <= exact * 1.001 + 1e-6  # 1 us unit, 3 digits


def test_one_by_one_equals_batch():
    x = _latencies(3, 5000)
    a, b = LatencyHistogram(), LatencyHistogram()
    for v in x:
        a.record(float(v))
    b.record_many(x)
    assert a.to_bytes() == b.to_bytes()
    assert a.max == b.max == pytest.approx(x.max(), abs=1e-6)


def test_merge_equals_recording_everything_in_one():
    x = _latencies(4)
    parts = np.array_split(x, 5)
    hs = []
    for p in parts:
        h = LatencyHistogram()
        h.record_many(p)
        hs.append(h)
    whole = LatencyHistogram()
    whole.record_many(x)
    merged = merge_all(hs)
    assert merged.count == whole.count
    for q in (0.1, 0.5, 0.99, 0.999, 1.0):
        assert merged.quantile(q) == whole.quantile(q)


def test_encoding_round_trip_and_reference_decoder():
    x = _latencies(5)
    h = LatencyHistogram()
    h.record_many(x)
    blob = h.to_bytes()
    back = LatencyHistogram.from_bytes(blob)
    assert back.count == h.count
    for q in (0.5, 0.99, 0.999):
        assert back.quantile(q) == h.quantile(q)
    ref = HdrHistogram.decode(blob)  # the standard V2 histoblob
    assert ref.get_total_count() == h.count
    assert ref.get_value_at_percentile(99) / 1e6 == h.quantile(0.99)
    again = pickle.loads(pickle.dumps(h))
    assert again.quantile(0.5) == h.quantile(0.5)


def test_memory_is_bounded_whatever_the_count():
    h = LatencyHistogram()
    h.record_many(np.full(10, 0.001))
    size_small = len(pickle.dumps(h._counts))
    h.record_many(np.random.default_rng(0).uniform(0, 10, 200_000))
    assert len(pickle.dumps(h._counts)) == size_small


def test_out_of_range_values_are_clipped_not_lost():
    h = LatencyHistogram(highest_s=1.0)
    h.record_many([0.5, 5.0, -1.0, float("nan")])
    assert h.count == 3
    assert h.clipped == 1
    assert h.max == 1.0
    assert h.min == 0.0


def test_empty_histogram_reads_zero():
    h = LatencyHistogram()
    assert h.count == 0 and h.quantile(0.99) == 0.0 and h.mean == 0.0 and h.max == 0.0
    assert LatencyHistogram.from_bytes(h.to_bytes()).count == 0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="q must"):
        LatencyHistogram().quantile(99)
    with pytest.raises(ValueError, match="different ranges"):
        LatencyHistogram().merge(LatencyHistogram(highest_s=10.0))
    with pytest.raises(ValueError, match="HdrHistogram"):
        LatencyHistogram.from_bytes(b"not a histogram")
