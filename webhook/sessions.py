"""Analysis sessions: one per run, measuring in the background, one run state read by every hook.

A session starts at a run's pre-rollout (or Argo's first call) and works on
its own: the golden-set check first (every golden row once on both versions,
before any load, so its burst never lands in the latency evidence), then
open-loop load on both versions and shadow probes, and a window closed every
`interval_s` seconds. Each window updates the run's gate state
(analyses.gate: sufficient statistics, constant cost per window), which is
stored with the window, so any process with the store can take the run over.

Hooks never measure and never wait: they read the session's current
decision (a Verdict replaced whole after each window, read without a lock),
so Flagger's rollout, rollback, confirm-* hooks and Argo's answers all come
from the same state and cannot contradict each other. A failed run stays
failed (the gate never leaves "fail").

Threads: Flask handler threads call the sync methods; every coroutine runs
on one background asyncio loop thread owned by the SessionManager; gate
updates and SQLite writes go to a small thread pool so they never stall the
load generator's timetable.

Why one worker process: a live session's load generator and prober live in
this process; several workers would each start their own. The run state is
in the store after every window, so a restarted process resumes the run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import logging
import threading
import time
from typing import Any, Callable, Protocol

from analyses.window import Window

from .admission import Admission, Entry, Ticket, planned_connections
from .codec import decode_window, encode_window
from .config import Analysis, Settings
from .metrics import Metrics
from .store import FINAL_STATUSES, STOPPED_STATUSES, LeaseLost, RunRecord, Store, StoredWindow

log = logging.getLogger(__name__)


class Measurement(Protocol):
    """What a session needs from the load and probe machinery (see webhook.measure)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def set_rate(self, rate: float) -> None: ...
    def pending_probes(self) -> int: ...
    def take_window(self) -> Window: ...
    async def golden_check(self) -> Window: ...
    async def check_canary(self) -> tuple[bool, str, str | None]: ...


MeasurementFactory = Callable[[Analysis], Measurement]


def _default_factory(analysis: Analysis) -> Measurement:
    from .measure import LiveMeasurement

    return LiveMeasurement(analysis)


def run_id_for(caller: str, analysis: str, namespace: str, name: str, revision: str, attempt: int) -> str:
    """An opaque, URL-safe id for a run (stable across restarts)."""
    key = "\x1f".join((caller, analysis, namespace, name, revision, str(attempt)))
    return "run-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verdict_from_dict(d: dict[str, Any]):
    from analyses.results import Verdict

    return Verdict.from_dict(d)


def waiting_verdict(reason: str):
    """The decision of a run with no evidence yet: continue (Argo: Inconclusive)."""
    from analyses.results import Verdict

    return Verdict(outcome="continue", passed=False, phase="Inconclusive", reason=_one_line(reason))


class AtCapacity(Exception):
    """A session was asked to start for a run that holds no admission slot (see webhook.admission).

    The hooks ask admission first and answer a queued run themselves (412 at Flagger's confirm-* gates,
    200 "not measured yet" on pre-rollout / rollout, 200 Inconclusive for Argo), so this never reaches
    a caller; `ticket` is the run's place in the queue.
    """

    def __init__(self, message: str, ticket: Any = None) -> None:
        super().__init__(message)
        self.ticket = ticket


# The state of a run's canary check (Flagger pre-rollout): running, or finished with its answer.
CHECK_RUNNING = "running"


def planned_rates(analysis: Analysis, rate: float | None = None) -> dict[str, float]:
    """Requests/s a run of `analysis` sends each model server address (load and probes)."""
    cfg = analysis.config
    load = rate if rate is not None else (cfg.load.schedule[0].rate if cfg.load.schedule else cfg.load.rate)
    out: dict[str, float] = {}
    for version in ("stable", "canary"):
        address = getattr(cfg, version).address
        loaded = cfg.load.targets == "both" or version == "canary"
        out[address] = out.get(address, 0.0) + (load if loaded else 0.0) + cfg.probe.rate
    return out


class Session:
    """One run's measurement and its gate state."""

    def __init__(self, manager: "SessionManager", run: RunRecord, analysis: Analysis,
                 measurement: Measurement) -> None:
        self.manager = manager
        self.run = run
        self.analysis = analysis
        self.gate = analysis.gate
        self.measurement = measurement
        self._update_lock = threading.Lock()  # one gate update at a time
        self.state = self.gate.new_state()
        self.verdict = waiting_verdict("no window closed yet: the golden-set check and the first window "
                                       "are being measured")
        self.last_report: Any = None
        self.seq = 0
        self.golden_done = concurrent.futures.Future()
        self.last_call = time.monotonic()
        self.window_started = time.time()
        self.stopped = False
        self.idle = False
        self.lease_lost = False  # another replica may measure it now: its lease is not ours to give back
        self.rate_override: float | None = None
        self._task: asyncio.Future | None = None
        self._stop = asyncio.Event()
        self._close_lock = asyncio.Lock()
        self._next_close = 0.0

    # ------------------------------------------------------------ restore

    def restore(self, run: RunRecord, stored: list[StoredWindow]) -> None:
        """Take the run over from the store: its gate state, or a replay of its stored windows."""
        if run.state:
            from analyses.gate import RunState

            self.state = RunState.from_dict(run.state)
        else:  # stored before run states were kept: recompute from the windows
            for sw in stored:
                if sw.data is not None:
                    w = decode_window(sw.data)
                    w.reference_inputs = self.analysis.reference_inputs
                    self.gate.update(self.state, w)
        self.seq = max([sw.seq for sw in stored] + [self.state.windows])
        if self.state.windows:
            self.verdict = self.gate.verdict(self.state)
        if any(sw.kind == "golden" for sw in stored):
            self.golden_done.set_result(self.verdict)

    # ------------------------------------------------------------ hook side (any thread)

    def touch(self) -> None:
        """A controller called for this run: it is still alive."""
        self.last_call = time.monotonic()

    def decision(self):
        """The run's current decision (a Verdict; replaced whole after each window)."""
        return self.verdict

    # ------------------------------------------------------------ loop side

    async def _main(self) -> None:
        """The golden check (unless done), then load and probes; a window every interval."""
        loop = asyncio.get_running_loop()
        interval = self.analysis.interval_s
        if not self.golden_done.done():
            # Interrupted when the session is asked to stop (its lease lost, the run ended): its probes are
            # load too, and another replica may be starting the same check.
            golden = asyncio.ensure_future(self.golden())
            stopping = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait({golden, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not golden.done():
                golden.cancel()
                with contextlib.suppress(BaseException):
                    await golden
            elif not golden.cancelled() and golden.exception() is not None:
                exc = golden.exception()
                log.error("run %s: golden-set check failed", self.run.id, exc_info=exc)
                self.manager.event(self.run.id, "error", f"golden-set check failed: {exc!r}")
                if not self.golden_done.done():
                    self.golden_done.set_exception(exc)
        if self._stop.is_set():
            return
        try:
            await self.measurement.start()
            if self.rate_override is not None:
                self.measurement.set_rate(self.rate_override)
        except Exception as exc:
            log.exception("run %s: measurement did not start", self.run.id)
            self.manager.event(self.run.id, "error", f"load and probes did not start: {exc}")
        self.window_started = time.time()
        self._next_close = loop.time() + interval
        idle_after = self.manager.settings.server.idle_timeout()
        try:
            while True:
                delay = max(0.0, self._next_close - loop.time())
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    break
                except asyncio.TimeoutError:
                    pass
                if loop.time() >= self._next_close:
                    try:
                        await self.close_window("interval")
                    except Exception as exc:
                        # One bad window must not end the run's measurement.
                        log.exception("run %s: closing a window failed", self.run.id)
                        self.manager.event(self.run.id, "error", f"closing a window failed: {exc!r}")
                if time.monotonic() - self.last_call > idle_after:
                    self.idle = True
                    break
        finally:
            try:
                await asyncio.wait_for(self.measurement.stop(), 10.0)
            except Exception:
                log.exception("run %s: stopping measurement", self.run.id)

    async def close_window(self, kind: str) -> int | None:
        """Close the open window: update the gate, store it, publish it. Returns its seq (None if empty)."""
        loop = asyncio.get_running_loop()
        async with self._close_lock:
            started, ended = self.window_started, time.time()
            window = self.measurement.take_window()
            if self.manager.lag_high_at >= started:
                window.unmeasured = (f"Shadowgate's loop ran over {1000 * self.manager.settings.server.max_loop_lag_s:.0f}"
                                     " ms late during the window")
            self.window_started = ended
            self._next_close = loop.time() + self.analysis.interval_s
            if window.stable.requests == 0 and window.canary.requests == 0 and len(window.probes) == 0:
                return None
            await asyncio.gather(self._fetch_ctr(window, started, ended),
                                 self._fetch_prometheus(window, started, ended))
            return await self._add_window(window, kind, started, ended)

    async def _fetch_ctr(self, window: Window, started: float, ended: float) -> None:
        ctr = self.manager.ctr_source(self.analysis)
        if ctr is not None:
            loop = asyncio.get_running_loop()
            try:  # a silent Prometheus costs this window its CTR, never the hooks their answers
                window.ctr = await asyncio.wait_for(
                    loop.run_in_executor(self.manager.io_pool, ctr.fetch, ended - started),
                    ctr.config.timeout_s + 1.0)
            except Exception:
                window.ctr = None

    async def _fetch_prometheus(self, window: Window, started: float, ended: float) -> None:
        """The Prometheus checks' data for this window, in the I/O pool, within the source's deadline.

        {namespace} and {name} are the run's (checked when the run started), never a payload's.
        """
        src = self.manager.prom_source(self.analysis)
        if src is None:
            return
        loop = asyncio.get_running_loop()
        try:
            window.prometheus = await asyncio.wait_for(
                loop.run_in_executor(self.manager.io_pool, src.fetch, ended - started, ended,
                                     self.run.namespace, self.run.name),
                src.deadline_s + 1.0)
        except Exception as exc:  # the pool busy, the deadline passed: missing data, the checks' on_missing
            window.prometheus = src.all_missing(f"Prometheus fetch cut short: {type(exc).__name__}")

    async def _add_window(self, window: Window, kind: str, started: float, ended: float) -> int:
        loop = asyncio.get_running_loop()
        window.reference_inputs = self.analysis.reference_inputs
        return await loop.run_in_executor(self.manager.judge_pool, self._update_and_store,
                                          window, kind, started, ended)

    def _update_and_store(self, window: Window, kind: str, started: float, ended: float) -> int:
        with self._update_lock:
            before = self.state.to_dict()
            self.seq += 1
            seq = self.seq
            was = self.state.outcome
            report = self.gate.update(self.state, window)
            verdict = self.gate.verdict(self.state)
            state = self.state.to_dict()
        stored = verdict.to_dict()
        stored["window"] = report.to_dict()
        try:
            # The window with the state that counts it, in one transaction; with replicas, only while this
            # replica holds the run's lease (webhook/replicas.py).
            self.manager.store.add_window(StoredWindow(
                run_id=self.run.id, seq=seq, kind=kind, started_at=started, ended_at=ended,
                verdict=stored, data=encode_window(window)), owner=self.manager.replica_id, state=state,
                run_verdict=verdict.to_dict())
        except BaseException as exc:
            # Not stored: neither is its evidence, so the next window takes its seq (no gap, no double count).
            from analyses.gate import RunState

            with self._update_lock:
                if self.seq == seq:
                    self.seq, self.state = seq - 1, RunState.from_dict(before)
            if isinstance(exc, LeaseLost):
                self.manager.lost(self, str(exc))
            raise
        self.verdict, self.last_report = verdict, report
        self.manager.metrics.observe_window(self.run, window, report, verdict)
        self.manager.event(self.run.id, "window",
                           f"window {seq} ({kind}, {report.health}): {verdict.outcome}: "
                           f"{_one_line(verdict.reason, 300)}", {"seq": seq, "outcome": verdict.outcome})
        if verdict.outcome != was and (verdict.outcome != "continue" or was == "pass"):
            what = f"run {verdict.outcome} at window {seq}"
            if was == "pass":  # a pass that did not hold: the timeline and the report say so
                what = f"run passed before, now {verdict.outcome} at window {seq} (the pass was not final)"
            self.manager.event(self.run.id, "decision", f"{what}: {_one_line(verdict.reason, 600)}")
        return seq

    def start_stage(self, label: str) -> bool:
        """The caller moved to a heavier stage: passes are earned again from the next window."""
        with self._update_lock:
            started = self.gate.start_stage(self.state, label)
            if started:
                self.manager.store.update_run(self.run.id, state=self.state.to_dict())
        if started:
            self.manager.event(self.run.id, "stage", f"stage {label!r} begins with the next window: "
                                                     "passes are earned again on its windows")
        return started

    def finalize(self) -> Any:
        """A caller was told to promote: the decision is final (stored with the state)."""
        with self._update_lock:
            self.gate.mark_final(self.state)
            verdict = self.gate.verdict(self.state)
            self.manager.store.update_run(self.run.id, verdict=verdict.to_dict(), state=self.state.to_dict())
            self.verdict = verdict
        return verdict

    async def golden(self) -> Any:
        """Probe the whole golden set on both versions (no load running); one window of evidence."""
        started = time.time()
        window = await self.measurement.golden_check()
        window.golden = True
        await self._add_window(window, "golden", started, time.time())
        if not self.golden_done.done():
            self.golden_done.set_result(self.verdict)
        return self.verdict


class SessionManager:
    """Owns the background loop, the live sessions, and the pools they use."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics,
                 measurement_factory: MeasurementFactory | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.factory = measurement_factory or _default_factory
        if measurement_factory is None:
            # The gRPC stubs and load machinery load at start, not inside the first run's hook
            # (half a second of imports on a hook's path otherwise).
            import loadtest.load  # noqa: F401
            import loadtest.shadow  # noqa: F401
            import loadtest.wire  # noqa: F401

            from . import measure  # noqa: F401
        self._lock = threading.RLock()
        self._sessions: dict[str, Session] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ctr: dict[str, Any] = {}
        self._prom: dict[str, Any] = {}
        # Gate updates are CPU work, storing is disk work: neither may run on the loop.
        self.judge_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="judge")
        self.io_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="session-io")
        self._events = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="timeline")
        self._live_keys: dict[tuple, str] = {}
        self._closed = False
        self._lag_task: concurrent.futures.Future | None = None
        self.loop_lag_s = 0.0  # how late the session loop runs (smoothed): Shadowgate's own load
        self.lag_high_at = 0.0  # when the loop last ran later than server.max_loop_lag_s (unix s)
        srv = settings.server
        # Which runs hold a slot and which wait (webhook.admission): capacity is reserved at admission.
        self.admission = Admission(srv, metrics, lag=lambda: self.loop_lag_s, on_admit=self._admitted,
                                   on_leave=self._left)
        # Canary checks (pre-rollout) run on the loop; a passed one starts the session from this pool.
        self._starter = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="session-start")
        self._checks: dict[str, concurrent.futures.Future] = {}
        self._check_tasks: set[asyncio.Task] = set()  # on the loop: cancelled at shutdown
        # Hooks waiting on a live check now, in all and per namespace (server.max_blocking_hooks*).
        self._block_lock = threading.Lock()
        self._blocking = 0
        self._blocking_ns: dict[str, int] = {}
        metrics.limit.labels("sessions").set(srv.max_sessions)
        metrics.limit.labels("sessions_per_analysis").set(srv.max_sessions_per_analysis)
        if srv.max_sessions_per_namespace is not None:
            metrics.limit.labels("sessions_per_namespace").set(srv.max_sessions_per_namespace)
        metrics.limit.labels("target_rate").set(srv.max_target_rate)
        metrics.limit.labels("loop_lag_seconds").set(srv.max_loop_lag_s)
        metrics.limit.labels("blocking_hooks").set(srv.blocking_hooks())
        metrics.limit.labels("blocking_hooks_per_namespace").set(srv.max_blocking_hooks_per_namespace)
        # Replicas sharing a PostgreSQL store: leases say which one measures a run (webhook/replicas.py).
        self.replicas = None
        if getattr(store, "shared", False):
            from .replicas import Replicas, lease_ttl

            self.replicas = Replicas(self, store, lease_ttl(settings)).start()

    @property
    def replica_id(self) -> str | None:
        """This replica's id when several share the store (windows are stored under its lease), else None."""
        return self.replicas.id if self.replicas is not None else None

    # ------------------------------------------------------------ replicas (webhook/replicas.py)

    def owned(self) -> dict[str, Session]:
        """The runs this process measures now (their leases are renewed)."""
        with self._lock:
            return {r: s for r, s in self._sessions.items() if not s.stopped and not s.lease_lost}

    def lost(self, s: Session, why: str) -> None:
        """Another replica may measure this run now: stop its load at once, give nothing back."""
        if s.lease_lost:
            return
        s.lease_lost = True
        log.warning("run %s: lease lost (%s): session stopped", s.run.id, why)
        self.event(s.run.id, "session", f"replica {self.replica_id} stopped measuring: {why}")
        self.stop(s)

    def apply_request(self, s: Session, kind: str, arg: str) -> None:
        """A change a hook on another replica asked for (RemoteSession), applied as if asked here."""
        try:
            if kind == "stage":
                s.start_stage(arg)
            elif kind == "final":
                s.finalize()
            elif kind == "rate":
                problem = self.set_rate(s, float(arg))
                if problem:
                    self.event(s.run.id, "rate", f"rate {float(arg):g} not applied: {problem}")
        except Exception:
            log.exception("run %s: applying %s %r", s.run.id, kind, arg)

    def resume_claimed(self, run_id: str) -> None:
        """This replica claimed a free run (new, given back, or its owner died): measure it from the store."""
        run = self.store.get_run(run_id)
        started = None
        if run is not None and run.status not in STOPPED_STATUSES:
            try:
                started = self.session(run, start=True, claimed=True)
            except AtCapacity as exc:
                log.info("run %s: claimed but not admitted here (%s): lease given back", run_id, exc)
            except Exception:
                log.exception("run %s: resuming a claimed run failed", run_id)
        if started is None and self.replicas is not None:
            self.replicas.forget(run_id)
            if run is None or run.status in STOPPED_STATUSES:
                self.store.end_lease(run_id)
            else:
                self.store.release_run(run_id, self.replicas.id)

    def _end_lease(self, run_id: str) -> None:
        """The run is no longer measured anywhere (idle, promoted, finished)."""
        if self.replicas is None:
            return
        self.replicas.forget(run_id)
        try:
            self.store.end_lease(run_id)
        except Exception:  # its owner's next renewal or window finds the run ended anyway
            log.warning("run %s: ending its lease failed", run_id, exc_info=True)

    # ------------------------------------------------------------ loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(self._loop)
                    self._loop.call_soon(ready.set)
                    self._loop.run_forever()

                thread = threading.Thread(target=run, name="sessions-loop", daemon=True)
                thread.start()
                self._thread = thread  # only once it runs: /readyz reads it without the lock
                ready.wait(5.0)
                self._lag_task = asyncio.run_coroutine_threadsafe(self._watch_lag(), self._loop)
            return self._loop

    async def _watch_lag(self, every_s: float = 0.2, sweep_every_s: float = 2.0) -> None:
        """Measure how late the loop wakes up: the load generators' timetables share it.

        Every `sweep_every_s` also expire silent runs from admission and admit what then fits
        (in memory, a few microseconds per run: fine on the loop).
        """
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + sweep_every_s
        while not self._closed:
            t = loop.time()
            await asyncio.sleep(every_s)
            lag = max(0.0, loop.time() - t - every_s)
            self.loop_lag_s = 0.8 * self.loop_lag_s + 0.2 * lag
            if self.loop_lag_s > self.settings.server.max_loop_lag_s:
                self.lag_high_at = time.time()
            self.metrics.usage.labels("loop_lag_seconds").set(self.loop_lag_s)
            if loop.time() >= next_sweep:
                next_sweep = loop.time() + sweep_every_s
                try:
                    self.admission.sweep()
                except Exception:
                    log.exception("admission sweep failed")

    # ------------------------------------------------------------ admission (webhook.admission)

    def admit(self, run: RunRecord) -> Ticket:
        """Admit `run` (it holds a slot until it ends) or queue it; either way its call keeps it alive.

        A run that measured before (stored gate state or windows, or idle) is admitted again at once:
        after a restart, or when it was silent longer than server.admission_ttl().
        """
        analysis = self.settings.analyses[run.analysis]
        resumed = bool(run.state) or run.windows > 0 or run.status == "idle" or self.live(run.id) is not None
        return self.admission.request(run.id, run.namespace, run.analysis, planned_rates(analysis),
                                      resumed=resumed, connections=planned_connections(analysis.config))

    def _admitted(self, e: Entry, waited_s: float) -> None:
        if waited_s >= 0.5 or e.over_cap:
            extra = " (beyond the caps: it had been admitted before)" if e.over_cap else ""
            self.event(e.run_id, "admission", f"admitted after {waited_s:.0f} s in the queue{extra}")

    def _left(self, e: Entry, why: str) -> None:
        # Called under the admission lock: never take self._lock here (session() takes them the other way).
        check = self._checks.get(e.run_id)
        if check is not None and check.done():
            self._checks.pop(e.run_id, None)
        if why in ("queue_ttl", "unclaimed", "admission_ttl"):
            what = {"queue_ttl": "left the admission queue: no call",
                    "unclaimed": "slot given back: admitted from the queue, no call since",
                    "admission_ttl": "slot given back: no call"}[why]
            ttl = (self.settings.server.admission_ttl() if why == "admission_ttl"
                   else self.settings.server.admission_queue_ttl_s)
            self.event(e.run_id, "admission", f"{what} for {ttl:.0f} s (admitted again at its next call)"
                       if why == "admission_ttl" else f"{what} for {ttl:.0f} s")

    def target_rates(self) -> dict[str, float]:
        """Requests/s planned for each model server address over the admitted runs."""
        return self.admission.used_rates()

    def rate_problem(self, s: "Session", rate: float) -> str | None:
        """Why `s` may not move to `rate` requests/s (None: it may), over the admitted runs' budget."""
        return self.admission.rate_problem(s.run.id, planned_rates(s.analysis, rate))

    def set_rate(self, s: "Session", rate: float) -> str | None:
        """Move `s` to `rate` requests/s if the model servers' budget allows; else why not (rate unchanged)."""
        if rate == s.rate_override:
            return None
        problem = self.rate_problem(s, rate)
        if problem:
            return problem
        s.rate_override = rate
        self.admission.set_rates(s.run.id, planned_rates(s.analysis, rate))
        if getattr(s, "remote", False):  # measured by another replica: it applies the rate at its next renewal
            self.store.request(s.run.id, "rate", repr(rate))
            return None
        try:
            self.loop.call_soon_threadsafe(s.measurement.set_rate, rate)
        except RuntimeError:
            pass
        return None

    @contextlib.contextmanager
    def blocking(self, namespace: str):
        """Yields whether a hook of `namespace` may wait on a live check now (never waits itself).

        At most server.max_blocking_hooks_per_namespace hooks of one namespace and
        server.blocking_hooks() in all wait at once, so one team's stalled canary cannot take the
        threads every other hook needs. A hook that may not wait answers at once.
        """
        srv = self.settings.server
        with self._block_lock:
            mine = self._blocking_ns.get(namespace, 0)
            if mine >= srv.max_blocking_hooks_per_namespace:
                ok, cap = False, "namespace"
            elif self._blocking >= srv.blocking_hooks():
                ok, cap = False, "total"
            else:
                ok, cap = True, ""
                self._blocking += 1
                self._blocking_ns[namespace] = mine + 1
                self.metrics.hooks_blocking.set(self._blocking)
        if not ok:
            self.metrics.hook_background.labels(cap).inc()
        try:
            yield ok
        finally:
            if ok:
                with self._block_lock:
                    self._blocking -= 1
                    left = self._blocking_ns[namespace] - 1
                    if left:
                        self._blocking_ns[namespace] = left
                    else:
                        del self._blocking_ns[namespace]
                    self.metrics.hooks_blocking.set(self._blocking)

    def check_canary(self, run: RunRecord) -> concurrent.futures.Future:
        """The run's canary check, started now unless one is running: (ok, reason, culprit).

        Runs on the session loop, within server.hook_deadline_s whatever the canary does (a stalled
        canary costs a coroutine, never a thread). When it passes, the run's session is started (in the
        background), so the check gates the measurement even when no hook waits for it. culprit is
        "canary" or "stable" (the model servers' fault) or "shadowgate" (ours: never a failed check).
        """
        with self._lock:
            fut = self._checks.get(run.id)
            if fut is not None and not fut.done():
                return fut
            fut = asyncio.run_coroutine_threadsafe(self._check_then_start(run), self.loop)
            self._checks[run.id] = fut
            return fut

    def forget_check(self, run_id: str) -> None:
        """Drop the run's finished canary check (its result was answered; the session measures now)."""
        with self._lock:
            fut = self._checks.get(run_id)
            if fut is not None and fut.done():
                del self._checks[run_id]

    def canary_check(self, run_id: str) -> tuple[str, str] | None:
        """The run's newest canary check: None (none, or it passed), (CHECK_RUNNING, ""), or ("failed", reason)."""
        with self._lock:
            fut = self._checks.get(run_id)
        if fut is None:
            return None
        if not fut.done():
            return CHECK_RUNNING, ""
        try:
            ok, reason, culprit = fut.result()
        except BaseException as exc:  # cancelled at shutdown
            return "failed", f"canary check did not finish: {exc!r}"
        if ok or culprit == "shadowgate":
            return None
        return "failed", reason

    async def _check_then_start(self, run: RunRecord) -> tuple[bool, str, str | None]:
        task = asyncio.current_task()
        self._check_tasks.add(task)
        try:
            return await self._check_then_start_(run)
        finally:
            self._check_tasks.discard(task)

    async def _check_then_start_(self, run: RunRecord) -> tuple[bool, str, str | None]:
        deadline = self.settings.server.hook_deadline_s
        analysis = self.settings.analyses[run.analysis]
        try:
            measurement = self.factory(analysis)
            ok, reason, culprit = await asyncio.wait_for(measurement.check_canary(), deadline)
        except asyncio.TimeoutError:
            # The check makes two calls in a row at most, each ending at its target's timeout_s (retries
            # included): past those deadlines with time to spare, the calls' own deadlines did not fire on
            # time, i.e. Shadowgate's loop ran late (seen at 150+ analyses). Not the canary's fault.
            cfg = analysis.config
            calls_s = cfg.canary.timeout_s + max(cfg.canary.timeout_s, cfg.stable.timeout_s)
            if calls_s + 1.0 < deadline:
                ok, reason, culprit = (False, f"canary check not finished within {deadline:g} s although its calls "
                                              f"end within {calls_s:g} s: Shadowgate's loop ran late "
                                              f"({1000 * self.loop_lag_s:.0f} ms behind)", "shadowgate")
            else:
                ok, reason, culprit = (False, f"canary did not answer its status and metadata within the hook "
                                              f"deadline ({deadline:g} s)", "canary")
        except Exception as exc:  # e.g. an address the client cannot use: say so
            ok, reason, culprit = False, f"canary check failed: {exc!r}", "canary"
        if not ok:
            self.event(run.id, "check", f"canary check failed: {reason}")
            return ok, reason, culprit
        loop = asyncio.get_running_loop()
        try:
            s = await loop.run_in_executor(self._starter, functools.partial(self._start_checked, run))
        except AtCapacity as exc:
            return False, f"not measured yet: {exc}", "shadowgate"
        except Exception as exc:
            log.exception("run %s: session did not start", run.id)
            return False, f"not measured yet: the session did not start ({exc!r})", "shadowgate"
        if s is not None:
            s.touch()
        return ok, reason, culprit

    def _start_checked(self, run: RunRecord) -> Session | None:
        """Start the session of a run whose canary check passed, unless it ended or lost its slot meanwhile."""
        fresh = self.store.get_run(run.id)
        if fresh is None or fresh.status in STOPPED_STATUSES:
            return None
        if not self.admission.holds(run.id):
            raise AtCapacity("its slot was given back during the canary check")
        return self.session(fresh, start=True)

    def loop_alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def call(self, coro, timeout_s: float):
        """Run `coro` on the session loop; wait at most `timeout_s` seconds (concurrent.futures.TimeoutError).

        On timeout the work goes on in the background; the caller answers without it.
        """
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout=max(timeout_s, 0.0))

    def ctr_source(self, analysis: Analysis):
        cfg = analysis.config.ctr
        if cfg is None:
            return None
        with self._lock:
            src = self._ctr.get(analysis.name)
            if src is None:
                from .ctr import CtrSource

                src = self._ctr[analysis.name] = CtrSource(cfg, analysis.config.stable, analysis.config.canary)
            return src

    def prom_source(self, analysis: Analysis):
        """The analysis' Prometheus checks fetcher (webhook.promchecks), or None without such checks."""
        if analysis.config.prometheus is None or not analysis.prometheus:
            return None
        with self._lock:
            src = self._prom.get(analysis.name)
            if src is None:
                from .promchecks import source_for

                src = self._prom[analysis.name] = source_for(analysis)
            return src

    def event(self, run_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        """Append to a run's timeline, in the background: a hook never waits for the disk.

        One writer thread keeps the order; the time is taken now.
        """
        ts = time.time()

        def write() -> None:
            try:
                self.store.add_event(run_id, kind, _one_line(message, 1000), data, ts=ts)
            except Exception:  # a store hiccup must not break a hook
                log.exception("timeline write for %s failed", run_id)

        try:
            self._events.submit(write)
        except RuntimeError:  # shut down: write directly
            write()

    def flush_events(self, timeout_s: float = 2.0) -> None:
        """Wait (up to `timeout_s` seconds) until timeline entries queued so far are stored."""
        try:
            self._events.submit(lambda: None).result(timeout=timeout_s)
        except (RuntimeError, concurrent.futures.TimeoutError):
            pass

    # ------------------------------------------------------------ runs

    def open_run(self, caller: str, analysis: str, namespace: str, name: str, revision: str, *,
                 restart_final: bool, create: bool = True) -> RunRecord | None:
        """The run for this rollout: the live one, the stored one, or a new one (None if not `create`).

        restart_final: a finished run (succeeded/failed) gets a new attempt
        (a rollout of the same revision that starts again).
        """
        key = (caller, analysis, namespace, name, revision)
        with self._lock:
            # Hot path: a live session's run is known without asking the store.
            live = self._sessions.get(self._live_keys.get(key, ""))
            if live is not None and not live.stopped and live.run.status not in STOPPED_STATUSES:
                return live.run
            rec = self.store.find_run(caller, analysis, namespace, name, revision)
            if rec is not None and not (restart_final and rec.status in FINAL_STATUSES):
                return rec
            if not create:
                return rec
            attempt = 1 if rec is None else rec.attempt + 1
            rec = RunRecord(id=run_id_for(caller, analysis, namespace, name, revision, attempt),
                            analysis=analysis, caller=caller, namespace=namespace, name=name,
                            revision=revision, attempt=attempt)
            self.store.create_run(rec)
            self.event(rec.id, "run", f"run started by {caller} for {namespace}/{name} revision {revision}"
                                      f" (attempt {attempt})")
            older = [x for x in self._sessions.values()
                     if not x.stopped and x.run.revision != revision and x.run.status not in STOPPED_STATUSES
                     and (x.run.caller, x.run.analysis, x.run.namespace, x.run.name) == key[:4]]
        for x in older:
            self._supersede(x, rec)
        return rec

    def _supersede(self, s: Session, newer: RunRecord) -> None:
        """A new revision of the same rollout started: the older revision's run stops loading the servers
        and gives its capacity back at once. Flagger restarts the analysis for the new revision without a
        post-rollout for the old one (Argo starts a new AnalysisRun), so without this the old run's load
        would go on beside the new one's until it idled out, and its slot would stay taken. It becomes
        idle (not failed: nobody judged it), and resumes if its controller ever calls it again."""
        self.stop(s)
        try:
            s.run.status = "idle"
            self.store.update_run(s.run.id, status="idle")
        except Exception:
            log.exception("run %s: marking superseded run idle", s.run.id)
        self.admission.release(s.run.id, "superseded")
        self.metrics.forget_run(s.run)
        self.event(s.run.id, "session", f"revision {newer.revision} of {newer.namespace}/{newer.name} started "
                                        f"(run {newer.id}): this run's load stopped, its capacity given back")

    def peek(self, caller: str, analysis: str, namespace: str, name: str, revision: str) -> Any:
        """The live session's decision for this rollout, or None; takes no lock (the front's loop calls it
        for busy answers, webhook.busy: plain dict reads are atomic, a Verdict is replaced whole)."""
        s = self._sessions.get(self._live_keys.get((caller, analysis, namespace, name, revision), ""))
        return s.verdict if s is not None and not s.stopped else None

    def live(self, run_id: str) -> Session | None:
        with self._lock:
            s = self._sessions.get(run_id)
            return s if s is not None and not s.stopped else None

    def session(self, run: RunRecord, *, start: bool, claimed: bool = False) -> Session | None:
        """The live session of `run`; with `start`, create (or resume) it and begin measuring.

        Never waits for the session loop: the golden check and the load start
        in the background and hooks read whatever the run state says. With
        replicas, only the replica holding the run's lease measures it
        (`claimed`: this one just claimed it); on the others the answer is a
        RemoteSession that reads the stored decision (webhook/replicas.py).
        """
        with self._lock:
            s = self._sessions.get(run.id)
            if s is not None and not s.stopped:
                return s
            if not start or run.status in STOPPED_STATUSES:
                return None
            analysis = self.settings.analyses[run.analysis]
            if not self.admission.holds(run.id):
                ticket = self.admit(run)
                if not ticket.admitted:
                    raise AtCapacity(ticket.reason, ticket)
            if self.replicas is not None:
                if not claimed:
                    owned, owner = self.replicas.acquire(run)
                    if not owned:
                        from .replicas import RemoteSession

                        return RemoteSession(self, run, owner)
                # Its previous owner may have stored windows since `run` was read: resume from the newest.
                fresh = self.store.get_run(run.id)
                if fresh is not None:
                    run.state, run.verdict, run.windows = fresh.state, fresh.verdict, fresh.windows
            s = Session(self, run, analysis, self.factory(analysis))
            # Restore under the lock: a second caller must not see a half-loaded session.
            stored = self.store.windows(run.id, with_data=not run.state)
            if stored or run.state:
                s.restore(run, stored)
            self._sessions[run.id] = s
            self._live_keys[(run.caller, run.analysis, run.namespace, run.name, run.revision)] = run.id
            s._task = asyncio.run_coroutine_threadsafe(self._supervise(s), self.loop)
            self._publish_usage()
        resumed = bool(stored) or run.status == "idle"
        run.status = "running"
        self.store.update_run(run.id, status="running")
        self.event(run.id, "session", f"session resumed after {len(stored)} stored windows"
                   if resumed else "session started: golden-set check, then load and probes")
        return s

    async def _supervise(self, s: Session) -> None:
        try:
            await s._main()
        except Exception:
            log.exception("run %s: session failed", s.run.id)
        finally:
            s.stopped = True
            if not s.golden_done.done():
                s.golden_done.cancel()
            with self._lock:
                if self._sessions.get(s.run.id) is s:
                    del self._sessions[s.run.id]
                    key = (s.run.caller, s.run.analysis, s.run.namespace, s.run.name, s.run.revision)
                    if self._live_keys.get(key) == s.run.id:
                        del self._live_keys[key]
                self._publish_usage()
            if s.idle:
                try:
                    self.store.update_run(s.run.id, status="idle")
                except Exception:
                    log.exception("run %s: marking idle", s.run.id)
                self.event(s.run.id, "session", "no call from the controller for "
                           f"{self.settings.server.idle_timeout():.0f} s: load stopped (resumes on the next call)")
            if self.replicas is not None and not s.lease_lost:
                self.replicas.forget(s.run.id)
                try:
                    if self._closed and not s.idle and s.run.status not in STOPPED_STATUSES:
                        # This replica stops, the run goes on: another replica claims it at its next tick.
                        self.store.release_run(s.run.id, self.replicas.id)
                    else:
                        self.store.end_lease(s.run.id)
                except Exception:  # the lease then expires: the run is taken over one TTL later
                    log.warning("run %s: giving its lease back failed", s.run.id, exc_info=True)

    def stop(self, s: Session) -> concurrent.futures.Future | None:
        """Ask a session to stop (its load ends in the background); returns its task to wait on if needed."""
        if s._task is None or s.stopped:
            return None
        self.loop.call_soon_threadsafe(s._stop.set)
        return s._task

    def stored_decision(self, run: RunRecord) -> Any:
        """A run's decision from the store (no session)."""
        if run.verdict:
            return verdict_from_dict(run.verdict)
        return waiting_verdict("the run has no window yet")

    def decision(self, run: RunRecord) -> Any:
        s = self.live(run.id)
        return s.decision() if s is not None else self.stored_decision(run)

    def finish(self, run: RunRecord, status: str) -> Any:
        """End a run (post-rollout): record its final status now; its load stops in the background."""
        s = self.live(run.id)
        verdict = s.decision() if s is not None else self.stored_decision(run)
        if s is not None:
            self.stop(s)
        run.status = status
        self.store.update_run(run.id, status=status)
        self._end_lease(run.id)  # a replica measuring it stops at its next renewal or window
        self.admission.release(run.id, "ended")
        self.metrics.forget_run(run)
        return verdict

    def _publish_usage(self) -> None:
        live = [x for x in self._sessions.values() if not x.stopped]
        self.metrics.sessions.set(len(live))
        self.metrics.usage.labels("sessions").set(len(live))
        rates = self.target_rates()
        self.metrics.usage.labels("target_rate").set(max(rates.values(), default=0.0))

    def promote(self, run: RunRecord) -> Any:
        """confirm-promotion passed: stop measuring and freeze the decision while the controller
        finalises. The canary is scaled down before post-rollout arrives; windows measured then
        would turn a promoted run into a failed one."""
        s = self.live(run.id)
        if s is not None:
            verdict = s.finalize()
        else:
            v = dict(run.verdict or {})
            v["final"] = True
            self.store.update_run(run.id, verdict=v)
            run.verdict = v
            verdict = self.stored_decision(run)
        run.status = "promoted"
        self.store.update_run(run.id, status="promoted")
        self._end_lease(run.id)
        if s is not None:
            s.run.status = "promoted"
            self.stop(s)
        self.admission.release(run.id, "promoted")  # its load stops: the next run may start
        self.event(run.id, "decision", "promotion confirmed: load stopped, decision final")
        return verdict

    def active(self) -> list[Session]:
        with self._lock:
            return [s for s in self._sessions.values() if not s.stopped]

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop every session's load (runs stay 'running' in the store and resume after a restart)."""
        if self._closed:
            return
        if self.replicas is not None:
            self.replicas.stop()  # no more claims; the sessions below give their leases back to the others
        self._closed = True
        if self._loop is not None:
            async def halt_all() -> None:
                if self._lag_task is not None:
                    self._lag_task.cancel()
                sessions = self.active()
                for s in sessions:
                    s._stop.set()
                for t in list(self._check_tasks):
                    t.cancel()
                tasks = [asyncio.wrap_future(s._task) for s in sessions if s._task is not None]
                tasks += list(self._check_tasks)
                if tasks:
                    await asyncio.wait(tasks, timeout=timeout_s)

            try:
                self.call(halt_all(), timeout_s + 1.0)
            except Exception:
                log.warning("sessions did not stop within %.1f s", timeout_s)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout_s)
        for src in list(self._ctr.values()) + list(self._prom.values()):
            src.close()
        self.judge_pool.shutdown(wait=False, cancel_futures=True)
        self._starter.shutdown(wait=False, cancel_futures=True)
        self.io_pool.shutdown(wait=False, cancel_futures=True)
        self._events.shutdown(wait=True)  # the timeline entries queued so far are kept
