"""The shared store: one PostgreSQL database for any number of replicas.

`server.store: postgresql://user:pass@host:port/db`. The tables are
SQLite's (runs, windows, checks, timeline, timeline_archive: the same
records, the same compressed verdicts and summaries, the same retention)
plus three that let replicas share the work (webhook/replicas.py drives them):

- `leases`: one row per run that should be measured. `owner` is the replica
  measuring it (NULL: waiting for one to claim it) until `expires_at`; the
  owner renews it a few times per lease period. `last_call_at` is when a
  hook last called for the run on any replica (the owner's idle clock).
- `replicas`: one heartbeat row per live replica (expires like a lease).
- `run_requests`: changes a hook on another replica asks of the run's owner
  (a new stage, a load rate, finality), applied by the owner at its next
  renewal, in order.

Lease times are the database's clock (`clock_timestamp()`), so the
replicas' clocks need not agree. A window is stored only in a transaction
that finds the writer still holding the run's lease (row locked) and the
run not ended, and (run_id, seq) is the primary key: a window is never
stored twice, and a replica that lost its lease learns it from `LeaseLost`.

Deadlines: every connection has connect_timeout (5 s unless the URL says),
statement_timeout 5 s, lock_timeout 2 s, TCP keepalives and
tcp_user_timeout, so no call waits on a dead database for long; a pool of
a few connections, each used by one thread at a time, waits at most
`pool_wait_s` for a free one. psycopg (v3) is imported when the store is
opened, never by SQLite users.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any, Callable, Iterator

from .base import (FINAL_STATUSES, RUN_STATUSES, STOPPED_STATUSES, TABLES, Lease, LeaseLost, Renewal, RunRecord,
                   StoredWindow, StoreUnavailable, _default_summarizer, _num, load_json, pack_json, summarize_rows)

log = logging.getLogger(__name__)

# The database's clock, unix seconds (EXTRACT gives numeric: float8 for the driver).
_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::float8"
# Held while the schema is created: replicas starting together must not race on CREATE TABLE.
_SCHEMA_LOCK = 0x5348_4457  # "SHDW"

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, analysis TEXT NOT NULL, caller TEXT NOT NULL, namespace TEXT NOT NULL,
        name TEXT NOT NULL, revision TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
        verdict TEXT, state BYTEA, compacted_at DOUBLE PRECISION,
        UNIQUE (caller, analysis, namespace, name, revision, attempt))""",
    "CREATE INDEX IF NOT EXISTS runs_by_time ON runs (updated_at)",
    "CREATE INDEX IF NOT EXISTS runs_to_compact ON runs (updated_at) WHERE compacted_at IS NULL",
    """CREATE TABLE IF NOT EXISTS windows (
        run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, ended_at DOUBLE PRECISION NOT NULL,
        verdict BYTEA, data BYTEA, summary BYTEA, PRIMARY KEY (run_id, seq))""",
    """CREATE TABLE IF NOT EXISTS checks (
        run_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, verdict TEXT,
        stable DOUBLE PRECISION, canary DOUBLE PRECISION, difference DOUBLE PRECISION, p_value DOUBLE PRECISION,
        critical INTEGER, reason TEXT, PRIMARY KEY (run_id, seq, name))""",
    """CREATE TABLE IF NOT EXISTS timeline (
        id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL,
        message TEXT NOT NULL, data TEXT)""",
    "CREATE INDEX IF NOT EXISTS timeline_by_run ON timeline (run_id, ts, id)",
    """CREATE TABLE IF NOT EXISTS timeline_archive (
        run_id TEXT PRIMARY KEY, events BYTEA NOT NULL, n INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS leases (
        run_id TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE, owner TEXT,
        expires_at DOUBLE PRECISION NOT NULL, last_call_at DOUBLE PRECISION NOT NULL,
        epoch BIGINT NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS leases_by_owner ON leases (owner)",
    """CREATE TABLE IF NOT EXISTS replicas (
        id TEXT PRIMARY KEY, started_at DOUBLE PRECISION NOT NULL, heartbeat_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL, live_runs INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS run_requests (
        id BIGSERIAL PRIMARY KEY, run_id TEXT NOT NULL, kind TEXT NOT NULL, arg TEXT NOT NULL DEFAULT '',
        at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS run_requests_by_run ON run_requests (run_id, id)",
]

SHARED_TABLES = ("leases", "replicas", "run_requests")
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 5000
LOCK_TIMEOUT_MS = 2000


class StoreBusy(Exception):
    """No database connection became free within the pool's wait."""


def connection_info(url: str, *, application_name: str = "shadowgate") -> str:
    """libpq connection string of `url` with the service's deadlines added (the URL's own win)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    given = conninfo_to_dict(url)
    extra: dict[str, Any] = {
        "connect_timeout": str(CONNECT_TIMEOUT_S),
        "application_name": application_name,
        # A dead peer is noticed within seconds, not after the kernel's two hours.
        "keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3",
        "tcp_user_timeout": "10000",
    }
    extra = {k: v for k, v in extra.items() if k not in given}
    opts = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS}" \
           " -c idle_in_transaction_session_timeout=30000"
    extra["options"] = (given.get("options", "") + " " + opts).strip()
    return make_conninfo(url, **extra)


class _Pool:
    """A few autocommit connections, each used by one thread at a time; a broken one is dropped."""

    def __init__(self, conninfo: str, size: int, wait_s: float) -> None:
        import psycopg

        self._psycopg = psycopg
        self._conninfo = conninfo
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._wait_s = wait_s
        self.closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        if self.closed:
            raise self._psycopg.InterfaceError("the store is closed")
        if not self._slots.acquire(timeout=self._wait_s):
            raise StoreBusy(f"no database connection free within {self._wait_s:g} s")
        conn = None
        try:
            with self._lock:
                while self._idle and conn is None:
                    c = self._idle.pop()
                    conn = None if c.closed else c
            if conn is None:
                conn = self._psycopg.connect(self._conninfo, autocommit=True)
            try:
                yield conn
            except (self._psycopg.OperationalError, self._psycopg.InterfaceError):
                conn.close()  # the server went away or the connection broke: never reuse it
                raise
        finally:
            if conn is not None and not conn.closed:
                idle = conn.info.transaction_status == self._psycopg.pq.TransactionStatus.IDLE
                if idle and not self.closed:
                    with self._lock:
                        self._idle.append(conn)
                else:
                    conn.close()
            self._slots.release()

    def close(self) -> None:
        self.closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()


class PostgresStore:
    """Runs, windows and timelines in PostgreSQL, shared by replicas; leases say who measures a run."""

    shared = True

    def __init__(self, url: str, *, summarize: Callable[..., dict[str, Any]] | None = None, pool_size: int = 8,
                 pool_wait_s: float = 5.0) -> None:
        self.path = None  # not a file: reports read through the store (reporting.source)
        self._conninfo = connection_info(url)
        self._pool = _Pool(self._conninfo, pool_size, pool_wait_s)
        self.compact_on_finish = False
        self.keep_raw_windows: int | None = None
        self.windows_compacted = 0
        # Set by the replica coordinator: each stored window extends the writer's lease by this much.
        self.lease_ttl_s: float | None = None
        self._summarize = summarize or _default_summarizer
        try:
            with self._tx() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for stmt in _SCHEMA:
                    cur.execute(stmt)
        except Exception as exc:  # refused, timed out, bad credentials: one clean line, no secret in it
            from ..redact import exception_text, redact_url, url_secrets

            self._pool.close()
            raise StoreUnavailable(f"cannot open the store {redact_url(url)}: "
                                   f"{exception_text(exc, url_secrets(url))}") from None

    # -- plumbing

    def _retrying(self, fn: Callable[[Any], Any]) -> Any:
        """fn(connection); once more on a fresh connection if a pooled one turned out broken (a restarted
        server closes idle connections: the first use finds out)."""
        import psycopg

        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn:
                    return fn(conn)
            except psycopg.OperationalError:
                if attempt == 2 or self._pool.closed:
                    raise

    def _all(self, sql: str, args: Any = ()) -> list[tuple]:
        def run(conn):
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else []
        return self._retrying(run)

    def _one(self, sql: str, args: Any = ()) -> tuple | None:
        rows = self._all(sql, args)
        return rows[0] if rows else None

    def _exec(self, sql: str, args: Any = ()) -> int:
        def run(conn):
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.rowcount
        return self._retrying(run)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        """A cursor in one transaction (committed at the end, rolled back on an exception)."""
        with self._pool.connection() as conn:
            with conn.transaction():
                with conn.cursor() as cur:
                    yield cur

    def set_raw_policy(self, *, compact_on_finish: bool, keep_raw_windows: int | None) -> None:
        """As SQLiteStore.set_raw_policy."""
        if keep_raw_windows is not None and keep_raw_windows < 1:
            raise ValueError("keep_raw_windows: at least 1 (the newest window's figures), or None")
        self.compact_on_finish = bool(compact_on_finish)
        self.keep_raw_windows = keep_raw_windows

    # -- runs

    _COLS = ("id, analysis, caller, namespace, name, revision, attempt, status, created_at, updated_at, verdict, "
             "state, (SELECT COUNT(*) FROM windows w WHERE w.run_id = r.id) AS nwin")

    @staticmethod
    def _run(r: tuple) -> RunRecord:
        return RunRecord(id=r[0], analysis=r[1], caller=r[2], namespace=r[3], name=r[4], revision=r[5],
                         attempt=r[6], status=r[7], created_at=r[8], updated_at=r[9],
                         verdict=json.loads(r[10]) if r[10] else None, windows=int(r[12]),
                         state=load_json(r[11]) if r[11] is not None else None)

    def create_run(self, run: RunRecord) -> None:
        self._exec("INSERT INTO runs (id, analysis, caller, namespace, name, revision, attempt, status, created_at,"
                   " updated_at, verdict) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                   (run.id, run.analysis, run.caller, run.namespace, run.name, run.revision, run.attempt,
                    run.status, run.created_at, run.updated_at,
                    json.dumps(run.verdict) if run.verdict is not None else None))

    def get_run(self, run_id: str) -> RunRecord | None:
        r = self._one(f"SELECT {self._COLS} FROM runs r WHERE r.id = %s", (run_id,))
        return self._run(r) if r else None

    def find_run(self, caller: str, analysis: str, namespace: str, name: str, revision: str) -> RunRecord | None:
        """The latest attempt of this rollout, or None."""
        r = self._one(f"SELECT {self._COLS} FROM runs r WHERE caller=%s AND analysis=%s AND namespace=%s AND name=%s"
                      " AND revision=%s ORDER BY attempt DESC LIMIT 1", (caller, analysis, namespace, name, revision))
        return self._run(r) if r else None

    def list_runs(self, analysis: str | None = None, status: str | None = None, limit: int = 100) -> list[RunRecord]:
        where, args = [], []
        if analysis is not None:
            where.append("analysis = %s")
            args.append(analysis)
        if status is not None:
            where.append("status = %s")
            args.append(status)
        sql = f"SELECT {self._COLS} FROM runs r" + (" WHERE " + " AND ".join(where) if where else "")
        return [self._run(r) for r in self._all(sql + " ORDER BY updated_at DESC LIMIT %s", (*args, int(limit)))]

    def update_run(self, run_id: str, *, status: str | None = None, verdict: dict[str, Any] | None = None,
                   state: dict[str, Any] | None = None) -> None:
        sets, args = ["updated_at = %s", "compacted_at = NULL"], [time.time()]
        if state is not None:
            sets.append("state = %s")
            args.append(pack_json(state))
        if status is not None:
            if status not in RUN_STATUSES:
                raise ValueError(f"unknown run status {status!r}")
            sets.append("status = %s")
            args.append(status)
        if verdict is not None:
            sets.append("verdict = %s")
            args.append(json.dumps(verdict))
        self._exec(f"UPDATE runs SET {', '.join(sets)} WHERE id = %s", (*args, run_id))
        if status in FINAL_STATUSES and self.compact_on_finish:
            self._compact_quietly(run_id)

    # -- windows and their checks

    def add_window(self, window: StoredWindow, *, owner: str | None = None, state: dict[str, Any] | None = None,
                   run_verdict: dict[str, Any] | None = None) -> None:
        """Store a window with the run's new state and verdict, in one transaction.

        With `owner`: only while `owner` holds the run's lease (row locked until commit) and the run has not
        ended; the lease is extended by `lease_ttl_s`; a window of that seq stored already is refused (never
        replaced). LeaseLost otherwise, and nothing is stored. Without: as SQLite (one process), a window
        of the same seq is replaced.
        """
        import psycopg

        checks = [c for c in (window.verdict or {}).get("checks") or [] if isinstance(c, dict) and "name" in c]
        verdict = pack_json(window.verdict) if window.verdict is not None else None
        summary = pack_json(window.raw_summary) if window.raw_summary is not None else None
        try:
            with self._tx() as cur:
                if owner is not None:
                    cur.execute(f"SELECT 1 FROM leases WHERE run_id = %s AND owner = %s AND expires_at > {_NOW}"
                                " FOR UPDATE", (window.run_id, owner))
                    if cur.fetchone() is None:
                        raise LeaseLost(f"run {window.run_id}: {owner} no longer holds its lease")
                    cur.execute("SELECT status FROM runs WHERE id = %s FOR UPDATE", (window.run_id,))
                    row = cur.fetchone()
                    if row is None or row[0] in STOPPED_STATUSES:
                        raise LeaseLost(f"run {window.run_id} ended: no more windows")
                    if self.lease_ttl_s:
                        cur.execute(f"UPDATE leases SET expires_at = GREATEST(expires_at, {_NOW} + %s)"
                                    " WHERE run_id = %s", (self.lease_ttl_s, window.run_id))
                conflict = "" if owner is not None else (
                    " ON CONFLICT (run_id, seq) DO UPDATE SET kind = EXCLUDED.kind, started_at = EXCLUDED.started_at,"
                    " ended_at = EXCLUDED.ended_at, verdict = EXCLUDED.verdict, data = EXCLUDED.data,"
                    " summary = EXCLUDED.summary")
                cur.execute("INSERT INTO windows (run_id, seq, kind, started_at, ended_at, verdict, data, summary)"
                            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s)" + conflict,
                            (window.run_id, window.seq, window.kind, window.started_at, window.ended_at, verdict,
                             window.data, summary))
                if checks:
                    cur.executemany(
                        "INSERT INTO checks (run_id, seq, name, verdict, stable, canary, difference, p_value,"
                        " critical, reason) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (run_id, seq, name)"
                        " DO UPDATE SET verdict = EXCLUDED.verdict, stable = EXCLUDED.stable,"
                        " canary = EXCLUDED.canary, difference = EXCLUDED.difference, p_value = EXCLUDED.p_value,"
                        " critical = EXCLUDED.critical, reason = EXCLUDED.reason",
                        [(window.run_id, window.seq, str(c["name"]), c.get("verdict"), _num(c.get("stable")),
                          _num(c.get("canary")), _num(c.get("difference")), _num(c.get("p_value")),
                          int(bool(c.get("critical"))), c.get("reason")) for c in checks])
                sets, args = ["updated_at = %s", "compacted_at = NULL"], [time.time()]
                if state is not None:
                    sets.append("state = %s")
                    args.append(pack_json(state))
                if run_verdict is not None:
                    # A decision made final on another replica (a caller was told to promote) stays final.
                    sets.append("verdict = CASE WHEN verdict IS NOT NULL AND (verdict::jsonb ->> 'final') = 'true'"
                                " THEN verdict ELSE %s END")
                    args.append(json.dumps(run_verdict))
                cur.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = %s RETURNING status, state IS NOT NULL",
                            (*args, window.run_id))
                row = cur.fetchone()
        except psycopg.errors.UniqueViolation:
            raise LeaseLost(f"run {window.run_id}: window {window.seq} was stored already") from None
        if row is None or window.data is None:
            return
        if row[0] in FINAL_STATUSES:
            if self.compact_on_finish:
                self._compact_quietly(window.run_id)
        elif self.keep_raw_windows is not None and row[1]:
            try:
                self._drop_raw(window.run_id, keep=self.keep_raw_windows)
            except Exception:  # never the window's cost: the next retention pass tries again
                log.exception("run %s: dropping raw data of older windows", window.run_id)

    def windows(self, run_id: str, with_data: bool = False) -> list[StoredWindow]:
        """The run's windows in order; with_data: with their raw data and summaries."""
        cols = "run_id, seq, kind, started_at, ended_at, verdict" + (", data, summary" if with_data else "")
        rows = self._all(f"SELECT {cols} FROM windows WHERE run_id = %s ORDER BY seq", (run_id,))
        return [StoredWindow(run_id=r[0], seq=r[1], kind=r[2], started_at=r[3], ended_at=r[4],
                             verdict=load_json(r[5]),
                             data=bytes(r[6]) if with_data and r[6] is not None else None,
                             raw_summary=load_json(r[7]) if with_data else None) for r in rows]

    # -- timeline

    def add_event(self, run_id: str, kind: str, message: str, data: dict[str, Any] | None = None,
                  ts: float | None = None) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO timeline (run_id, ts, kind, message, data) VALUES (%s,%s,%s,%s,%s)",
                        (run_id, time.time() if ts is None else ts, kind, message,
                         json.dumps(data) if data else None))
            cur.execute("UPDATE runs SET compacted_at = NULL WHERE id = %s AND compacted_at IS NOT NULL", (run_id,))

    def timeline(self, run_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._all("SELECT ts, kind, message, data FROM timeline WHERE run_id = %s ORDER BY ts, id LIMIT %s",
                         (run_id, int(limit)))
        events = [{"ts": r[0], "kind": r[1], "message": r[2], "data": json.loads(r[3]) if r[3] else None}
                  for r in rows]
        row = self._one("SELECT events FROM timeline_archive WHERE run_id = %s", (run_id,))
        if row is None:
            return events
        old = [{"ts": e[0], "kind": e[1], "message": e[2], "data": e[3]} for e in load_json(row[0])]
        merged = old + events
        merged.sort(key=lambda e: e["ts"])
        return merged[:int(limit)]

    # -- operations

    def ping(self) -> None:
        """Raises when the database cannot answer (within the connection and statement deadlines)."""
        self._one("SELECT 1")

    def close(self) -> None:
        self._pool.close()

    # -- leases (webhook/replicas.py)

    def heartbeat(self, replica: str, live_runs: int, ttl_s: float) -> None:
        with self._tx() as cur:
            cur.execute(f"INSERT INTO replicas (id, started_at, heartbeat_at, expires_at, live_runs)"
                        f" VALUES (%s, {_NOW}, {_NOW}, {_NOW} + %s, %s) ON CONFLICT (id) DO UPDATE SET"
                        " heartbeat_at = EXCLUDED.heartbeat_at, expires_at = EXCLUDED.expires_at,"
                        " live_runs = EXCLUDED.live_runs", (replica, ttl_s, int(live_runs)))
            # Rows of replicas gone for an hour: their runs were taken over long ago.
            cur.execute(f"DELETE FROM replicas WHERE expires_at < {_NOW} - 3600")

    def leave(self, replica: str) -> None:
        self._exec("DELETE FROM replicas WHERE id = %s", (replica,))

    def lease(self, run_id: str) -> Lease | None:
        r = self._one(f"SELECT owner, expires_at - {_NOW}, epoch FROM leases WHERE run_id = %s", (run_id,))
        return Lease(run_id, r[0], float(r[1]) if r[0] is not None else 0.0, int(r[2])) if r else None

    def want_run(self, run_id: str) -> None:
        self._exec(f"INSERT INTO leases (run_id, owner, expires_at, last_call_at) VALUES (%s, NULL, {_NOW}, {_NOW})"
                   " ON CONFLICT (run_id) DO NOTHING", (run_id,))

    def claim_run(self, run_id: str, replica: str, ttl_s: float, *, grace_s: float = 0.0) -> bool:
        """Take the run's lease if free and this replica is the least-loaded live one (or the lease has been
        free `grace_s` already, or it is this replica's). One statement: of replicas racing, one wins."""
        row = self._one(
            f"""WITH now_ AS (SELECT {_NOW} AS t),
                live AS (SELECT r.id FROM replicas r, now_ WHERE r.expires_at > now_.t),
                best AS (SELECT live.id FROM live ORDER BY (SELECT COUNT(*) FROM leases x, now_
                         WHERE x.owner = live.id AND x.expires_at > now_.t), live.id LIMIT 1)
            UPDATE leases l SET owner = %(me)s, expires_at = now_.t + %(ttl)s, epoch = l.epoch + 1
            FROM now_
            WHERE l.run_id = %(run)s
              AND (l.owner IS NULL OR l.expires_at <= now_.t OR l.owner = %(me)s)
              AND (l.owner = %(me)s OR NOT EXISTS (SELECT 1 FROM best) OR %(me)s = (SELECT id FROM best)
                   OR l.expires_at <= now_.t - %(grace)s)
            RETURNING l.epoch""", {"me": replica, "ttl": ttl_s, "run": run_id, "grace": grace_s})
        return row is not None

    def claimable(self, limit: int = 100) -> list[str]:
        stopped = tuple(STOPPED_STATUSES)
        rows = self._all(f"SELECT l.run_id FROM leases l JOIN runs r ON r.id = l.run_id"
                         f" WHERE (l.owner IS NULL OR l.expires_at <= {_NOW}) AND r.status NOT IN"
                         f" ({','.join(['%s'] * len(stopped))}) ORDER BY l.expires_at LIMIT %s", (*stopped, int(limit)))
        return [r[0] for r in rows]

    def renew_leases(self, replica: str, run_ids: list[str], ttl_s: float) -> dict[str, Renewal]:
        if not run_ids:
            return {}
        with self._tx() as cur:
            cur.execute(f"UPDATE leases l SET expires_at = {_NOW} + %s WHERE owner = %s AND run_id = ANY(%s)"
                        f" AND expires_at > {_NOW} RETURNING run_id, GREATEST(0, {_NOW} - last_call_at)",
                        (ttl_s, replica, list(run_ids)))
            held = {r[0]: float(r[1]) for r in cur.fetchall()}
            requests: dict[str, list[tuple[int, str, str]]] = {}
            if held:
                cur.execute("DELETE FROM run_requests WHERE run_id = ANY(%s) RETURNING id, run_id, kind, arg",
                            (list(held),))
                for rid, run_id, kind, arg in cur.fetchall():
                    requests.setdefault(run_id, []).append((rid, kind, arg))
        return {run_id: Renewal(run_id, since, tuple((k, a) for _, k, a in sorted(requests.get(run_id, []))))
                for run_id, since in held.items()}

    def release_run(self, run_id: str, replica: str) -> None:
        self._exec(f"UPDATE leases SET owner = NULL, expires_at = {_NOW} WHERE run_id = %s AND owner = %s",
                   (run_id, replica))

    def end_lease(self, run_id: str) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM leases WHERE run_id = %s", (run_id,))
            cur.execute("DELETE FROM run_requests WHERE run_id = %s", (run_id,))

    def touch_run(self, run_id: str) -> None:
        self._exec(f"UPDATE leases SET last_call_at = {_NOW} WHERE run_id = %s", (run_id,))

    def request(self, run_id: str, kind: str, arg: str = "") -> None:
        self._exec(f"INSERT INTO run_requests (run_id, kind, arg, at) VALUES (%s, %s, %s, {_NOW})",
                   (run_id, kind, str(arg)))

    def replicas(self) -> list[dict[str, Any]]:
        rows = self._all(f"""SELECT r.id, (SELECT COUNT(*) FROM leases x WHERE x.owner = r.id AND x.expires_at > {_NOW}),
                             {_NOW} - r.heartbeat_at FROM replicas r WHERE r.expires_at > {_NOW} ORDER BY r.id""")
        return [{"id": r[0], "live_runs": int(r[1]), "heartbeat_age_s": float(r[2])} for r in rows]

    # -- compaction (as SQLiteStore's; see webhook/store/sqlite.py)

    def _raw_rows(self, cur: Any, run_id: str, below: int | None = None
                  ) -> tuple[list[tuple[int, str, bytes]], int | None]:
        sql, args = "SELECT seq, kind, data FROM windows WHERE run_id = %s AND data IS NOT NULL", [run_id]
        if below is not None:
            sql += " AND seq <= %s"
            args.append(below)
        cur.execute(sql + " ORDER BY seq", args)
        rows = [(r[0], r[1], bytes(r[2])) for r in cur.fetchall()]
        cur.execute("SELECT MAX(seq) FROM windows WHERE run_id = %s AND kind != 'golden'", (run_id,))
        return rows, cur.fetchone()[0]

    @staticmethod
    def _write_summaries(cur: Any, run_id: str, done: list[tuple[int, int, bytes]]) -> int:
        n = 0
        for seq, size, summary in done:
            cur.execute("UPDATE windows SET summary = %s, data = NULL WHERE run_id = %s AND seq = %s"
                        " AND octet_length(data) = %s", (summary, run_id, seq, size))
            n += max(cur.rowcount, 0)
        return n

    def _drop_raw(self, run_id: str, keep: int) -> int:
        """Summarise and drop the raw data of the run's windows but its newest `keep`; returns how many."""
        with self._tx() as cur:
            cur.execute("SELECT MAX(seq) FROM windows WHERE run_id = %s", (run_id,))
            top = cur.fetchone()[0]
            rows, newest = ([], None) if top is None else self._raw_rows(cur, run_id, top - keep)
        if not rows:
            return 0
        done = summarize_rows(self._summarize, rows, {newest} if newest is not None else set())
        with self._tx() as cur:
            n = self._write_summaries(cur, run_id, done)
        self.windows_compacted += n
        return n

    def compact_run(self, run_id: str) -> int:
        """As SQLiteStore.compact_run: a finished run's raw data replaced by summaries, its state dropped,
        its checks' reasons dropped and its timeline folded into one row."""
        return self._compact(run_id, finished=True)

    def _compact(self, run_id: str, finished: bool) -> int:
        with self._tx() as cur:
            cur.execute("SELECT status, updated_at, state IS NOT NULL FROM runs WHERE id = %s", (run_id,))
            run = cur.fetchone()
            if run is None or (run[0] in FINAL_STATUSES) != finished or (not finished and not run[2]):
                return 0
            rows, newest = self._raw_rows(cur, run_id)
        done = summarize_rows(self._summarize, rows, {newest} if newest is not None else set())
        final = tuple(FINAL_STATUSES)
        with self._tx() as cur:
            n = self._write_summaries(cur, run_id, done)
            cur.execute("UPDATE checks SET reason = NULL WHERE run_id = %s AND reason IS NOT NULL", (run_id,))
            self._archive_timeline(cur, run_id)
            # Marked only if nothing wrote the run since it was read (a late window clears compacted_at).
            if finished:
                cur.execute(f"UPDATE runs SET state = NULL, compacted_at = %s WHERE id = %s AND updated_at = %s"
                            f" AND status IN ({','.join(['%s'] * len(final))})", (time.time(), run_id, run[1], *final))
            else:
                cur.execute("UPDATE runs SET compacted_at = %s WHERE id = %s AND updated_at = %s",
                            (time.time(), run_id, run[1]))
        self.windows_compacted += n
        return n

    @staticmethod
    def _archive_timeline(cur: Any, run_id: str) -> None:
        cur.execute("SELECT id, ts, kind, message, data FROM timeline WHERE run_id = %s ORDER BY ts, id", (run_id,))
        rows = cur.fetchall()
        if not rows:
            return
        cur.execute("SELECT events FROM timeline_archive WHERE run_id = %s FOR UPDATE", (run_id,))
        old = cur.fetchone()
        events = load_json(old[0]) if old else []
        events += [[r[1], r[2], r[3], json.loads(r[4]) if r[4] else None] for r in rows]
        events.sort(key=lambda e: e[0])
        cur.execute("INSERT INTO timeline_archive (run_id, events, n) VALUES (%s, %s, %s) ON CONFLICT (run_id)"
                    " DO UPDATE SET events = EXCLUDED.events, n = EXCLUDED.n", (run_id, pack_json(events), len(events)))
        cur.execute("DELETE FROM timeline WHERE id = ANY(%s)", ([r[0] for r in rows],))

    def _compact_quietly(self, run_id: str) -> None:
        try:
            self.compact_run(run_id)
        except Exception:  # never the caller's cost: the next retention pass tries again
            log.exception("run %s: compaction at the end of the run failed", run_id)

    # -- retention (webhook/retention.py)

    def prune(self, before: float, batch: int = 200) -> dict[str, int]:
        """As SQLiteStore.prune: runs finished (or untouched) before `before` go with everything they own."""
        deleted = {t: 0 for t in TABLES}
        while True:
            with self._tx() as cur:
                cur.execute("SELECT id FROM runs WHERE updated_at < %s ORDER BY updated_at LIMIT %s",
                            (before, int(batch)))
                ids = [r[0] for r in cur.fetchall()]
                if not ids:
                    return deleted
                for table in ("timeline", "timeline_archive", "checks", "windows", "run_requests"):
                    cur.execute(f"DELETE FROM {table} WHERE run_id = ANY(%s)", (ids,))
                    if table in deleted:
                        deleted[table] += max(cur.rowcount, 0)
                cur.execute("DELETE FROM runs WHERE id = ANY(%s)", (ids,))  # leases go with them (cascade)
                deleted["runs"] += max(cur.rowcount, 0)
            if len(ids) < batch:
                return deleted

    def _to_compact(self, sql: str, args: tuple, batch: int, fn: Callable[[str], int]) -> int:
        total, seen = 0, set()
        while True:
            ids = [r[0] for r in self._all(sql + " ORDER BY updated_at LIMIT %s", (*args, int(batch)))]
            fresh = [i for i in ids if i not in seen]
            for run_id in fresh:
                total += fn(run_id)
            seen.update(fresh)
            if len(ids) < batch or not fresh:
                return total

    def compact(self, before: float, batch: int = 100) -> int:
        """As SQLiteStore.compact."""
        final = tuple(FINAL_STATUSES)
        return self._to_compact(f"SELECT id FROM runs WHERE compacted_at IS NULL AND updated_at < %s"
                                f" AND status IN ({','.join(['%s'] * len(final))})", (before, *final), batch,
                                self.compact_run)

    def compact_stale(self, before: float, batch: int = 100) -> int:
        """As SQLiteStore.compact_stale (the state is stored compressed already)."""
        final = tuple(FINAL_STATUSES)
        return self._to_compact(f"SELECT id FROM runs WHERE compacted_at IS NULL AND updated_at < %s"
                                f" AND status NOT IN ({','.join(['%s'] * len(final))}) AND state IS NOT NULL",
                                (before, *final), batch, lambda run_id: self._compact(run_id, finished=False))

    def stats(self) -> dict[str, Any]:
        """As SQLiteStore.stats: "bytes" is the tables' size with indexes and TOAST; "free_bytes" 0 (VACUUM's
        business in PostgreSQL)."""
        tables = list(TABLES) + list(SHARED_TABLES)
        size = self._one("SELECT COALESCE(SUM(pg_total_relation_size(t::regclass)), 0) FROM unnest(%s::text[]) t",
                         (tables,))[0]
        rows = {t: int(self._one(f"SELECT COUNT(*) FROM {t}")[0]) for t in TABLES}
        raw = self._one("SELECT COALESCE(SUM(octet_length(data)), 0) FROM windows")[0]
        return {"bytes": int(size), "free_bytes": 0, "raw_bytes": int(raw), "rows": rows}
