"""Shadow probes: each golden input sent to stable and canary at the same moment.

A pair's two requests leave together (one `asyncio.gather`, so both are
started in the same event-loop turn) on an open-loop timetable, so
both versions see the same input under the same conditions. For each pair
we keep the golden label, both predictions (-1 where that version failed),
both score rows, both latencies (seconds, from the pair's intended send
time) and both outcomes. Memory stays bounded on long runs: latencies go
into HDR histograms, and the pairs themselves into a uniform reservoir
sample of at most `max_pairs` pairs per window.

The predicted class is the argmax of the `scores_key` output; a model
without it is read from its `classes` output.

A pair in which either request measured Shadowgate rather than the server
(cancelled, reset unanswered by a server shedding load, or a deadline noticed
well after it passed because the event loop was behind; see
loadtest.errors) is not kept: it is counted in `unmeasured`, and neither
version is blamed for it.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loadtest.errors import late_slack_s, own_failure
from loadtest.hist import LatencyHistogram
from loadtest.load import error_label

OK = "OK"


@dataclass
class PairSample:
    """Bounded sample of probe pairs; row i of every array is one pair.

    labels, stable_pred, canary_pred: int (n,); a prediction is -1 where
        that version's request failed.
    stable_scores, canary_scores: float (n, k) score rows (NaN where failed),
        or None when no version returned scores.
    inputs: float (n, d) the golden inputs sent, or None.
    stable_latency_s, canary_latency_s: float (n,) seconds from the pair's
        intended send time (NaN where failed).
    stable_code, canary_code: str (n,) "OK" or the error code.
    """

    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    stable_pred: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    canary_pred: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    stable_scores: np.ndarray | None = None
    canary_scores: np.ndarray | None = None
    inputs: np.ndarray | None = None
    stable_latency_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    canary_latency_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    stable_code: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    canary_code: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # golden row of each pair

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, idx: np.ndarray) -> "PairSample":
        """The pairs at positions `idx`."""
        def pick(a):
            return None if a is None else a[idx]
        return PairSample(self.labels[idx], self.stable_pred[idx], self.canary_pred[idx],
                          pick(self.stable_scores), pick(self.canary_scores), pick(self.inputs),
                          self.stable_latency_s[idx], self.canary_latency_s[idx],
                          self.stable_code[idx], self.canary_code[idx], self.rows[idx])

    @staticmethod
    def concat(a: "PairSample", b: "PairSample") -> "PairSample":
        """Rows of a then rows of b."""
        def cat(x, y, n_x, n_y):
            if x is None and y is None:
                return None
            if x is None:
                x = np.full((n_x,) + y.shape[1:], np.nan)
            if y is None:
                y = np.full((n_y,) + x.shape[1:], np.nan)
            if x.shape[1:] != y.shape[1:]:
                return None
            return np.concatenate([x, y])
        na, nb = len(a), len(b)
        return PairSample(
            np.concatenate([a.labels, b.labels]), np.concatenate([a.stable_pred, b.stable_pred]),
            np.concatenate([a.canary_pred, b.canary_pred]),
            cat(a.stable_scores, b.stable_scores, na, nb), cat(a.canary_scores, b.canary_scores, na, nb),
            cat(a.inputs, b.inputs, na, nb),
            np.concatenate([a.stable_latency_s, b.stable_latency_s]),
            np.concatenate([a.canary_latency_s, b.canary_latency_s]),
            np.concatenate([a.stable_code, b.stable_code]), np.concatenate([a.canary_code, b.canary_code]),
            np.concatenate([a.rows, b.rows]))


@dataclass
class ProbeStats:
    """What shadow probes measured in one run or window.

    pairs: bounded uniform sample of the pairs (see PairSample).
    pairs_seen: pairs completed (the population the sample was drawn from).
    sent: pairs sent; late: pairs that could not leave on time because
        the in-flight cap was reached (they left later).
    stable_latency / canary_latency: latency of OK requests from the
        pair's intended send time, seconds.
    stable_errors_by_code / canary_errors_by_code: failures by code.
    stable_versions / canary_versions: model version that answered -> count
        (key "unknown" when the server does not say, e.g. REST).
    unmeasured: pairs not kept because one of their requests measured
        Shadowgate, not the server (see the module's docstring).
    stable_own_by_code / canary_own_by_code: those requests, by why.
    duration_s: wall time covered, seconds.
    """

    pairs: PairSample = field(default_factory=PairSample)
    pairs_seen: int = 0
    sent: int = 0
    late: int = 0
    stable_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    canary_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    stable_errors_by_code: dict[str, int] = field(default_factory=dict)
    canary_errors_by_code: dict[str, int] = field(default_factory=dict)
    stable_versions: dict[str, int] = field(default_factory=dict)
    canary_versions: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    max_pairs: int = 5000
    unmeasured: int = 0
    stable_own_by_code: dict[str, int] = field(default_factory=dict)
    canary_own_by_code: dict[str, int] = field(default_factory=dict)

    def to_probe_pairs(self):
        """The `analyses.window.ProbePairs` of this sample."""
        from analyses.window import ProbePairs

        p = self.pairs
        return ProbePairs(labels=p.labels, stable_pred=p.stable_pred, canary_pred=p.canary_pred,
                          stable_scores=p.stable_scores, canary_scores=p.canary_scores, inputs=p.inputs,
                          rows=p.rows if p.rows.size == len(p) else None)

    def merge(self, other: "ProbeStats", *, seed: int | None = None) -> "ProbeStats":
        """Consecutive windows together (the pair sample stays uniform and bounded)."""
        size = max(self.max_pairs, other.max_pairs)
        both = PairSample.concat(self.pairs, other.pairs)
        na, nb = len(self.pairs), len(other.pairs)
        if na + nb > size:
            rng = np.random.default_rng(seed)
            sa, sb = max(self.pairs_seen, na), max(other.pairs_seen, nb)
            k_a = int(rng.hypergeometric(sa, sb, size)) if sb > 0 else size
            k_a = min(max(k_a, size - nb), na)
            k_b = min(size - k_a, nb)
            idx = np.concatenate([np.sort(rng.choice(na, k_a, replace=False)),
                                  na + np.sort(rng.choice(nb, k_b, replace=False))])
            both = both.select(idx)
        return ProbeStats(
            pairs=both, pairs_seen=self.pairs_seen + other.pairs_seen, sent=self.sent + other.sent,
            late=self.late + other.late,
            stable_latency=self.stable_latency.copy().merge(other.stable_latency),
            canary_latency=self.canary_latency.copy().merge(other.canary_latency),
            stable_errors_by_code=_add(self.stable_errors_by_code, other.stable_errors_by_code),
            canary_errors_by_code=_add(self.canary_errors_by_code, other.canary_errors_by_code),
            stable_versions=_add(self.stable_versions, other.stable_versions),
            canary_versions=_add(self.canary_versions, other.canary_versions),
            duration_s=self.duration_s + other.duration_s, max_pairs=size,
            unmeasured=self.unmeasured + other.unmeasured,
            stable_own_by_code=_add(self.stable_own_by_code, other.stable_own_by_code),
            canary_own_by_code=_add(self.canary_own_by_code, other.canary_own_by_code))

    def summary(self) -> dict:
        """Agreement and accuracy over the pair sample (ratios 0..1; None when undefined)."""
        p = self.pairs
        both = (p.stable_pred >= 0) & (p.canary_pred >= 0)
        n = int(both.sum())
        return {
            "pairs_both_ok": n,
            "agreement": float(np.mean(p.stable_pred[both] == p.canary_pred[both])) if n else None,
            "stable_accuracy": _acc(p.stable_pred, p.labels),
            "canary_accuracy": _acc(p.canary_pred, p.labels),
        }

    def to_dict(self) -> dict:
        """JSON-ready summary (seconds, ratios 0..1); no raw pairs."""
        return {
            "duration_s": self.duration_s,
            "sent": self.sent,
            "pairs_seen": self.pairs_seen,
            "pairs_kept": len(self.pairs),
            "late": self.late,
            "unmeasured": self.unmeasured,
            **self.summary(),
            "stable_errors_by_code": dict(sorted(self.stable_errors_by_code.items())),
            "canary_errors_by_code": dict(sorted(self.canary_errors_by_code.items())),
            "stable_own_by_code": dict(sorted(self.stable_own_by_code.items())),
            "canary_own_by_code": dict(sorted(self.canary_own_by_code.items())),
            "stable_versions": dict(self.stable_versions),
            "canary_versions": dict(self.canary_versions),
            "stable_latency": self.stable_latency.to_dict(),
            "canary_latency": self.canary_latency.to_dict(),
        }


def _acc(pred: np.ndarray, labels: np.ndarray) -> float | None:
    ok = pred >= 0
    return float(np.mean(pred[ok] == labels[ok])) if ok.any() else None


def _add(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + int(v)
    return out


class _Window:
    """Pairs and counters of the current window (reservoir of at most max_pairs rows)."""

    def __init__(self, max_pairs: int, rng: np.random.Generator, start: float) -> None:
        self.max_pairs = max_pairs
        self.rng = rng
        self.start = start
        self.rows: list[tuple] = []
        self.seen = 0
        self.sent = 0
        self.late = 0
        self.lat = (LatencyHistogram(), LatencyHistogram())
        self.errors: tuple[dict, dict] = ({}, {})
        self.own: tuple[dict, dict] = ({}, {})
        self.unmeasured = 0
        self.versions: tuple[dict, dict] = ({}, {})

    def add(self, row: tuple) -> None:
        # Algorithm R: every completed pair has the same chance to be kept.
        if len(self.rows) < self.max_pairs:
            self.rows.append(row)
        else:
            r = int(self.rng.integers(0, self.seen + 1))
            if r < self.max_pairs:
                self.rows[r] = row
        self.seen += 1

    def finish(self, end: float, golden: np.ndarray) -> ProbeStats:
        rows = self.rows
        n = len(rows)
        idx = np.fromiter((r[0] for r in rows), np.int64, n)
        labels = np.fromiter((r[1] for r in rows), np.int64, n)

        def col(k, dtype):
            return np.fromiter((r[k] for r in rows), dtype, n)

        # Both sides get the same width, so a version that always failed
        # still has its (all-NaN) score rows next to the other's.
        width = next((r[k].shape[0] for k in (4, 5) for r in rows if r[k] is not None), None)

        def scores(k):
            if width is None:
                return None
            out = np.full((n, width), np.nan)
            for i, r in enumerate(rows):
                if r[k] is not None and r[k].shape[0] == width:
                    out[i] = r[k]
            return out

        codes_s = np.array([r[8] for r in rows], dtype=object) if n else np.empty(0, dtype=object)
        codes_c = np.array([r[9] for r in rows], dtype=object) if n else np.empty(0, dtype=object)
        pairs = PairSample(
            labels=labels, stable_pred=col(2, np.int64), canary_pred=col(3, np.int64),
            stable_scores=scores(4), canary_scores=scores(5),
            inputs=np.asarray(golden[idx], dtype=np.float64).reshape(n, -1) if n else None,
            stable_latency_s=col(6, np.float64), canary_latency_s=col(7, np.float64),
            stable_code=codes_s, canary_code=codes_c, rows=idx)
        return ProbeStats(
            pairs=pairs, pairs_seen=self.seen, sent=self.sent, late=self.late,
            stable_latency=self.lat[0], canary_latency=self.lat[1],
            stable_errors_by_code=dict(self.errors[0]), canary_errors_by_code=dict(self.errors[1]),
            stable_versions=dict(self.versions[0]), canary_versions=dict(self.versions[1]),
            duration_s=max(end - self.start, 0.0), max_pairs=self.max_pairs, unmeasured=self.unmeasured,
            stable_own_by_code=dict(self.own[0]), canary_own_by_code=dict(self.own[1]))


class ShadowProber:
    """Sends golden inputs to stable and canary in pairs.

    stable, canary: async clients (loadtest.clients.AsyncGrpcClient or
        AsyncRestClient, or anything with `async predict(inputs, timeout_s=)`
        returning an object with `.outputs` and `.model_version`).
    inputs: (n, ...) golden inputs; labels: (n,) their true classes.
    input_name: the model's input; scores_key: the output holding class scores.
    rate: pairs per second in `run` (open loop); `set_rate` changes it while running.
    timeout_s: deadline of each request, seconds.
    max_pairs: most pairs kept per window (uniform reservoir sample).
    max_in_flight: most pairs in flight in `run`; a pair due while it is
        reached waits and is counted in `late`.
    seed: seeds the order through the golden set and the sampling.
    """

    def __init__(self, stable, canary, inputs: np.ndarray, labels: np.ndarray, *, input_name: str = "x",
                 scores_key: str = "probabilities", rate: float = 5.0, timeout_s: float = 5.0,
                 max_pairs: int = 5000, seed: int = 0, max_in_flight: int = 64) -> None:
        inputs = np.asarray(inputs)
        labels = np.asarray(labels).reshape(-1)
        if inputs.ndim < 1 or inputs.shape[0] == 0:
            raise ValueError("inputs: the golden set is empty")
        if labels.shape[0] != inputs.shape[0]:
            raise ValueError(f"labels: expected {inputs.shape[0]} labels (one per input), got {labels.shape[0]}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate: must be > 0 pairs/s, got {rate!r}")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s: must be > 0 seconds, got {timeout_s!r}")
        if int(max_pairs) < 1:
            raise ValueError("max_pairs: must be >= 1")
        self.stable, self.canary = stable, canary
        self.inputs, self.labels = inputs, labels.astype(np.int64)
        self.input_name, self.scores_key = input_name, scores_key
        self.rate, self.timeout_s = float(rate), float(timeout_s)
        self.max_pairs, self.max_in_flight = int(max_pairs), max(1, int(max_in_flight))
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(inputs.shape[0])
        self._pos = 0
        self._requests: dict[tuple[int, int], Any] = {}
        self._win = _Window(self.max_pairs, self._rng, time.monotonic())
        self._total: ProbeStats | None = None
        self._inflight = 0
        self._slack = late_slack_s(self.timeout_s)
        self._wake: asyncio.Future | None = None
        # cumulative per side (stable, canary), for rate control: requests done,
        # Shadowgate's own failures, the servers' timeouts
        self._cum = ({"requests": 0, "own": 0, "timeouts": 0}, {"requests": 0, "own": 0, "timeouts": 0})

    # ------------------------------------------------------------ requests
    def _request(self, which: int, client, i: int):
        # Prebuilt once per (version, input): clients accept their own prebuilt form.
        key = (which, i)
        req = self._requests.get(key)
        if req is None:
            inputs = {self.input_name: self.inputs[i:i + 1]}
            build = getattr(client, "build_request", None) or getattr(client, "build_body", None)
            req = build(inputs) if build is not None else inputs
            if len(self._requests) < 100_000:
                self._requests[key] = req
        return req

    def _next_index(self) -> int:
        if self._pos >= len(self._order):
            self._order = self._rng.permutation(self.inputs.shape[0])
            self._pos = 0
        i = int(self._order[self._pos])
        self._pos += 1
        return i

    def predicted_class(self, outputs: dict[str, np.ndarray]) -> tuple[int, np.ndarray | None]:
        """(class, score row or None) from one response's outputs; ValueError if neither is there."""
        scores = outputs.get(self.scores_key)
        if scores is None and len(outputs) == 1:
            (scores,) = outputs.values()  # REST row form with one output drops the name
            if np.asarray(scores).dtype.kind not in "fc":
                scores = None
        if scores is not None:
            row = np.asarray(scores, dtype=np.float64).reshape(-1) if np.ndim(scores) <= 1 else \
                np.asarray(scores, dtype=np.float64)[0].reshape(-1)
            if row.size:
                return int(np.argmax(row)), row
        classes = outputs.get("classes")
        if classes is not None and np.size(classes):
            return int(np.asarray(classes).reshape(-1)[0]), None
        raise ValueError(f"response has neither {self.scores_key!r} nor 'classes'")

    async def _call(self, client, req, t0: float):
        """(code, class, scores, latency from t0, version, own): own is True when the
        outcome measured Shadowgate, not the server (see the module's docstring)."""
        clock = time.monotonic
        sent = clock()
        try:
            async with asyncio.timeout(self.timeout_s + 1.0):
                res = await client.predict(req, timeout_s=self.timeout_s)
            done = clock()
            pred, scores = self.predicted_class(res.outputs)
            return OK, pred, scores, done - t0, getattr(res, "model_version", None), False
        except asyncio.CancelledError:
            raise
        except ValueError:
            return "INVALID_OUTPUT", -1, None, float("nan"), None, False
        except Exception as exc:  # counted by code
            code = error_label(exc)
            own = own_failure(code) or (
                code == "DEADLINE_EXCEEDED" and clock() - sent > self.timeout_s + self._slack)
            return code, -1, None, float("nan"), None, own

    async def _pair(self, i: int, t0: float, win: _Window | None = None) -> None:
        rs = self._request(0, self.stable, i)
        rc = self._request(1, self.canary, i)
        s, c = await asyncio.gather(self._call(self.stable, rs, t0), self._call(self.canary, rc, t0))
        w = win or self._win
        for k, r in enumerate((s, c)):
            cum = self._cum[k]
            cum["requests"] += 1
            if r[5]:
                cum["own"] += 1
            elif r[0] == "DEADLINE_EXCEEDED":
                cum["timeouts"] += 1
        if s[5] or c[5]:
            # Shadowgate's own failure on either side: the pair measured neither version.
            w.unmeasured += 1
            for k, r in enumerate((s, c)):
                if r[5]:
                    w.own[k][r[0]] = w.own[k].get(r[0], 0) + 1
            return
        for k, r in enumerate((s, c)):
            code, _, _, lat, version, _ = r
            if code == OK:
                w.lat[k].record(lat)
                key = "unknown" if version is None else str(version)
                w.versions[k][key] = w.versions[k].get(key, 0) + 1
            else:
                w.errors[k][code] = w.errors[k].get(code, 0) + 1
        w.add((i, int(self.labels[i]), s[1], c[1], s[2], c[2], s[3], c[3], s[0], c[0]))

    # ------------------------------------------------------------ public
    async def run(self, stop: asyncio.Event | None = None, *, duration_s: float | None = None) -> ProbeStats:
        """Send pairs at `rate` per second until `stop` is set (or `duration_s` passes).

        Open loop: pair k is due at start + k / rate; latencies count from
        that moment. Waits for pairs in flight, then returns the whole run
        (windows already taken included; the pair sample stays bounded).
        """
        if stop is None and duration_s is None:
            raise ValueError("run needs a stop event or a duration_s")
        loop = asyncio.get_running_loop()
        start = loop.time()
        self._win = _Window(self.max_pairs, self._rng, start)
        self._total = None
        end = start + duration_s if duration_s is not None else math.inf
        stop_task = loop.create_task(stop.wait()) if stop is not None else None
        slot_free = asyncio.Event()
        tasks: set[asyncio.Task] = set()
        k = 0
        # The timetable restarts from the last pair's due time when the rate changes.
        epoch, rate, last = start, self.rate, None

        def done_cb(task: asyncio.Task) -> None:
            tasks.discard(task)
            self._inflight -= 1
            slot_free.set()

        try:
            while True:
                if self.rate != rate:
                    # From the last pair at the new rate; a raise never sends a catch-up burst.
                    rate = self.rate
                    if last is not None:
                        epoch, k = max(last, loop.time() - 1.0 / rate), 1
                due = epoch + k / rate
                if due >= end or (stop is not None and stop.is_set()):
                    break
                delay = due - loop.time()
                if delay > 0:
                    self._wake = wake = loop.create_future()
                    try:
                        await asyncio.wait({stop_task, wake} if stop_task is not None else {wake}, timeout=delay)
                    finally:
                        self._wake = None
                        if not wake.done():
                            wake.cancel()
                    if stop is not None and stop.is_set():
                        break
                    if self.rate != rate:
                        continue  # a new rate: recompute the due time
                if self._inflight >= self.max_in_flight:
                    self._win.late += 1
                    while self._inflight >= self.max_in_flight:
                        slot_free.clear()
                        await slot_free.wait()
                self._inflight += 1
                self._win.sent += 1
                task = loop.create_task(self._pair(self._next_index(), due))
                tasks.add(task)
                task.add_done_callback(done_cb)
                k += 1
                last = due
        finally:
            if stop_task is not None:
                stop_task.cancel()
            finish = min(loop.time(), end)
            if tasks:
                _, pending = await asyncio.wait(set(tasks), timeout=self.timeout_s + 2.0)
                for t in pending:
                    t.cancel()
        self._take(finish)
        return self._total

    async def probe_all(self, *, concurrency: int = 16, give_up_after: int = 32) -> ProbeStats:
        """Every golden input once, to both versions (a pre-rollout check); keeps every pair.

        Closed loop with at most `concurrency` pairs in flight; latencies
        count from each pair's send. Does not touch the current window.
        When the first `give_up_after` pairs all failed on one version, the
        rest are not sent: a version that answers nothing has shown it, and
        waiting out a deadline per golden row would only delay the verdict.
        """
        loop = asyncio.get_running_loop()
        n = self.inputs.shape[0]
        win = _Window(max(self.max_pairs, n), self._rng, loop.time())
        sem = asyncio.Semaphore(max(1, int(concurrency)))

        def one_side_dead() -> bool:
            if win.seen < give_up_after:
                return False
            return any(sum(codes.values()) >= win.seen for codes in win.errors)

        async def one(i: int) -> None:
            async with sem:
                if one_side_dead():
                    return
                win.sent += 1
                await self._pair(i, time.monotonic(), win)

        await asyncio.gather(*(one(i) for i in range(n)))
        return win.finish(loop.time(), self.inputs)

    def set_rate(self, rate: float) -> None:
        """Pairs per second from now on (> 0); `run` picks it up at once."""
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate: must be > 0 pairs/s, got {rate!r}")
        self.rate = float(rate)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def progress(self) -> dict:
        """Cumulative counts per side, {"stable": {...}, "canary": {...}, "in_flight": pairs}:
        requests done, own (Shadowgate's own failures), timeouts (the server's DEADLINE_EXCEEDED)."""
        return {"stable": dict(self._cum[0]), "canary": dict(self._cum[1]), "in_flight": self._inflight}

    def pending(self) -> int:
        """Probe pairs completed in the open window (not yet taken)."""
        return int(self._win.seen)

    def take_window(self) -> ProbeStats:
        """Stats since the last take (atomic swap), for a session's windows."""
        return self._take(time.monotonic())

    def _take(self, end: float) -> ProbeStats:
        win, self._win = self._win, _Window(self.max_pairs, self._rng, end)
        stats = win.finish(end, self.inputs)
        self._total = stats if self._total is None else self._total.merge(stats)
        return stats
