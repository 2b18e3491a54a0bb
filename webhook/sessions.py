"""Analysis sessions: one per run, measuring in the background.

A session starts on a run's first hook call and then works on its own:
load on the canary (and stable), shadow probes to both, and a window closed
every `interval_s` seconds, judged and stored. Hooks only read what the
session has already measured, under a lock, so they answer in milliseconds;
the few that need a live check (confirm-rollout, pre-rollout, a first Argo
call) run it on the session loop with a hard deadline below the callers'
10 s timeout.

Threads: Flask handler threads call the sync methods; every coroutine runs
on one background asyncio loop thread owned by the SessionManager; judging
and SQLite writes go to a small thread pool so they never stall the load
generator's timetable.

Why one worker process: the gate state (windows, cursors, verdicts) lives in
this process. Several workers would each keep a partial run and answer
differently (the problem of Flagger's own load tester with replicas).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from analyses.window import Window, merge_windows

from .codec import decode_window, encode_window
from .config import Analysis, Settings
from .metrics import Metrics
from .store import FINAL_STATUSES, RunRecord, Store, StoredWindow

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


def is_failing(verdict: Any) -> bool:
    """A verdict that blocks a step: phase Failed.

    "marginal" (Inconclusive) lets a step go on, as in Kayenta: only the
    promotion needs a clear pass. "nodata" fails only when the judge is
    configured to (`on_no_data: fail`).
    """
    return verdict is not None and verdict.phase == "Failed"


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _judge(window: Window, config: Any, look: int | None = None):
    from analyses.judge import judge

    return judge(window, config, look=look)


def _judge_run(windows: list[Window], config: Any):
    from analyses.judge import judge_run

    return judge_run(windows, config)


def _verdict_from_dict(d: dict[str, Any]):
    from analyses.judge import Verdict

    return Verdict.from_dict(d)


def nodata_verdict(reason: str):
    """A verdict that says there is nothing to judge yet (passed False, phase Inconclusive)."""
    from analyses.judge import Verdict

    return Verdict.from_dict({"outcome": "nodata", "passed": False, "phase": "Inconclusive",
                              "score": None, "reason": _one_line(reason), "checks": [],
                              "critical_failure": False})


@dataclass
class Answer:
    """What a hook reads from a session: a verdict and the windows it covers."""

    verdict: Any
    windows: list[int]
    fresh: bool  # True when the windows were not reported to this caller before


class Session:
    """One run's measurements, windows and verdicts."""

    def __init__(self, manager: "SessionManager", run: RunRecord, analysis: Analysis,
                 measurement: Measurement) -> None:
        self.manager = manager
        self.run = run
        self.analysis = analysis
        self.measurement = measurement
        self._lock = threading.Lock()
        self.windows: list[Window] = []
        self.window_verdicts: list[tuple[int, Any]] = []  # (seq, Verdict)
        self.run_verdict: Any = None
        self.seq = 0
        # Per caller: newest window seq already answered ("rollout" for
        # Flagger, "argo"), and a precomputed verdict of the windows since
        # (judged in the pool when a window closes, so the hook only reads it).
        self.cursor = "argo" if run.caller == "argo" else "rollout"
        self.cursors: dict[str, int] = {self.cursor: 0}
        self._pending: dict[str, tuple[list[int], Any]] = {}
        self.last_call = time.monotonic()
        self.window_started = time.time()
        self.started = False
        self.stopped = False
        self.idle = False
        self.rate_override: float | None = None
        # Loop-side state. asyncio primitives bind to a loop on first use, so
        # creating them here (in a handler thread) is safe; only the loop uses them.
        self._task: asyncio.Future | None = None
        self._stop = asyncio.Event()
        self._close_lock = asyncio.Lock()
        self._next_close = 0.0

    # ------------------------------------------------------------ restore

    def restore(self, stored: list[StoredWindow]) -> None:
        """Load windows kept in the store (after a restart), judged verdicts included."""
        cfg = self.analysis.judge_config
        for sw in stored:
            if sw.data is None:
                continue
            w = decode_window(sw.data)
            w.reference_inputs = self.analysis.reference_inputs
            v = _verdict_from_dict(sw.verdict) if sw.verdict else _judge(w, cfg, look=sw.seq)
            self.windows.append(w)
            self.window_verdicts.append((sw.seq, v))
            self.seq = max(self.seq, sw.seq)
        if self.windows:
            self.run_verdict = _judge_run(self.windows, cfg)
        # Everything stored was answered before the restart, as far as we know.
        self.cursors[self.cursor] = self.seq

    # ------------------------------------------------------------ hook side (any thread)

    def touch(self) -> None:
        """A controller called for this run: it is still alive."""
        self.last_call = time.monotonic()

    def latest(self) -> tuple[int, Any] | None:
        with self._lock:
            return self.window_verdicts[-1] if self.window_verdicts else None

    def run_level(self) -> Any:
        with self._lock:
            return self.run_verdict

    def since(self, cursor: str, *, early: bool = True) -> Answer:
        """The verdict of the windows closed since `cursor`'s last call, then advance the cursor.

        When none closed and the open window already holds enough probe pairs,
        close it now (within the hook deadline). With nothing new, the answer
        is "no data" rather than a repeat of an old verdict, so one bad window
        is never counted twice by a caller that calls more often than windows close.
        """
        answer = self._take_since(cursor)
        if answer is None and early and self.started and not self.stopped:
            try:
                pending = self.measurement.pending_probes()
            except Exception:
                pending = 0
            if pending >= self.analysis.config.min_window_probes:
                try:
                    self.manager.call(self.close_window("early"), self.manager.settings.server.hook_deadline_s)
                except concurrent.futures.TimeoutError:
                    log.warning("run %s: early window close exceeded the hook deadline", self.run.id)
                except Exception:
                    log.exception("run %s: early window close failed", self.run.id)
                answer = self._take_since(cursor)
        if answer is not None:
            return answer
        with self._lock:
            n = len(self.window_verdicts)
        why = ("no window closed since the last call" if n else "no data yet: the first window is still open")
        return Answer(nodata_verdict(why), [], False)

    def mark_seen(self, cursor: str, seq: int) -> None:
        """`cursor`'s caller has had the windows up to `seq` (e.g. pre-rollout's golden window)."""
        with self._lock:
            self.cursors[cursor] = max(self.cursors.get(cursor, 0), seq)
            self._pending.pop(cursor, None)

    def _take_since(self, cursor: str) -> Answer | None:
        with self._lock:
            last = self.cursors.get(cursor, 0)
            new = [(s, v) for s, v in self.window_verdicts if s > last]
            if not new:
                return None
            seqs = [s for s, _ in new]
            self.cursors[cursor] = seqs[-1]
            pending = self._pending.pop(cursor, None)
            if len(new) == 1:
                return Answer(new[0][1], seqs, True)
            if pending is not None and pending[0] == seqs:
                return Answer(pending[1], seqs, True)
            windows = self.windows[len(self.windows) - len(new):]
        # Rare: windows closed faster than the precomputation; judge their merge here.
        merged = merge_windows(windows)
        merged.reference_inputs = self.analysis.reference_inputs
        return Answer(_judge(merged, self.analysis.judge_config, look=seqs[0]), seqs, True)

    # ------------------------------------------------------------ loop side

    async def _main(self) -> None:
        """Measure until stopped or idle; close a window every interval."""
        loop = asyncio.get_running_loop()
        interval = self.analysis.interval_s
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
                if self.measurement.pending_probes() > 0:
                    await self.close_window("final")
            except Exception:
                log.exception("run %s: final window", self.run.id)
            try:
                await asyncio.wait_for(self.measurement.stop(), 10.0)
            except Exception:
                log.exception("run %s: stopping measurement", self.run.id)

    async def close_window(self, kind: str) -> int | None:
        """Close the open window: judge it, store it, publish it. Returns its seq (None if empty)."""
        loop = asyncio.get_running_loop()
        async with self._close_lock:
            started, ended = self.window_started, time.time()
            window = self.measurement.take_window()
            self.window_started = ended
            self._next_close = loop.time() + self.analysis.interval_s
            if (window.stable.requests == 0 and window.canary.requests == 0 and len(window.probes) == 0):
                return None
            ctr = self.manager.ctr_source(self.analysis)
            if ctr is not None:
                window.ctr = await loop.run_in_executor(self.manager.io_pool, ctr.fetch, ended - started)
            return await self._add_window(window, kind, started, ended)

    async def _add_window(self, window: Window, kind: str, started: float, ended: float,
                          config: Any = None) -> int:
        loop = asyncio.get_running_loop()
        window.reference_inputs = self.analysis.reference_inputs
        with self._lock:
            self.seq += 1
            seq = self.seq
        return await loop.run_in_executor(self.manager.judge_pool, self._judge_and_store,
                                          window, kind, seq, started, ended, config)

    def _judge_and_store(self, window: Window, kind: str, seq: int, started: float, ended: float,
                         window_config: Any = None) -> int:
        cfg = self.analysis.judge_config
        verdict = _judge(window, window_config or cfg, look=seq)
        with self._lock:
            windows = self.windows + [window]
        run_verdict = _judge_run(windows, cfg)
        # Precompute, for each caller that has fallen more than one window
        # behind, the verdict of everything it has not seen yet.
        pending: dict[str, tuple[list[int], Any]] = {}
        with self._lock:
            seqs_all = [s for s, _ in self.window_verdicts] + [seq]
            cursors = dict(self.cursors)
        for c, last in cursors.items():
            seqs = [s for s in seqs_all if s > last]
            if len(seqs) > 1:
                merged = merge_windows(windows[len(windows) - len(seqs):])
                merged.reference_inputs = self.analysis.reference_inputs
                pending[c] = (seqs, _judge(merged, cfg, look=seqs[0]))
        self.manager.store.add_window(StoredWindow(
            run_id=self.run.id, seq=seq, kind=kind, started_at=started, ended_at=ended,
            verdict=verdict.to_dict(), data=encode_window(window)))
        self.manager.store.update_run(self.run.id, verdict=run_verdict.to_dict())
        with self._lock:
            self.windows.append(window)
            self.window_verdicts.append((seq, verdict))
            self.run_verdict = run_verdict
            self._pending.update(pending)
        self.manager.metrics.observe_window(self.analysis.name, window, verdict)
        self.manager.event(self.run.id, "window",
                           f"window {seq} ({kind}): {verdict.outcome}: {_one_line(verdict.reason, 200)}",
                           {"seq": seq, "outcome": verdict.outcome, "score": verdict.score})
        return seq

    async def golden(self) -> tuple[int | None, Any]:
        """Probe the whole golden set on both versions now; store it as a window and judge it."""
        started = time.time()
        window = await self.measurement.golden_check()
        seq = await self._add_window(window, "golden", started, time.time(), self.analysis.golden_judge_config)
        with self._lock:
            for s, v in self.window_verdicts:
                if s == seq:
                    return seq, v
        return seq, None


class SessionManager:
    """Owns the background loop, the live sessions, and the pools they use."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics,
                 measurement_factory: MeasurementFactory | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.factory = measurement_factory or _default_factory
        self._lock = threading.RLock()
        self._sessions: dict[str, Session] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ctr: dict[str, Any] = {}
        # Judging is CPU work, storing is disk work: neither may run on the loop.
        self.judge_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="judge")
        self.io_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="session-io")
        self._events = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="timeline")
        self._live_keys: dict[tuple, str] = {}
        self._closed = False

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

                self._thread = threading.Thread(target=run, name="sessions-loop", daemon=True)
                self._thread.start()
                ready.wait(5.0)
            return self._loop

    def loop_alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def call(self, coro, timeout_s: float):
        """Run `coro` on the session loop; wait at most `timeout_s` seconds (concurrent.futures.TimeoutError)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            # The work goes on in the background; the caller answers without it.
            raise

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
                 restart_final: bool) -> RunRecord:
        """The run for this rollout: the live one, the stored one, or a new one.

        restart_final: a finished run (succeeded/failed) gets a new attempt
        (a rollout of the same revision that starts again).
        """
        key = (caller, analysis, namespace, name, revision)
        with self._lock:
            # Hot path: a live session's run is known without asking the store.
            live = self._sessions.get(self._live_keys.get(key, ""))
            if live is not None and not live.stopped:
                return live.run
            rec = self.store.find_run(caller, analysis, namespace, name, revision)
            if rec is not None and not (restart_final and rec.status in FINAL_STATUSES):
                return rec
            attempt = 1 if rec is None else rec.attempt + 1
            rec = RunRecord(id=run_id_for(caller, analysis, namespace, name, revision, attempt),
                            analysis=analysis, caller=caller, namespace=namespace, name=name,
                            revision=revision, attempt=attempt)
            self.store.create_run(rec)
            self.event(rec.id, "run", f"run started by {caller} for {namespace}/{name} revision {revision}"
                                      f" (attempt {attempt})")
            return rec

    def live(self, run_id: str) -> Session | None:
        with self._lock:
            s = self._sessions.get(run_id)
            return s if s is not None and not s.stopped else None

    def session(self, run: RunRecord, *, start: bool) -> Session | None:
        """The live session of `run`; with `start`, create (or resume) it and begin measuring.

        Never waits for the session loop: the measurement starts in the
        background and hooks read whatever it has gathered.
        """
        with self._lock:
            s = self._sessions.get(run.id)
            if s is not None and not s.stopped:
                return s
            if not start or run.status in FINAL_STATUSES:
                return None
            analysis = self.settings.analyses[run.analysis]
            s = Session(self, run, analysis, self.factory(analysis))
            self._sessions[run.id] = s
            self._live_keys[(run.caller, run.analysis, run.namespace, run.name, run.revision)] = run.id
            # Restore under the lock: a second caller must not see a half-loaded session.
            stored = self.store.windows(run.id, with_data=True)
            if stored:
                s.restore(stored)
            s.started = True
            s._task = asyncio.run_coroutine_threadsafe(self._supervise(s), self.loop)
            self.metrics.sessions.set(len([x for x in self._sessions.values() if not x.stopped]))
        resumed = bool(stored) or run.status == "idle"
        run.status = "running"
        self.store.update_run(run.id, status="running")
        self.event(run.id, "session", f"session resumed with {len(stored)} stored windows"
                   if resumed else "session started: load and probes running")
        return s

    async def _supervise(self, s: Session) -> None:
        try:
            await s._main()
        except Exception:
            log.exception("run %s: session failed", s.run.id)
        finally:
            s.stopped = True
            with self._lock:
                if self._sessions.get(s.run.id) is s:
                    del self._sessions[s.run.id]
                    key = (s.run.caller, s.run.analysis, s.run.namespace, s.run.name, s.run.revision)
                    if self._live_keys.get(key) == s.run.id:
                        del self._live_keys[key]
                self.metrics.sessions.set(len(self._sessions))
            if s.idle:
                try:
                    self.store.update_run(s.run.id, status="idle")
                except Exception:
                    log.exception("run %s: marking idle", s.run.id)
                self.event(s.run.id, "session", "no call from the controller for "
                           f"{self.settings.server.idle_timeout():.0f} s: load stopped (resumes on the next call)")

    def stop(self, s: Session, timeout_s: float) -> None:
        """Stop a session's measurement (a final window is closed first); wait up to `timeout_s` seconds."""
        if s._task is None or s.stopped:
            return
        self.loop.call_soon_threadsafe(s._stop.set)
        try:
            s._task.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            log.warning("run %s: session still stopping after %.1f s", s.run.id, timeout_s)
        except Exception:
            log.exception("run %s: session ended with an error", s.run.id)

    def finish(self, run: RunRecord, status: str, timeout_s: float) -> Any:
        """End a run (post-rollout): stop its session, store the final status and run-level verdict."""
        s = self.live(run.id)
        verdict = None
        if s is not None:
            self.stop(s, timeout_s)
            verdict = s.run_level()
        else:
            stored = self.store.windows(run.id, with_data=True)
            if stored:
                analysis = self.settings.analyses[run.analysis]
                ws = []
                for sw in stored:
                    if sw.data is not None:
                        w = decode_window(sw.data)
                        w.reference_inputs = analysis.reference_inputs
                        ws.append(w)
                verdict = _judge_run(ws, analysis.judge_config) if ws else None
        self.store.update_run(run.id, status=status, verdict=verdict.to_dict() if verdict is not None else None)
        return verdict

    def active(self) -> list[Session]:
        with self._lock:
            return [s for s in self._sessions.values() if not s.stopped]

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop every session's load (runs stay 'running' in the store and resume after a restart)."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            async def halt_all() -> None:
                sessions = self.active()
                for s in sessions:
                    s._stop.set()
                tasks = [asyncio.wrap_future(s._task) for s in sessions if s._task is not None]
                if tasks:
                    await asyncio.wait(tasks, timeout=timeout_s)

            try:
                self.call(halt_all(), timeout_s + 1.0)
            except Exception:
                log.warning("sessions did not stop within %.1f s", timeout_s)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout_s)
        for src in self._ctr.values():
            src.close()
        self.judge_pool.shutdown(wait=False, cancel_futures=True)
        self.io_pool.shutdown(wait=False, cancel_futures=True)
        self._events.shutdown(wait=True)  # the timeline entries queued so far are kept
