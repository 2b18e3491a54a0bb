"""Several load processes when one core is not enough; their results merged.

Each worker is a spawned process with its own event loop and its own
channel, running the same timetable at rate/N. Worker k's slots are
shifted by k/N of an interval, so together they keep the evenly spaced
timetable of one generator at the full rate. All workers start at one
shared `time.monotonic()` instant (the clock is system-wide), and send
their results back as pickles whose histograms travel as
`LatencyHistogram.to_bytes()` encodings.

Workers import neither TensorFlow nor the TF Serving stubs: they receive
prebuilt request bytes (loadtest.wire), so they start in well under a
second.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import queue as queue_mod
import threading
import time
import traceback
from dataclasses import dataclass, replace
from typing import Callable

from loadtest.load import LoadGenerator, LoadStats
from loadtest.schedule import Schedule
from loadtest.wire import Target, make_sender

_READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LoadSpec:
    """Everything a load run needs, picklable for worker processes.

    payloads: prebuilt request bodies (loadtest.wire.build_payloads).
    schedule: the timetable at the full rate (each worker runs 1/N of it).
    concurrency: cap on requests in flight over all workers.
    warmup_s, timeout_s: seconds. connections: gRPC connections (or REST
    pool size) per worker; None picks a default.
    """

    target: Target
    payloads: tuple[bytes, ...]
    schedule: Schedule
    concurrency: int = 256
    warmup_s: float = 0.0
    timeout_s: float = 5.0
    sample_size: int = 20000
    connections: int | None = None

    def share(self, workers: int) -> "LoadSpec":
        """One worker's part of this spec when split over `workers` processes."""
        return replace(self, schedule=self.schedule.scaled(1.0 / workers),
                       concurrency=max(1, math.ceil(self.concurrency / workers)),
                       sample_size=max(1, math.ceil(self.sample_size / workers)))


async def run_spec(spec: LoadSpec, *, phase: float = 0.0, start_at: float | None = None,
                   stop: asyncio.Event | None = None,
                   on_generator: Callable[[LoadGenerator], None] | None = None) -> LoadStats:
    """Run `spec` in this process's running loop; returns the run's stats."""
    sender = make_sender(spec.target, list(spec.payloads), timeout_s=spec.timeout_s,
                         connections=spec.connections, concurrency=spec.concurrency)
    try:
        gen = LoadGenerator(sender, spec.schedule, concurrency=spec.concurrency, warmup_s=spec.warmup_s,
                            timeout_s=spec.timeout_s, sample_size=spec.sample_size, phase=phase)
        if on_generator is not None:
            on_generator(gen)
        cpu0 = time.process_time()
        stats = await gen.run(stop, start_at=start_at)
        # CPU of the measured requests only (warm-up ones cost the same each).
        stats.client_cpu_s = (time.process_time() - cpu0) * stats.sent / max(gen.launched, 1)
        return stats
    finally:
        await sender.close()


def _worker_main(spec: LoadSpec, index: int, count: int, results, start_at, stop_flag,
                 interval_s: float) -> None:
    try:
        asyncio.run(_worker_async(spec, index, count, results, start_at, stop_flag, interval_s))
    except BaseException:
        results.put(("error", index, traceback.format_exc(limit=5)))


async def _worker_async(spec, index, count, results, start_at, stop_flag, interval_s) -> None:
    # Shared flags are plain shared-memory values, polled: a multiprocessing
    # Event would let a worker that dies while waiting block the parent's set().
    stop = asyncio.Event()
    gen_box: list[LoadGenerator] = []
    results.put(("ready", index, None))
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while start_at.value == 0.0:
        if stop_flag.value or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.01)

    async def report() -> None:
        while True:
            await asyncio.sleep(interval_s)
            if stop_flag.value:
                stop.set()
            if gen_box:
                results.put(("progress", index, gen_box[0].progress()))

    reporter = asyncio.get_running_loop().create_task(report())
    try:
        stats = await run_spec(spec, phase=index / count, start_at=start_at.value, stop=stop,
                               on_generator=gen_box.append)
    finally:
        reporter.cancel()
    results.put(("progress", index, gen_box[0].progress() if gen_box else {}))
    results.put(("result", index, stats))


class WorkerError(RuntimeError):
    """A worker process failed (message has its traceback's end)."""


def run_workers(spec: LoadSpec, workers: int, *, progress: Callable[[dict], None] | None = None,
                interval_s: float = 0.5, stop: threading.Event | None = None) -> LoadStats:
    """Run `spec` split over `workers` spawned processes; blocks; returns merged stats.

    progress: called about every `interval_s` seconds with the summed
    cumulative counters of all workers (see LoadGenerator.progress).
    stop: set it (from another thread) to end the run early.
    """
    if workers < 1:
        raise ValueError(f"workers: must be >= 1, got {workers}")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    stop_flag = ctx.RawValue("b", 0)
    start_at = ctx.RawValue("d", 0.0)
    share = spec.share(workers)
    procs = [ctx.Process(target=_worker_main, name=f"shadowgate-load-{k}",
                         args=(share, k, workers, results, start_at, stop_flag, interval_s),
                         daemon=True)
             for k in range(workers)]
    for p in procs:
        p.start()
    latest: dict[int, dict] = {}
    stats: dict[int, LoadStats] = {}
    ready = 0
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while ready < workers:
            kind, k, payload = _get(results, deadline, procs)
            if kind == "error":
                raise WorkerError(f"load worker {k} failed: {payload}")
            if kind == "ready":
                ready += 1
        # Everyone starts on the same instant, a little ahead so all are waiting.
        start_at.value = time.monotonic() + 0.2
        end = start_at.value + spec.warmup_s + spec.schedule.duration_s + spec.timeout_s + 30.0
        while len(stats) < workers:
            if stop is not None and stop.is_set():
                stop_flag.value = 1
            try:
                kind, k, payload = results.get(timeout=min(interval_s, 0.5))
            except queue_mod.Empty:
                if time.monotonic() > end or any(p.exitcode not in (None, 0) for p in procs):
                    dead = [p.name for p in procs if p.exitcode not in (None, 0)]
                    raise WorkerError(f"load workers did not finish (exited: {dead or 'none'})") from None
                continue
            if kind == "error":
                raise WorkerError(f"load worker {k} failed: {payload}")
            if kind == "progress":
                latest[k] = payload
                if progress is not None:
                    progress(_sum_progress(latest.values()))
            elif kind == "result":
                stats[k] = payload
    finally:
        stop_flag.value = 1
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    merged = stats[0]
    for k in range(1, workers):
        merged = merged.merge(stats[k], concurrent=True)
    return merged


def _get(results, deadline: float, procs):
    while True:
        try:
            return results.get(timeout=0.5)
        except queue_mod.Empty:
            if time.monotonic() > deadline:
                raise WorkerError("load workers did not start in time") from None
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise WorkerError(f"load worker {dead[0].name} exited with code {dead[0].exitcode}") from None


def _sum_progress(items) -> dict:
    out: dict = {}
    for d in items:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out
