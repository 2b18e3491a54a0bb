"""Replicas sharing one PostgreSQL store: which replica measures which run.

With `server.store: postgresql://...` any number of `shadowgate serve`
processes share the store, and any of them answers any hook for any run.
Exactly one measures a live run (sends its load and probes, closes its
windows): the one holding the run's **lease**, a row in the store (owner,
expiry by the database's clock). This module is one replica's side of it:

- every `tick_s` (a quarter of the lease TTL) a background thread writes
  this replica's heartbeat, renews the leases of the runs it measures
  (learning for each when a hook last called on any replica, and what hooks
  on other replicas asked of it: a new stage, a rate, finality), and claims
  the runs whose lease is free: never claimed, given back by a replica that
  stopped, or expired because its owner died;
- a free run is claimed by the least-loaded live replica (fewest live
  leases, ties by id); once it has been free for `grace_s` (two ticks), by
  any replica. A new run's first measuring hook asks for a lease and
  claims it at once if the receiving replica is the least loaded;
- a replica that cannot renew stops the sessions whose lease is about to
  expire (a quarter TTL before, by its own monotonic clock), and one that
  finds a lease gone or taken stops that session at once, so two replicas
  never load the same canary; a window is stored only while its writer
  holds the lease (webhook/store/postgres.py), so none is stored twice;
- a hook on a replica that does not measure the run reads the run's
  decision from the store (`RemoteSession`) and passes its changes on
  through the store.

Timing: a dead owner's runs are claimed within TTL + 3 ticks (1.75 TTL);
the default TTL is half the shortest analysis interval (at least 1 s), so a
run resumes on another replica within one interval. With SQLite there is
one process and none of this runs.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from .store import Store

if TYPE_CHECKING:  # pragma: no cover
    from .sessions import Session, SessionManager

log = logging.getLogger(__name__)

MIN_TTL_S = 1.0
MAX_TTL_S = 30.0


def replica_id() -> str:
    """This process' name among the replicas: the host (the pod's name in Kubernetes), pid and a nonce,
    so a restarted container is a new replica whose predecessor's leases simply expire."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(2)}"


def lease_ttl(settings: Any) -> float:
    """Seconds a lease lasts without renewal: server.lease_ttl_s, or half the shortest analysis interval
    (1 to 30 s), so a dead replica's runs resume elsewhere within one interval."""
    srv = settings.server
    if getattr(srv, "lease_ttl_s", None):
        return float(srv.lease_ttl_s)
    shortest = min([a.interval_s for a in settings.analyses.values()] or [srv.interval_s])
    return min(MAX_TTL_S, max(MIN_TTL_S, shortest / 2))


class RemoteSession:
    """A run measured by another replica, as a hook on this one sees it.

    Its decision is the one stored with the owner's newest window; what a hook changes (a stage, a rate,
    finality) goes to the owner through the store (`Store.request`), applied at its next renewal.
    """

    remote = True
    stopped = False
    idle = False

    def __init__(self, manager: "SessionManager", run: Any, owner: str | None) -> None:
        self.manager, self.run, self.owner = manager, run, owner
        self.analysis = manager.settings.analyses[run.analysis]
        self.rate_override: float | None = None
        self._final = None

    def touch(self) -> None:
        """A controller called: the owner's idle clock restarts."""
        try:
            self.manager.store.touch_run(self.run.id)
        except Exception:  # a hook never fails on this: the owner may go idle a little early
            log.warning("run %s: recording the call for its owner failed", self.run.id, exc_info=True)

    def decision(self) -> Any:
        return self._final if self._final is not None else self.manager.stored_decision(self.run)

    def start_stage(self, label: str) -> bool:
        self.manager.store.request(self.run.id, "stage", label)
        return True

    def finalize(self) -> Any:
        """A caller was told to promote: the stored decision is final now (later windows of the owner do
        not replace it, webhook/store/postgres.py), and the owner freezes its gate state at its next renewal."""
        v = dict(self.run.verdict or {})
        v["final"] = True
        self.manager.store.update_run(self.run.id, verdict=v)
        self.manager.store.request(self.run.id, "final")
        self.run.verdict = v
        self._final = self.manager.stored_decision(self.run)
        return self._final


class Replicas:
    """This replica's heartbeat, lease renewals and claims (a daemon thread), and the fence that stops a
    session whose lease could not be renewed in time (a second thread, no I/O)."""

    def __init__(self, manager: "SessionManager", store: Store, ttl_s: float, replica: str | None = None) -> None:
        self.manager = manager
        self.store = store
        self.id = replica or replica_id()
        self.ttl_s = ttl_s
        self.tick_s = ttl_s / 4
        self.grace_s = 2 * self.tick_s
        self._valid: dict[str, float] = {}  # run -> monotonic time its lease surely lasts until
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.claims = 0  # runs this replica claimed (for tests and logs)
        store.lease_ttl_s = ttl_s  # each stored window extends its writer's lease too

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "Replicas":
        self.store.heartbeat(self.id, 0, self.ttl_s)  # live before the first hook may claim
        for target, name in ((self._loop, "replica-leases"), (self._fence, "replica-fence")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("replica %s: lease TTL %.1f s, renewed every %.2f s", self.id, self.ttl_s, self.tick_s)
        return self

    def stop(self) -> None:
        """No more claims or renewals; this replica's heartbeat goes, so the others take its runs over at
        once (the sessions give their leases back as they stop: SessionManager.shutdown)."""
        self._stop.set()
        for t in self._threads:
            t.join(max(5.0, 2 * self.tick_s))
        try:
            self.store.leave(self.id)
        except Exception:
            log.warning("replica %s: leaving the store failed (its heartbeat expires)", self.id, exc_info=True)

    # ------------------------------------------------------------ a hook wants the run measured

    def acquire(self, run: Any) -> tuple[bool, str | None]:
        """(True, id) when this replica now holds the run's lease; else (False, owner or None: no owner yet,
        the least-loaded replica claims it within a tick)."""
        lease = self.store.lease(run.id)
        if lease is None:
            self.store.want_run(run.id)
        elif lease.live and lease.owner != self.id:
            self.store.touch_run(run.id)
            return False, lease.owner
        sent = time.monotonic()
        if self.store.claim_run(run.id, self.id, self.ttl_s, grace_s=self.grace_s):
            self._held(run.id, sent)
            return True, self.id
        self.store.touch_run(run.id)
        return False, None

    def _held(self, run_id: str, sent: float) -> None:
        with self._lock:
            self._valid[run_id] = sent + self.ttl_s
        self.claims += 1

    def valid(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._valid

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._valid.pop(run_id, None)

    # ------------------------------------------------------------ background

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception:
                log.warning("replica %s: lease renewal failed", self.id, exc_info=True)

    def tick(self) -> None:
        """Heartbeat, renew what this replica measures (stopping what it lost), apply the other replicas'
        requests, then claim free runs."""
        owned = self.manager.owned()
        sent = time.monotonic()
        self.store.heartbeat(self.id, len(owned), self.ttl_s)
        renewed = self.store.renew_leases(self.id, list(owned), self.ttl_s)
        for run_id, s in owned.items():
            r = renewed.get(run_id)
            if r is None:
                self.forget(run_id)
                self.manager.lost(s, "its lease was taken over or ended")
                continue
            with self._lock:
                self._valid[run_id] = sent + self.ttl_s
            s.last_call = max(s.last_call, time.monotonic() - r.since_call_s)
            if r.since_call_s < 2 * self.ttl_s:  # a hook called it (somewhere): its admission slot stays
                self.manager.admission.touch(run_id)
            for kind, arg in r.requests:
                self.manager.apply_request(s, kind, arg)
        if self._stop.is_set():
            return
        for run_id in self.store.claimable():
            if self._stop.is_set() or self.manager.live(run_id) is not None:
                continue
            sent = time.monotonic()
            if self.store.claim_run(run_id, self.id, self.ttl_s, grace_s=self.grace_s):
                self._held(run_id, sent)
                self.manager.resume_claimed(run_id)

    def _fence(self) -> None:
        """Stop a session a quarter TTL before its lease may expire unrenewed (the database unreachable,
        this process starved): by then another replica may claim it, and load must never be sent twice."""
        margin = self.tick_s
        while not self._stop.wait(self.tick_s / 2):
            now = time.monotonic()
            with self._lock:
                due = [r for r, until in self._valid.items() if now > until - margin]
                for r in due:
                    del self._valid[r]
            for run_id in due:
                s = self.manager.live(run_id)
                if s is not None:
                    self.manager.lost(s, f"its lease could not be renewed for {self.ttl_s - margin:.1f} s")
