"""Admission: which runs measure now (admitted) and which wait their turn (queued).

Why: Flagger counts every non-2xx answer of pre-rollout and rollout as a
failed check, and Argo every non-2xx answer as a measurement Error
(../shared/contracts.md). A refusal for Shadowgate's own reasons (all slots
taken, a model server's load budget spent, the loop running late) must
therefore happen where the caller *waits*: Flagger's confirm-rollout (and
confirm-traffic-increase / confirm-promotion) answer 412, Argo gets a 200
"continue" (Inconclusive) answer. Once admitted, a run keeps its slot until
it ends, so its pre-rollout and rollout never meet a capacity refusal.

The rules:

- Capacity is counted over ADMITTED runs (not live sessions):
  `server.max_sessions`, `server.max_sessions_per_analysis`,
  `server.max_sessions_per_namespace` (optional) and the planned requests/s
  per model server (`server.max_target_rate`, load and probes of every
  admitted run). A run is admitted when a slot is free and it fits.
- Per rollout namespace (isolation: one team cannot take what the others
  need), optional: `server.max_rate_per_namespace` (planned requests/s of
  its admitted runs, load and probes over every model server) and
  `server.max_connections_per_namespace` (outbound connections its admitted
  runs hold: see `planned_connections`). A run beyond its namespace's cap
  waits in the queue; the other namespaces' runs are admitted past it.
- A loop running later than `server.max_loop_lag_s` stops new admissions;
  it never evicts an admitted run.
- The queue is first come, first served with a per-namespace fair share:
  when a slot frees, the run admitted next is the oldest waiting run of
  the namespace that has the fewest admitted runs (ties: the oldest run).
  A waiting run that does not fit (its analysis at its cap, its model
  server's budget spent) is passed over, so it holds back no one else.
- A queued run not asked about for `server.admission_queue_ttl_s` leaves
  the queue (its controller gave up; it queues again at its next call). A
  run admitted from the queue while it was not calling (a slot freed by
  another run) is reserved for it for that long too.
- An admitted run gives its slot back when it ends (post-rollout, or
  promotion: its load stops), or when no call came for it for
  `server.admission_ttl()` (Argo has no end hook; a deleted Canary never
  calls again). A run that was admitted before (this process, or a
  previous one: it has measured windows) and calls again is admitted again
  at once, beyond the caps if need be: an admitted run is never sent back
  to the queue in the middle of its analysis.

Everything here is in memory, guarded by one lock, and O(queued runs) per
call; nothing waits on I/O. Timeline events go through callbacks that only
enqueue (webhook.sessions.SessionManager.event).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

# Runs remembered as once admitted (re-admitted at once when they call again); oldest forgotten first.
REMEMBER_ADMITTED = 10_000


@dataclass
class Entry:
    """One run known to admission: queued or admitted."""

    run_id: str
    namespace: str
    analysis: str
    rates: dict[str, float]  # planned requests/s per model server address
    seq: int  # arrival order (first call)
    first_seen: float  # monotonic
    last_seen: float  # monotonic: the run's newest call
    connections: int = 0  # outbound connections the run holds while it measures (planned_connections)
    admitted_at: float | None = None
    claimed: bool = True  # False: admitted from the queue while not calling; reserved for queue_ttl
    over_cap: bool = False  # admitted again beyond the caps (it had been admitted before)


@dataclass(frozen=True)
class Ticket:
    """A run's place: admitted, or queued with `ahead` runs to be admitted before it."""

    admitted: bool
    namespace: str = ""
    ahead: int = 0
    queued: int = 0  # runs waiting in all
    namespace_admitted: int = 0  # runs of this namespace holding a slot
    why: str = ""  # why the run waits (which limit), "" when admitted

    @property
    def position(self) -> int:
        """1 for the next run to be admitted; 0 when admitted."""
        return 0 if self.admitted else self.ahead + 1

    @property
    def reason(self) -> str:
        """One readable line: "queued: 3 ahead (namespace X has 2 admitted; <why>)"."""
        if self.admitted:
            return "admitted"
        return (f"queued: {self.ahead} ahead (namespace {self.namespace} has {self.namespace_admitted} admitted; "
                f"{self.why})")


@dataclass
class _Stats:
    admitted_by_ns: dict[str, int] = field(default_factory=dict)
    queued_by_ns: dict[str, int] = field(default_factory=dict)


class Admission:
    """Admitted and queued runs; see the module docstring for the rules.

    server: the ServerConfig (caps and TTLs are read at each call). metrics:
    webhook.metrics.Metrics or None. lag: seconds the session loop runs late
    now. on_admit(entry, waited_s) and on_leave(entry, why) are called under
    the lock (they must only enqueue, e.g. a timeline event). clock: monotonic
    seconds (tests pass their own).
    """

    def __init__(self, server: Any, metrics: Any = None, *, lag: Callable[[], float] = lambda: 0.0,
                 on_admit: Callable[[Entry, float], None] | None = None,
                 on_leave: Callable[[Entry, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.metrics = metrics
        self.lag = lag
        self.on_admit = on_admit
        self.on_leave = on_leave
        self.clock = clock
        self._lock = threading.Lock()
        self._admitted: dict[str, Entry] = {}
        self._queue: "OrderedDict[str, Entry]" = OrderedDict()  # arrival order
        self._ever: "OrderedDict[str, None]" = OrderedDict()
        self._seq = 0
        self._published: _Stats = _Stats()
        # Caches: every call asks for its place; the queue changes far less often than it is asked.
        self._version = 0  # bumped whenever the admitted set or the queue changes
        self._positions: dict[str, int] = {}
        self._positions_version = -1
        self._published_version = -1
        self._expired_at = float("-inf")

    # ------------------------------------------------------------ callers

    def request(self, run_id: str, namespace: str, analysis: str, rates: dict[str, float], *,
                resumed: bool = False, connections: int = 0) -> Ticket:
        """A call for `run_id`: admit it if it holds or gets a slot, else queue it (or keep its place).

        resumed: the run measured before (e.g. before a restart): admitted at once, beyond the caps
        if need be. connections: outbound connections the run will hold (planned_connections).
        """
        now = self.clock()
        with self._lock:
            if now - self._expired_at >= 1.0:  # at most once a second on the hooks' path (sweep() too)
                self._expire(now)
            e = self._admitted.get(run_id)
            if e is not None:
                e.last_seen, e.claimed = now, True
                return self._ticket(e)
            e = self._queue.get(run_id)
            if e is None:
                self._seq += 1
                e = Entry(run_id, namespace, analysis, dict(rates), self._seq, now, now, connections=connections)
                if resumed or run_id in self._ever:
                    over = self._problem(e, ignore_lag=True) is not None
                    self._admit(e, now, over_cap=over)
                    self._publish()
                    return self._ticket(e)
                self._queue[run_id] = e
                self._version += 1
                self._fill(now, caller=run_id)  # a queued run asking again changes nothing: no refill
            e.last_seen = now
            self._publish()
            return self._ticket(e)

    def touch(self, run_id: str) -> None:
        """A call for the run that admits nothing (an event): keeps its slot or its place alive."""
        now = self.clock()
        with self._lock:
            e = self._admitted.get(run_id) or self._queue.get(run_id)
            if e is not None:
                e.last_seen = now
                if e.admitted_at is not None:
                    e.claimed = True

    def holds(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._admitted

    def ticket(self, run_id: str) -> Ticket | None:
        """The run's place now (None if admission does not know it), admitting nobody."""
        with self._lock:
            e = self._admitted.get(run_id) or self._queue.get(run_id)
            return self._ticket(e) if e is not None else None

    def release(self, run_id: str, why: str = "ended") -> None:
        """The run ended (or no longer needs its capacity): its slot goes to the next run."""
        now = self.clock()
        with self._lock:
            e = self._admitted.pop(run_id, None)
            q = self._queue.pop(run_id, None)
            self._ever.pop(run_id, None)
            if e is not None or q is not None:
                self._version += 1
            if e is not None:
                self._left(e, why)
                self._fill(now)
            elif q is not None:
                self._left(q, why)
            self._publish()

    def sweep(self) -> None:
        """Expire silent runs and admit what now fits (e.g. the loop caught up); called every few seconds."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            self._fill(now)
            self._publish()

    def rate_problem(self, run_id: str, rates: dict[str, float]) -> str | None:
        """Why the admitted run may not move to `rates` (requests/s per address); None: it may."""
        limit = self.server.max_target_rate
        with self._lock:
            mine = self._admitted.get(run_id)
            used = self._used_rates()
            for address, r in rates.items():
                total = used.get(address, 0.0) - (mine.rates.get(address, 0.0) if mine else 0.0) + r
                if total > limit:
                    return f"model server {address} would get {total:.0f} req/s, server.max_target_rate is {limit:g}"
            cap = getattr(self.server, "max_rate_per_namespace", None)
            if cap is not None and mine is not None:
                total = self._namespace_rate(mine.namespace) - sum(mine.rates.values()) + sum(rates.values())
                if total > cap:
                    return (f"namespace {mine.namespace} would plan {total:.0f} req/s, "
                            f"server.max_rate_per_namespace is {cap:g}")
        return None

    def set_rates(self, run_id: str, rates: dict[str, float]) -> None:
        with self._lock:
            e = self._admitted.get(run_id)
            if e is not None:
                e.rates = dict(rates)
                self._version += 1

    def used_rates(self) -> dict[str, float]:
        """Planned requests/s per model server address over the admitted runs."""
        with self._lock:
            return self._used_rates()

    def counts(self) -> tuple[int, int]:
        """(admitted, queued)."""
        with self._lock:
            return len(self._admitted), len(self._queue)

    def snapshot(self) -> dict[str, Any]:
        """For tests and the runs API: admitted and queued run ids, the queue in admission order."""
        with self._lock:
            return {"admitted": list(self._admitted), "queued": [e.run_id for e in self._order()]}

    # ------------------------------------------------------------ under the lock

    def _ticket(self, e: Entry) -> Ticket:
        ns_admitted = sum(1 for x in self._admitted.values() if x.namespace == e.namespace)
        if e.run_id in self._admitted:
            return Ticket(True, e.namespace, 0, len(self._queue), ns_admitted)
        if self._positions_version != self._version:
            self._positions = {x.run_id: i for i, x in enumerate(self._order())}
            self._positions_version = self._version
        ahead = self._positions.get(e.run_id, len(self._queue))
        why = self._problem(e) or "waiting for the runs ahead"
        return Ticket(False, e.namespace, ahead, len(self._queue), ns_admitted, why)

    def _used_rates(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for x in self._admitted.values():
            for address, r in x.rates.items():
                used[address] = used.get(address, 0.0) + r
        return used

    def _problem(self, e: Entry, *, ignore_lag: bool = False) -> str | None:
        """Why `e` cannot be admitted now (None: it can)."""
        srv = self.server
        if len(self._admitted) >= srv.max_sessions:
            return f"{len(self._admitted)} of {srv.max_sessions} slots taken (server.max_sessions)"
        same = sum(1 for x in self._admitted.values() if x.analysis == e.analysis)
        if same >= srv.max_sessions_per_analysis:
            return (f"{same} runs of analysis {e.analysis} admitted, server.max_sessions_per_analysis is "
                    f"{srv.max_sessions_per_analysis}")
        cap = getattr(srv, "max_sessions_per_namespace", None)
        if cap is not None:
            mine = sum(1 for x in self._admitted.values() if x.namespace == e.namespace)
            if mine >= cap:
                return f"{mine} runs of namespace {e.namespace} admitted, server.max_sessions_per_namespace is {cap}"
        why = self._namespace_problem(e)
        if why is not None:
            return why
        used = self._used_rates()
        for address, r in e.rates.items():
            if r > srv.max_target_rate:
                return (f"its planned load alone ({r:.0f} req/s on {address}) exceeds server.max_target_rate "
                        f"({srv.max_target_rate:g}): it can never start; lower load.rate or raise the limit")
            if used.get(address, 0.0) + r > srv.max_target_rate:
                return (f"model server {address} would get {used.get(address, 0.0) + r:.0f} req/s, "
                        f"server.max_target_rate is {srv.max_target_rate:g}")
        if not ignore_lag:
            lag = self.lag()
            if lag > srv.max_loop_lag_s:
                return (f"Shadowgate's loop runs {1000 * lag:.0f} ms late (server.max_loop_lag_s is "
                        f"{1000 * srv.max_loop_lag_s:.0f} ms): no new run until it catches up")
        return None

    def _namespace_rate(self, namespace: str) -> float:
        return sum(sum(x.rates.values()) for x in self._admitted.values() if x.namespace == namespace)

    def _namespace_problem(self, e: Entry) -> str | None:
        """Why `e` would take more than its namespace's share of the load budget or of the connections."""
        srv = self.server
        cap = getattr(srv, "max_rate_per_namespace", None)
        if cap is not None:
            mine = sum(e.rates.values())
            if mine > cap:
                return (f"its planned load alone ({mine:.0f} req/s) exceeds server.max_rate_per_namespace ({cap:g}): "
                        "it can never start; lower load.rate or raise the limit")
            used = self._namespace_rate(e.namespace)
            if used + mine > cap:
                return (f"namespace {e.namespace} would plan {used + mine:.0f} req/s, "
                        f"server.max_rate_per_namespace is {cap:g}")
        cap = getattr(srv, "max_connections_per_namespace", None)
        if cap is not None:
            if e.connections > cap:
                return (f"its {e.connections} planned connections alone exceed "
                        f"server.max_connections_per_namespace ({cap}): it can never start")
            used = sum(x.connections for x in self._admitted.values() if x.namespace == e.namespace)
            if used + e.connections > cap:
                return (f"namespace {e.namespace} would hold {used + e.connections} outbound connections, "
                        f"server.max_connections_per_namespace is {cap}")
        return None

    def _order(self) -> Iterator[Entry]:
        """The queue in admission order: per-namespace fair share, then arrival."""
        counts: dict[str, int] = defaultdict(int)
        for x in self._admitted.values():
            counts[x.namespace] += 1
        by_ns: dict[str, list[Entry]] = defaultdict(list)
        for x in self._queue.values():  # arrival order
            by_ns[x.namespace].append(x)
        heap = [(counts[ns], xs[0].seq, ns) for ns, xs in by_ns.items()]
        heapq.heapify(heap)
        nxt = {ns: 0 for ns in by_ns}
        while heap:
            c, _, ns = heapq.heappop(heap)
            xs = by_ns[ns]
            yield xs[nxt[ns]]
            nxt[ns] += 1
            if nxt[ns] < len(xs):
                heapq.heappush(heap, (c + 1, xs[nxt[ns]].seq, ns))

    def _fill(self, now: float, caller: str | None = None) -> None:
        """Admit waiting runs in fair order while they fit."""
        while self._queue:
            if len(self._admitted) >= self.server.max_sessions:
                return
            if self.lag() > self.server.max_loop_lag_s:
                return
            pick = next((x for x in self._order() if self._problem(x, ignore_lag=True) is None), None)
            if pick is None:
                return
            del self._queue[pick.run_id]
            self._version += 1
            self._admit(pick, now, claimed=pick.run_id == caller)

    def _admit(self, e: Entry, now: float, *, claimed: bool = True, over_cap: bool = False) -> None:
        e.admitted_at, e.claimed, e.over_cap = now, claimed, over_cap
        self._admitted[e.run_id] = e
        self._version += 1
        self._ever[e.run_id] = None
        self._ever.move_to_end(e.run_id)
        while len(self._ever) > REMEMBER_ADMITTED:
            self._ever.popitem(last=False)
        waited = max(0.0, now - e.first_seen)
        if self.metrics is not None:
            self.metrics.admission_waited.observe(waited)
        if self.on_admit is not None:
            self.on_admit(e, waited)

    def _left(self, e: Entry, why: str) -> None:
        if self.metrics is not None:
            self.metrics.admission_left.labels(why).inc()
        if self.on_leave is not None:
            self.on_leave(e, why)

    def _expire(self, now: float) -> None:
        self._expired_at = now
        qttl = self.server.admission_queue_ttl_s
        attl = self.server.admission_ttl()
        for e in [x for x in self._queue.values() if now - x.last_seen > qttl]:
            del self._queue[e.run_id]
            self._version += 1
            self._left(e, "queue_ttl")
        freed = False
        for e in list(self._admitted.values()):
            silent = now - e.last_seen
            if (not e.claimed and silent > qttl) or silent > attl:
                del self._admitted[e.run_id]
                self._version += 1
                self._left(e, "unclaimed" if not e.claimed else "admission_ttl")
                freed = True
        if freed:
            self._fill(now)

    def _publish(self) -> None:
        """Per-namespace gauges; a namespace's series goes when it has no run left (bounded by live runs)."""
        if self.metrics is None or self._published_version == self._version:
            return
        self._published_version = self._version
        stats = _Stats()
        for x in self._admitted.values():
            stats.admitted_by_ns[x.namespace] = stats.admitted_by_ns.get(x.namespace, 0) + 1
        for x in self._queue.values():
            stats.queued_by_ns[x.namespace] = stats.queued_by_ns.get(x.namespace, 0) + 1
        for gauge, new, old in ((self.metrics.admission_admitted, stats.admitted_by_ns,
                                 self._published.admitted_by_ns),
                                (self.metrics.admission_queued, stats.queued_by_ns, self._published.queued_by_ns)):
            for ns, n in new.items():
                gauge.labels(ns).set(n)
            for ns in set(old) - set(new):
                try:
                    gauge.remove(ns)
                except KeyError:
                    pass
        self.metrics.usage.labels("admitted").set(len(self._admitted))
        self.metrics.usage.labels("queued").set(len(self._queue))
        self._published = stats


def planned_connections(config: Any) -> int:
    """Outbound connections one run of an analysis (webhook.config.AnalysisConfig) holds while it measures.

    Per version: the prober's client (gRPC: one HTTP/2 connection; REST: up to 16, the golden-set
    burst's concurrency) and, when that version is loaded, the load sender's (gRPC: load.connections;
    REST: up to load.concurrency). The canary check's two short-lived clients are not counted.
    """
    n = 0
    for version in ("stable", "canary"):
        grpc = getattr(config, version).protocol == "tfserving-grpc"
        n += 1 if grpc else 16
        if (config.load.rate > 0 or config.load.schedule) and (config.load.targets == "both" or version == "canary"):
            n += config.load.connections if grpc else config.load.concurrency
    return n
