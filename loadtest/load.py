"""Open-loop load with honest latency.

Requests follow a fixed timetable (the schedule), whatever the server does.
Each request's latency is measured from its *intended* send time, so a
server that stalls for a second shows a second of latency on every request
that should have left during the stall: the correction for coordinated
omission (Gil Tene; wrk2 does the same). The uncorrected service time (from
the moment the request actually left) is kept beside it, so the two can be
compared: a gap between them is queueing the client saw, not the server's
own work.

A concurrency cap bounds requests in flight. A slot that comes due while
the cap is reached waits in a backlog (stored as runs of evenly spaced
times, so memory stays bounded whatever the stall) and leaves as soon as a
request finishes; it is counted in `late`, and its latency still counts
from its intended time. Slots still waiting when the run ends are counted
as intended but not sent. Nothing is dropped silently.

Units: seconds and requests per second.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import numpy as np

from loadtest.errors import ServingError, late_slack_s, own_failure
from loadtest.hist import LatencyHistogram
from loadtest.schedule import Schedule, Stage, parse_duration, parse_rate  # noqa: F401 (re-exported)

__all__ = [
    "Stage", "Schedule", "LoadStats", "LoadGenerator", "to_version_traffic", "error_label",
    "parse_duration", "parse_rate",
]

_INF = math.inf
_FLUSH_AT = 4096


def error_label(exc: BaseException) -> str:
    """The key errors are counted by: HTTP code for REST, gRPC status name otherwise."""
    if isinstance(exc, ServingError):
        return exc.label
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "DEADLINE_EXCEEDED"
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.aio.AioRpcError and grpc.RpcError
        try:
            return code().name
        except Exception:
            pass
    status = getattr(exc, "status", None)
    if isinstance(status, int):  # aiohttp.ClientResponseError
        return str(status)
    if isinstance(exc, (ConnectionError, OSError)):
        return "UNAVAILABLE"
    return type(exc).__name__


# ---------------------------------------------------------------- sampling
class _Reservoir:
    """A uniform random sample of at most `size` values (Algorithm R, in batches)."""

    __slots__ = ("size", "seen", "values", "rng")

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = int(size)
        self.seen = 0
        self.values = np.empty(0, dtype=np.float64)
        self.rng = rng

    def add_many(self, arr: np.ndarray) -> None:
        k = arr.size
        if k == 0 or self.size <= 0:
            self.seen += k
            return
        room = self.size - self.values.size
        if room > 0:
            take = min(room, k)
            self.values = np.concatenate([self.values, arr[:take]])
            arr = arr[take:]
            self.seen += take
        if arr.size:
            # Item with global index i (0-based) replaces slot r ~ U{0..i} when r < size.
            idx = self.seen + np.arange(arr.size)
            r = (self.rng.random(arr.size) * (idx + 1)).astype(np.int64)
            keep = r < self.size
            self.values[r[keep]] = arr[keep]
            self.seen += arr.size


def merge_samples(a: np.ndarray, a_seen: int, b: np.ndarray, b_seen: int, size: int,
                  rng: np.random.Generator) -> np.ndarray:
    """A uniform sample of at most `size` from two uniform samples of populations a_seen and b_seen."""
    if a.size + b.size <= size:
        return np.concatenate([a, b])
    total = a_seen + b_seen
    if total <= 0:
        return np.empty(0)
    # How many of `size` draws from the union fall in a: hypergeometric.
    n_a = int(rng.hypergeometric(a_seen, max(b_seen, 0), size)) if b_seen > 0 else size
    n_a = min(max(n_a, size - b.size), a.size)
    n_b = min(size - n_a, b.size)
    pick_a = rng.choice(a.size, n_a, replace=False) if n_a < a.size else np.arange(a.size)
    pick_b = rng.choice(b.size, n_b, replace=False) if n_b < b.size else np.arange(b.size)
    return np.concatenate([a[pick_a], b[pick_b]])


# ---------------------------------------------------------------- results
@dataclass
class LoadStats:
    """What one run or window of load measured.

    intended: timetable slots that came due (requests the schedule asked for).
    sent: requests that actually left.
    ok: requests that succeeded.
    late: slots that could not leave on time because the concurrency cap was
        reached; they left later (latency still counted from the intended
        time) or, at the end of the run, not at all (`unsent`).
    errors_by_code: failed requests by gRPC status name or HTTP code; a
        request the client gave up on after `timeout_s` is DEADLINE_EXCEEDED.
        Only failures of the server called: Shadowgate's own are in own_by_code.
    own_by_code: requests whose outcome measured Shadowgate, not the server,
        by why: "CANCELLED" (cancelled, or reset by a server shedding load
        without answering), "DEADLINE_EXCEEDED" (the failure was noticed well
        after the deadline: the event loop was behind), "LATE_SEND" (the
        event loop, not the concurrency cap, held the request past its whole
        deadline before it left). They are in neither ok nor errors, and
        their latencies are not kept.
    corrected: latency of OK requests from the intended send time, seconds.
    service: latency of OK requests from the actual send, seconds
        (uncorrected; what a closed-loop tool reports).
    send_lag: actual send minus intended time of every sent request,
        seconds: the client's own lateness (cap waits and event loop lag).
    latency_sample_s: bounded uniform random sample (reservoir) of corrected
        latencies of OK requests, seconds.
    duration_s: wall time covered by the timetable of this run or window.
    client_cpu_s: CPU seconds the load process used during the run
        (process-wide; summed over workers), 0.0 when not measured.
    """

    intended: int = 0
    sent: int = 0
    ok: int = 0
    late: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    own_by_code: dict[str, int] = field(default_factory=dict)
    corrected: LatencyHistogram = field(default_factory=LatencyHistogram)
    service: LatencyHistogram = field(default_factory=LatencyHistogram)
    send_lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    latency_sample_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    duration_s: float = 0.0
    sample_size: int = 20000
    client_cpu_s: float = 0.0

    @property
    def errors(self) -> int:
        """Failed requests (all codes)."""
        return sum(self.errors_by_code.values())

    @property
    def own(self) -> int:
        """Requests that measured Shadowgate, not the server (see own_by_code)."""
        return sum(self.own_by_code.values())

    @property
    def requests(self) -> int:
        """Requests with a known outcome of the server: ok + errors (own failures excluded)."""
        return self.ok + self.errors

    @property
    def unsent(self) -> int:
        """Slots that came due but never left (the run ended while they waited for the cap)."""
        return max(self.intended - self.sent, 0)

    @property
    def achieved_rps(self) -> float:
        """Requests that left per second of timetable."""
        return self.sent / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def target_rps(self) -> float:
        """Requests the timetable asked for per second."""
        return self.intended / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_ratio(self) -> float:
        """errors / requests (0..1); 0.0 when nothing finished."""
        n = self.requests
        return self.errors / n if n else 0.0

    def merge(self, other: "LoadStats", *, concurrent: bool = False, seed: int | None = None) -> "LoadStats":
        """A new LoadStats holding both.

        concurrent=False: consecutive windows (durations add).
        concurrent=True: parallel workers over the same time (duration is the longer one).
        """
        codes = dict(self.errors_by_code)
        for k, v in other.errors_by_code.items():
            codes[k] = codes.get(k, 0) + int(v)
        own = dict(self.own_by_code)
        for k, v in other.own_by_code.items():
            own[k] = own.get(k, 0) + int(v)
        size = max(self.sample_size, other.sample_size)
        rng = np.random.default_rng(seed)
        sample = merge_samples(self.latency_sample_s, self.ok, other.latency_sample_s, other.ok, size, rng)
        return LoadStats(
            intended=self.intended + other.intended,
            sent=self.sent + other.sent,
            ok=self.ok + other.ok,
            late=self.late + other.late,
            errors_by_code=codes,
            own_by_code=own,
            corrected=self.corrected.copy().merge(other.corrected),
            service=self.service.copy().merge(other.service),
            send_lag=self.send_lag.copy().merge(other.send_lag),
            latency_sample_s=sample,
            duration_s=(max(self.duration_s, other.duration_s) if concurrent
                        else self.duration_s + other.duration_s),
            sample_size=size,
            client_cpu_s=self.client_cpu_s + other.client_cpu_s,
        )

    def to_dict(self) -> dict:
        """JSON-ready summary (seconds, requests/s, ratios 0..1); no raw sample."""
        return {
            "duration_s": self.duration_s,
            "intended": self.intended,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "late": self.late,
            "unsent": self.unsent,
            "target_rps": self.target_rps,
            "achieved_rps": self.achieved_rps,
            "error_ratio": self.error_ratio,
            "errors_by_code": dict(sorted(self.errors_by_code.items())),
            "own": self.own,
            "own_by_code": dict(sorted(self.own_by_code.items())),
            "latency_corrected": self.corrected.to_dict(),
            "latency_service": self.service.to_dict(),
            "send_lag": self.send_lag.to_dict(),
            "client_cpu_s": self.client_cpu_s,
            "client_cpu_s_per_1000": self.cpu_per_1000(),
        }

    def cpu_per_1000(self) -> float | None:
        """Client CPU seconds per 1000 requests sent (None when not measured)."""
        if not self.client_cpu_s or not self.sent:
            return None
        return self.client_cpu_s / self.sent * 1000


def to_version_traffic(stats: LoadStats):
    """The load part of an `analyses.window.VersionTraffic`.

    requests = ok + errors (late slots are reported separately, in LoadStats);
    latencies_s is the bounded sample of corrected latencies of OK requests.
    Shadowgate's own failures (LoadStats.own_by_code) are no error of the
    version: they are counted in `late`, the sends Shadowgate could not
    measure on time (VersionTraffic has no field of their own yet).
    """
    from analyses.window import VersionTraffic

    return VersionTraffic(
        latencies_s=np.asarray(stats.latency_sample_s, dtype=np.float64),
        requests=stats.requests,
        errors=stats.errors,
        errors_by_code=dict(stats.errors_by_code),
        late=int(stats.late) + int(stats.own),
        intended=int(stats.intended),
    )


class _Acc:
    """Counters of the current window; swapped whole by take_window."""

    __slots__ = ("intended", "sent", "ok", "late", "errors", "own", "corrected", "service", "lag",
                 "buf", "reservoir", "start")

    def __init__(self, sample_size: int, rng: np.random.Generator, start: float) -> None:
        self.intended = self.sent = self.ok = self.late = 0
        self.errors: dict[str, int] = {}
        self.own: dict[str, int] = {}
        self.corrected = LatencyHistogram()
        self.service = LatencyHistogram()
        self.lag = LatencyHistogram()
        self.buf: list[float] = []
        self.reservoir = _Reservoir(sample_size, rng)
        self.start = start

    def flush(self) -> None:
        if self.buf:
            arr = np.asarray(self.buf, dtype=np.float64)
            self.buf = []
            self.corrected.record_many(arr)
            self.reservoir.add_many(arr)

    def finish(self, end: float) -> LoadStats:
        self.flush()
        return LoadStats(
            intended=self.intended, sent=self.sent, ok=self.ok, late=self.late,
            errors_by_code=dict(self.errors), own_by_code=dict(self.own),
            corrected=self.corrected, service=self.service,
            send_lag=self.lag, latency_sample_s=self.reservoir.values.copy(),
            duration_s=max(end - self.start, 0.0), sample_size=self.reservoir.size,
        )


class _Backlog:
    """Due slots waiting for the cap, as runs (first time, spacing, count): bounded memory."""

    __slots__ = ("runs", "n")

    def __init__(self) -> None:
        self.runs: deque[list] = deque()
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def push(self, t: float) -> None:
        self.n += 1
        if self.runs:
            run = self.runs[-1]
            first, step, count = run
            last = first + step * (count - 1) if count > 1 else first
            gap = t - last
            if count == 1 and gap >= 0:
                run[1] = gap
                run[2] = 2
                return
            if count > 1 and abs(gap - step) <= 1e-9 * max(1.0, abs(t)):
                run[2] = count + 1
                return
        self.runs.append([t, 0.0, 1])

    def pop(self) -> float:
        run = self.runs[0]
        t = run[0]
        if run[2] == 1:
            self.runs.popleft()
        else:
            run[0] = t + run[1]
            run[2] -= 1
        self.n -= 1
        return t

    def clear(self) -> None:
        self.runs.clear()
        self.n = 0


# ---------------------------------------------------------------- generator
class LoadGenerator:
    """Open-loop, constant-rate (or stepped) load with corrected latency.

    send: a zero-argument callable returning an awaitable that completes when
        the response is in; it raises (ideally `ServingError`) on failure.
        Prebuild the request so a call costs little CPU (see loadtest.wire).
    schedule: the timetable; None for a constant `rate` (requests/s) that runs
        until `stop` is set and can be changed with `set_rate`.
    concurrency: most requests in flight at once (the cap).
    warmup_s: seconds of load at the first stage's rate before the schedule,
        excluded from every figure.
    timeout_s: a request still running after this many seconds is abandoned
        and counted as DEADLINE_EXCEEDED. Senders that set `has_deadline =
        True` (loadtest.wire's) enforce their own deadline instead, and this
        backstop timer is skipped. A failure that is Shadowgate's own, not the
        server's (see LoadStats.own_by_code), is counted apart.
    sample_size: size of the latency reservoir kept per window.
    phase: shifts every slot by this fraction (0..1) of one interval;
        worker k of N uses k/N so the workers' timetables interleave evenly.
    seed: seed of the reservoir sampler (None: fresh entropy).
    """

    def __init__(self, send: Callable[[], Awaitable[object]], schedule: Schedule | None = None, *,
                 rate: float | None = None, concurrency: int = 256, warmup_s: float = 0.0,
                 timeout_s: float = 5.0, sample_size: int = 20000, phase: float = 0.0,
                 seed: int | None = None) -> None:
        if schedule is None and rate is None:
            raise ValueError("give a schedule or a constant rate")
        if schedule is not None and rate is not None:
            raise ValueError("give either a schedule or a rate, not both")
        if rate is not None and not (math.isfinite(rate) and rate >= 0):
            raise ValueError(f"rate must be >= 0 requests/s, got {rate!r}")
        if int(concurrency) < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        if not (warmup_s >= 0 and math.isfinite(warmup_s)):
            raise ValueError(f"warmup_s must be >= 0 seconds, got {warmup_s!r}")
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        if not 0.0 <= phase < 1.0:
            raise ValueError("phase must be within [0, 1)")
        self._send = send
        # Senders that put their own deadline on every call (loadtest.wire's,
        # `has_deadline = True`) skip the backstop timer: one less timer per request.
        self._own_deadline = bool(getattr(send, "has_deadline", False))
        self.schedule = schedule
        self._rate = None if rate is None else float(rate)
        self._cap = int(concurrency)
        self._warmup = float(warmup_s)
        self._timeout = float(timeout_s)
        self._sample_size = int(sample_size)
        self._phase = float(phase)
        self._rng = np.random.default_rng(seed)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._stopping = False
        self._stages: list[list[float]] = []  # [start, end, rate], absolute loop times
        self._si = 0
        self._j = 0
        self._next_t = _INF
        self._measure_start = 0.0
        self._sched_end = _INF
        self._inflight = 0
        self.launched = 0  # every request sent, warm-up included
        self._backlog = _Backlog()
        self._tasks: set[asyncio.Task] = set()
        self._wake: asyncio.Future | None = None
        self._acc = _Acc(self._sample_size, self._rng, 0.0)
        self._total: LoadStats | None = None
        self._slack = late_slack_s(self._timeout)
        # cumulative counters since the measured start, for progress displays and
        # rate control (timeouts: the server's DEADLINE_EXCEEDED; own: see own_by_code)
        self._cum = {"intended": 0, "sent": 0, "ok": 0, "errors": 0, "late": 0, "own": 0, "timeouts": 0}

    # ------------------------------------------------------------ public
    @property
    def in_flight(self) -> int:
        """Requests sent and not yet finished."""
        return self._inflight

    @property
    def backlog(self) -> int:
        """Due slots waiting for the concurrency cap."""
        return len(self._backlog)

    @property
    def rate(self) -> float | None:
        """The constant rate in force (requests/s); None with a schedule."""
        return self._rate

    def progress(self) -> dict:
        """Cumulative counts since the measured start (excludes warm-up): for progress bars.

        intended, sent, ok, errors, late, own (Shadowgate's own failures),
        timeouts (the server's DEADLINE_EXCEEDED), in_flight, backlog.
        """
        out = dict(self._cum)
        out["in_flight"] = self._inflight
        out["backlog"] = len(self._backlog)
        return out

    def set_rate(self, rate: float) -> None:
        """Change the constant rate (requests/s, 0 pauses) from now on; only without a schedule."""
        if self.schedule is not None:
            raise ValueError("set_rate works only for a constant-rate generator (schedule=None)")
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError(f"rate must be >= 0 requests/s, got {rate!r}")
        self._rate = float(rate)
        if not self._running or self._si >= len(self._stages):
            return
        now = self._loop.time()
        cur = self._stages[self._si]
        old_rate, old_next = cur[2], self._next_t
        for k in range(self._si, len(self._stages)):
            self._stages[k][2] = self._rate
        if self._rate > 0 and old_rate > 0 and old_next != _INF:
            # The timetable goes on: the next slot one new interval after the last one
            # (never before now), so frequent small changes neither skip nor burst.
            nxt = max(now, old_next - 1.0 / old_rate + 1.0 / self._rate)
            cur[0] = max(nxt - self._phase / self._rate, cur[0])
        else:
            # The new rate starts now: the first new slot is one phase after now.
            cur[0] = max(now, cur[0])
        self._j = 0
        self._set_next()
        self._wakeup()

    def take_window(self) -> LoadStats:
        """Stats since the last take (or the measured start), swapping in fresh counters.

        Requests are counted in the window in which they finish; slots in the
        window in which they came due. Call from the event loop's thread.
        """
        if self._loop is None:
            return LoadStats(sample_size=self._sample_size)
        now = self._loop.time() if self._loop is not None else time.monotonic()
        if self._running:
            self._advance(now)
        return self._take(now)

    async def run(self, stop: asyncio.Event | None = None, *, start_at: float | None = None) -> LoadStats:
        """Run the schedule (or the constant rate until `stop` is set); returns the whole run's stats.

        start_at: a `time.monotonic()` instant to start at (workers use one
        shared instant); default now. Waits for requests in flight (up to
        `timeout_s`) before returning. The result covers the run after
        warm-up, including windows already taken.
        """
        if self._running:
            raise RuntimeError("this LoadGenerator is already running")
        if self.schedule is None and stop is None:
            raise ValueError("a constant-rate run needs a stop event")
        loop = asyncio.get_running_loop()
        self._loop = loop
        if start_at is not None:
            # loop.time() is time.monotonic(): shared by every process on the host.
            delay = start_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        t0 = max(start_at or 0.0, loop.time())
        self._build_stages(t0)
        self._measure_start = t0 + self._warmup
        self._acc = _Acc(self._sample_size, self._rng, self._measure_start)
        self._total = None
        self._cum = dict.fromkeys(self._cum, 0)
        self._si, self._j = 0, 0
        self._set_next()
        self._running, self._stopping = True, False
        watcher = None
        if stop is not None:
            watcher = loop.create_task(self._watch(stop))
        end = t0
        try:
            while True:
                now = loop.time()
                self._advance(now)
                if self._stopping:
                    end = min(now, self._sched_end)
                    break
                if self._si >= len(self._stages):
                    # The last slot has left; the timetable still runs to its end.
                    if now < self._sched_end:
                        await self._sleep_until(self._sched_end)
                    end = min(self._loop.time(), self._sched_end)
                    break
                await self._sleep_until(self._next_t)
        finally:
            self._running = False
            self._stopping = True
            if watcher is not None:
                watcher.cancel()
            self._backlog.clear()
            await self._drain()
        final = self._take(max(end, self._measure_start))
        return self._total if self._total is not None else final

    # ------------------------------------------------------------ internals
    def _build_stages(self, t0: float) -> None:
        stages: list[list[float]] = []
        if self.schedule is None:
            if self._warmup > 0:
                stages.append([t0, t0 + self._warmup, self._rate])
            stages.append([t0 + self._warmup, _INF, self._rate])
            self._sched_end = _INF
        else:
            first = self.schedule.stages[0].rate
            t = t0
            if self._warmup > 0:
                stages.append([t, t + self._warmup, first])
                t += self._warmup
            for s in self.schedule.stages:
                stages.append([t, t + s.duration_s, s.rate])
                t += s.duration_s
            self._sched_end = t
        self._stages = stages

    def _set_next(self) -> None:
        stages = self._stages
        while self._si < len(stages):
            start, end, rate = stages[self._si]
            if rate > 0:
                t = start + (self._j + self._phase) / rate
                if t < end:
                    self._next_t = t
                    return
            elif end == _INF:
                self._next_t = _INF  # paused until set_rate
                return
            self._si += 1
            self._j = 0
        self._next_t = _INF

    def _advance(self, now: float) -> None:
        """Bring every slot due by `now` onto the wire (or into the backlog)."""
        measure_start = self._measure_start
        while self._next_t <= now and not self._stopping:
            t = self._next_t
            self._j += 1
            self._set_next()
            measured = t >= measure_start
            if measured:
                self._acc.intended += 1
                self._cum["intended"] += 1
            if self._inflight < self._cap and not self._backlog.n:
                self._launch(t, False)
            else:
                self._backlog.push(t)
                if measured:
                    self._acc.late += 1
                    self._cum["late"] += 1

    def _launch(self, t: float, queued: bool) -> None:
        """Send slot `t` now; `queued`: it waited for the concurrency cap (the server was slow)."""
        self._inflight += 1
        self.launched += 1
        if t >= self._measure_start:
            self._acc.sent += 1
            self._cum["sent"] += 1
        task = self._loop.create_task(self._one(t, queued))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, intended: float, queued: bool) -> None:
        clock = time.monotonic
        sent_at = clock()
        code = None
        try:
            if self._own_deadline:
                await self._send()
            else:
                async with asyncio.timeout(self._timeout):
                    await self._send()
        except asyncio.CancelledError:
            self._inflight -= 1
            raise
        except Exception as exc:  # every failure is counted, by code
            code = error_label(exc)
        done = clock()
        self._inflight -= 1
        if self._backlog.n and not self._stopping:
            self._launch(self._backlog.pop(), True)
        if intended < self._measure_start:
            return
        acc = self._acc
        acc.lag.record(sent_at - intended)
        own = self._own(code, intended, sent_at, done, queued)
        if own is not None:
            acc.own[own] = acc.own.get(own, 0) + 1
            self._cum["own"] += 1
            return
        if code is None:
            acc.ok += 1
            self._cum["ok"] += 1
            acc.service.record(done - sent_at)
            buf = acc.buf
            buf.append(done - intended)
            if len(buf) >= _FLUSH_AT:
                acc.flush()
        else:
            acc.errors[code] = acc.errors.get(code, 0) + 1
            self._cum["errors"] += 1
            if code == "DEADLINE_EXCEEDED":
                self._cum["timeouts"] += 1

    def _own(self, code: str | None, intended: float, sent_at: float, done: float, queued: bool) -> str | None:
        """Why this request measured Shadowgate rather than the server (None: it measured the server).

        - cancelled, or reset unanswered by a server shedding load (loadtest.errors.OWN_CODES);
        - the event loop (not the concurrency cap, which a slow server fills) held it
          past its whole deadline before it left: whatever came back, its latency
          from the intended time is the loop's;
        - a DEADLINE_EXCEEDED noticed well after the deadline: the loop was behind,
          the answer may have come in time.
        A DEADLINE_EXCEEDED of a request that left on time and was noticed on time
        is the server's latency: an error of its version, as before.
        """
        if code is not None and own_failure(code):
            return "CANCELLED"
        if not queued and sent_at - intended > self._timeout:
            return "LATE_SEND"
        if code == "DEADLINE_EXCEEDED" and done - sent_at > self._timeout + self._slack:
            return "DEADLINE_EXCEEDED"
        return None

    async def _sleep_until(self, when: float) -> None:
        fut = self._loop.create_future()
        self._wake = fut
        handle = self._loop.call_at(when, _resolve, fut) if when != _INF else None
        try:
            await fut
        finally:
            self._wake = None
            if handle is not None:
                handle.cancel()

    def _wakeup(self) -> None:
        fut = self._wake
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping = True
        self._wakeup()

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=self._timeout + 1.0)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    def _take(self, end: float) -> LoadStats:
        acc = self._acc
        self._acc = _Acc(self._sample_size, self._rng, max(end, self._measure_start))
        stats = acc.finish(end)
        self._total = stats if self._total is None else self._total.merge(stats)
        return stats


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
