"""Latency histograms: HDR layout, seconds in and out, mergeable, bounded memory.

`LatencyHistogram` keeps counts in exactly the bucket layout of an
HdrHistogram (the `hdrhistogram` package) with integer microseconds inside,
so a histogram costs the same ~140 KB whether it holds ten latencies or a
billion, two histograms merge by adding their count arrays, and
`to_bytes()` is the standard HdrHistogram V2 "histoblob" (compressed,
base64) that any HdrHistogram tool can read.

Why not call `HdrHistogram.record_value` directly: that package is pure
Python and costs several microseconds per value. Here values are buffered
and recorded in batches with numpy (the same index arithmetic, vectorised),
which keeps the per-request cost of the load generator near one list append.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from hdrh.histogram import HdrHistogram

# Internal unit: integer microseconds. 1 us .. 60 s at 3 significant digits
# gives 0.1 % resolution over the whole range (1 us below 1 ms).
_UNIT_PER_S = 1_000_000
DEFAULT_LOWEST_S = 1e-6
DEFAULT_HIGHEST_S = 60.0
DEFAULT_DIGITS = 3
_FLUSH_AT = 8192


class LatencyHistogram:
    """An HDR latency histogram with seconds in and out.

    lowest_s / highest_s: trackable range in seconds (default 1 us .. 60 s);
    values above `highest_s` are recorded as `highest_s` and counted in
    `clipped`; negative values are recorded as 0.
    digits: significant decimal digits kept (3 = 0.1 % relative error).

    Not thread-safe: record from one thread (the event loop) and merge
    copies elsewhere.
    """

    __slots__ = ("_lowest", "_highest", "_digits", "_unit_mag", "_half_mag", "_half",
                 "_mask", "_counts", "_total", "_max_us", "_min_us", "_buf", "clipped",
                 "_counts_len")

    def __init__(self, lowest_s: float = DEFAULT_LOWEST_S, highest_s: float = DEFAULT_HIGHEST_S,
                 digits: int = DEFAULT_DIGITS) -> None:
        lowest = max(1, int(round(lowest_s * _UNIT_PER_S)))
        highest = int(round(highest_s * _UNIT_PER_S))
        if highest < 2 * lowest:
            raise ValueError("highest_s must be at least twice lowest_s")
        if not 1 <= int(digits) <= 5:
            raise ValueError("digits must be between 1 and 5")
        self._lowest, self._highest, self._digits = lowest, highest, int(digits)
        # The layout is taken from the reference implementation, so the
        # encoded form is byte-compatible with it.
        ref = _layout(lowest, highest, self._digits)
        self._unit_mag = ref.unit_magnitude
        self._half_mag = ref.sub_bucket_half_count_magnitude
        self._half = ref.sub_bucket_half_count
        self._mask = ref.sub_bucket_mask
        self._counts_len = ref.counts_len
        self._counts = np.zeros(self._counts_len, dtype=np.int64)
        self._total = 0
        self._max_us = 0
        self._min_us = -1
        self._buf: list[float] = []
        self.clipped = 0

    # ---------------------------------------------------------------- record
    def record(self, seconds: float) -> None:
        """Record one latency in seconds (buffered; cheap)."""
        buf = self._buf
        buf.append(seconds)
        if len(buf) >= _FLUSH_AT:
            self._flush()

    def record_many(self, seconds: Iterable[float] | np.ndarray) -> None:
        """Record many latencies in seconds at once (vectorised)."""
        self._flush()
        arr = np.asarray(seconds, dtype=np.float64).reshape(-1)
        if arr.size:
            self._add_us(arr)

    def _flush(self) -> None:
        if self._buf:
            arr = np.asarray(self._buf, dtype=np.float64)
            self._buf = []
            self._add_us(arr)

    def _add_us(self, seconds: np.ndarray) -> None:
        arr = seconds[np.isfinite(seconds)]
        us = np.rint(arr * _UNIT_PER_S)
        over = us > self._highest
        if over.any():
            self.clipped += int(over.sum())
            us[over] = self._highest
        us = np.maximum(us, 0).astype(np.int64)
        idx = self._indices(us)
        self._counts += np.bincount(idx, minlength=self._counts_len)[: self._counts_len]
        self._total += int(us.size)
        if us.size:
            mx, mn = int(us.max()), int(us.min())
            self._max_us = max(self._max_us, mx)
            self._min_us = mn if self._min_us < 0 else min(self._min_us, mn)

    def _indices(self, us: np.ndarray) -> np.ndarray:
        # HdrHistogram's counts index, vectorised: bucket from the bit length
        # of (value | sub_bucket_mask), then the sub-bucket within it.
        masked = us | self._mask
        _, bit_len = np.frexp(masked.astype(np.float64))  # exact below 2**53
        bucket = bit_len.astype(np.int64) - self._unit_mag - (self._half_mag + 1)
        sub = us >> (bucket + self._unit_mag)
        return ((bucket + 1) << self._half_mag) + sub - self._half

    # ---------------------------------------------------------------- read
    @property
    def count(self) -> int:
        """Number of recorded values."""
        self._flush()
        return self._total

    def __len__(self) -> int:
        return self.count

    def _value_at_index(self, index: np.ndarray | int):
        index = np.asarray(index, dtype=np.int64)
        bucket = (index >> self._half_mag) - 1
        sub = (index & (self._half - 1)) + self._half
        low = bucket < 0
        sub = np.where(low, sub - self._half, sub)
        bucket = np.where(low, 0, bucket)
        return sub << (bucket + self._unit_mag), bucket, sub

    def _highest_equivalent_us(self, index: np.ndarray | int) -> np.ndarray:
        lowest, bucket, sub = self._value_at_index(index)
        size = np.left_shift(1, self._unit_mag + bucket + (sub >= 2 * self._half))
        return lowest + size - 1

    def _median_equivalent_us(self, index: np.ndarray) -> np.ndarray:
        lowest, bucket, sub = self._value_at_index(index)
        size = np.left_shift(1, self._unit_mag + bucket + (sub >= 2 * self._half))
        return lowest + (size >> 1)

    def quantile(self, q: float) -> float:
        """Latency at quantile q (0..1), in seconds; 0.0 when empty.

        HdrHistogram semantics: the highest value equivalent to the bucket
        holding the q-th value, so the result is never below the true
        quantile and at most 0.1 % above it (3 digits).
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError("q must be within 0..1")
        self._flush()
        if self._total == 0:
            return 0.0
        target = max(int(q * self._total + 0.5), 1)
        cum = np.cumsum(self._counts)
        index = int(np.searchsorted(cum, target, side="left"))
        if q == 0.0:
            return float(self._value_at_index(index)[0]) / _UNIT_PER_S
        value = int(self._highest_equivalent_us(index))
        # Never report above the largest value actually seen.
        return min(value, self._max_us) / _UNIT_PER_S

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        """Several quantiles (each 0..1) in seconds."""
        return [self.quantile(q) for q in qs]

    @property
    def mean(self) -> float:
        """Mean latency in seconds (bucket midpoints; 0.1 % precision); 0.0 when empty."""
        self._flush()
        if self._total == 0:
            return 0.0
        nz = np.nonzero(self._counts)[0]
        mids = self._median_equivalent_us(nz).astype(np.float64)
        return float(np.dot(mids, self._counts[nz])) / self._total / _UNIT_PER_S

    @property
    def max(self) -> float:
        """Largest recorded latency in seconds (exact up to 1 us); 0.0 when empty."""
        self._flush()
        return self._max_us / _UNIT_PER_S

    @property
    def min(self) -> float:
        """Smallest recorded latency in seconds; 0.0 when empty."""
        self._flush()
        return max(self._min_us, 0) / _UNIT_PER_S

    # ---------------------------------------------------------------- combine
    def _check_layout(self, other: "LatencyHistogram") -> None:
        if (self._lowest, self._highest, self._digits) != (other._lowest, other._highest, other._digits):
            raise ValueError("cannot merge histograms with different ranges or digits")

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        """Add `other`'s values into this histogram; returns self."""
        self._check_layout(other)
        self._flush()
        other._flush()
        self._counts += other._counts
        self._total += other._total
        self.clipped += other.clipped
        self._max_us = max(self._max_us, other._max_us)
        if other._min_us >= 0:
            self._min_us = other._min_us if self._min_us < 0 else min(self._min_us, other._min_us)
        return self

    def copy(self) -> "LatencyHistogram":
        """An independent copy."""
        out = LatencyHistogram.__new__(LatencyHistogram)
        self._flush()
        for name in self.__slots__:
            setattr(out, name, getattr(self, name))
        out._counts = self._counts.copy()
        out._buf = []
        return out

    def reset(self) -> None:
        """Forget every value."""
        self._buf = []
        self._counts[:] = 0
        self._total = 0
        self._max_us = 0
        self._min_us = -1
        self.clipped = 0

    # ---------------------------------------------------------------- encode
    def to_bytes(self) -> bytes:
        """The standard HdrHistogram V2 histoblob (zlib, base64), values in microseconds.

        Sent between worker processes and stored; a few hundred bytes for a
        typical latency distribution.
        """
        self._flush()
        h = HdrHistogram(self._lowest, self._highest, self._digits)
        np.ctypeslib.as_array(h.counts)[:] = self._counts
        nz = np.nonzero(self._counts)[0]
        if nz.size:
            h.set_internal_tacking_values(int(nz[0]), int(nz[-1]), self._total)
            # Keep the exact extremes (the encoder reads max_value).
            h.max_value = self._max_us
            h.min_value = max(self._min_us, 0)
        return bytes(h.encode())

    @classmethod
    def from_bytes(cls, blob: bytes | str) -> "LatencyHistogram":
        """Rebuild a histogram from `to_bytes()` output (or any V2 histoblob in microseconds)."""
        if isinstance(blob, str):
            blob = blob.encode("ascii")
        if not blob:
            raise ValueError("empty histogram encoding")
        try:
            h = HdrHistogram.decode(blob)
        except Exception as exc:  # the decoder raises several unrelated types
            raise ValueError(f"not an HdrHistogram encoding: {exc}") from None
        out = cls(h.lowest_trackable_value / _UNIT_PER_S, h.highest_trackable_value / _UNIT_PER_S,
                  h.significant_figures)
        counts = np.ctypeslib.as_array(h.counts)
        n = min(counts.size, out._counts_len)
        out._counts[:n] = counts[:n]
        out._total = int(out._counts.sum())
        nz = np.nonzero(out._counts)[0]
        if nz.size:
            out._max_us = int(out._highest_equivalent_us(int(nz[-1])))
            out._min_us = int(out._value_at_index(int(nz[0]))[0])
        return out

    def __reduce__(self):
        # Pickling (multiprocessing) goes through the compact encoding.
        return (LatencyHistogram.from_bytes, (self.to_bytes(),))

    def to_dict(self, quantiles: Iterable[float] = (0.5, 0.9, 0.99, 0.999)) -> dict:
        """Summary for JSON: count, mean_s, max_s, and p50_s... for each quantile (0..1)."""
        out = {"count": self.count, "mean_s": self.mean, "min_s": self.min, "max_s": self.max}
        for q in quantiles:
            out[f"p{_qname(q)}_s"] = self.quantile(q)
        return out

    def __repr__(self) -> str:
        return (f"LatencyHistogram(count={self.count}, p50={self.quantile(0.5) * 1e3:.3f}ms, "
                f"p99={self.quantile(0.99) * 1e3:.3f}ms, max={self.max * 1e3:.3f}ms)")


def _qname(q: float) -> str:
    """0.5 -> '50', 0.999 -> '99.9'."""
    pct = round(q * 100, 6)
    return str(int(pct)) if pct == math.floor(pct) else f"{pct:g}"


_LAYOUTS: dict[tuple[int, int, int], HdrHistogram] = {}


def _layout(lowest: int, highest: int, digits: int) -> HdrHistogram:
    key = (lowest, highest, digits)
    if key not in _LAYOUTS:
        _LAYOUTS[key] = HdrHistogram(lowest, highest, digits)
    return _LAYOUTS[key]


def merge_all(hists: Iterable[LatencyHistogram]) -> LatencyHistogram:
    """A new histogram holding the values of all `hists` (default layout when empty)."""
    out = LatencyHistogram()
    for h in hists:
        out.merge(h)
    return out
