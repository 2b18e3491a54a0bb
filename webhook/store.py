"""Where runs, windows, verdicts and timelines persist.

`Store` is the one small interface the rest of the service uses, so a shared
database can replace SQLite later. `SQLiteStore` is the default: one file,
WAL journal (readers never wait for the writer), one connection guarded by
a lock (the service is one process; writes are a few per window).

Times are unix seconds (float).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

# A run's life: running (load on) -> idle (controller silent, load off;
# resumes on the next call) -> promoted (confirm-promotion passed: load off,
# decision frozen while the controller finalises) -> succeeded | failed
# (post-rollout said so).
RUN_STATUSES = ("running", "idle", "promoted", "succeeded", "failed")
FINAL_STATUSES = ("succeeded", "failed")
STOPPED_STATUSES = FINAL_STATUSES + ("promoted",)  # no session restarts for these


@dataclass
class RunRecord:
    """One rollout of one analysis."""

    id: str
    analysis: str
    caller: str  # flagger | argo
    namespace: str
    name: str
    revision: str  # Flagger checksum or Argo revision
    attempt: int = 1
    status: str = "running"
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    verdict: dict[str, Any] | None = None  # run-level verdict (Verdict.to_dict())
    windows: int = 0
    state: dict[str, Any] | None = None  # the gate's RunState.to_dict(), stored after every window

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StoredWindow:
    run_id: str
    seq: int
    kind: str  # interval | early | golden | final
    started_at: float
    ended_at: float
    verdict: dict[str, Any] | None
    data: bytes | None = None  # codec.encode_window bytes

    def summary(self) -> dict[str, Any]:
        v = self.verdict or {}
        return {"seq": self.seq, "kind": self.kind, "started_at": self.started_at, "ended_at": self.ended_at,
                "outcome": v.get("outcome"), "passed": v.get("passed"), "score": v.get("score"),
                "reason": v.get("reason"), "verdict": self.verdict}


class Store(Protocol):
    """What the service needs from persistence."""

    def create_run(self, run: RunRecord) -> None: ...
    def get_run(self, run_id: str) -> RunRecord | None: ...
    def find_run(self, caller: str, analysis: str, namespace: str, name: str, revision: str) -> RunRecord | None: ...
    def list_runs(self, analysis: str | None = None, status: str | None = None,
                  limit: int = 100) -> list[RunRecord]: ...
    def update_run(self, run_id: str, *, status: str | None = None, verdict: dict[str, Any] | None = None,
                   state: dict[str, Any] | None = None) -> None: ...
    def add_window(self, window: StoredWindow) -> None: ...
    def windows(self, run_id: str, with_data: bool = False) -> list[StoredWindow]: ...
    def add_event(self, run_id: str, kind: str, message: str, data: dict[str, Any] | None = None,
                  ts: float | None = None) -> None: ...
    def timeline(self, run_id: str, limit: int = 1000) -> list[dict[str, Any]]: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    analysis TEXT NOT NULL,
    caller TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    revision TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    verdict TEXT,
    UNIQUE (caller, analysis, namespace, name, revision, attempt)
);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (updated_at);
CREATE TABLE IF NOT EXISTS windows (
    run_id TEXT NOT NULL REFERENCES runs (id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    verdict TEXT,
    data BLOB,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS checks (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    verdict TEXT,
    stable REAL,
    canary REAL,
    difference REAL,
    p_value REAL,
    critical INTEGER,
    reason TEXT,
    PRIMARY KEY (run_id, seq, name)
);
CREATE TABLE IF NOT EXISTS timeline (
    run_id TEXT NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT
);
CREATE INDEX IF NOT EXISTS timeline_by_run ON timeline (run_id, ts);
"""


def _num(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


class SQLiteStore:
    """The default store: one SQLite file in WAL mode."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        # One connection shared by the hook threads and the session loop; the
        # lock serialises use, which SQLite would do for writes anyway.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(runs)")}
            if "state" not in cols:  # stores written before the gate kept its run state
                self._db.execute("ALTER TABLE runs ADD COLUMN state TEXT")

    # -- runs

    def create_run(self, run: RunRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO runs (id, analysis, caller, namespace, name, revision, attempt, status,"
                " created_at, updated_at, verdict) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (run.id, run.analysis, run.caller, run.namespace, run.name, run.revision, run.attempt,
                 run.status, run.created_at, run.updated_at,
                 json.dumps(run.verdict) if run.verdict is not None else None),
            )

    def _run(self, row: sqlite3.Row) -> RunRecord:
        return RunRecord(
            id=row["id"], analysis=row["analysis"], caller=row["caller"], namespace=row["namespace"],
            name=row["name"], revision=row["revision"], attempt=row["attempt"], status=row["status"],
            created_at=row["created_at"], updated_at=row["updated_at"],
            verdict=json.loads(row["verdict"]) if row["verdict"] else None, windows=row["nwin"],
            state=json.loads(row["state"]) if row["state"] else None,
        )

    _SELECT = ("SELECT r.*, (SELECT COUNT(*) FROM windows w WHERE w.run_id = r.id) AS nwin FROM runs r")

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            row = self._db.execute(self._SELECT + " WHERE r.id = ?", (run_id,)).fetchone()
        return self._run(row) if row else None

    def find_run(self, caller: str, analysis: str, namespace: str, name: str, revision: str) -> RunRecord | None:
        """The latest attempt of this rollout, or None."""
        with self._lock:
            row = self._db.execute(
                self._SELECT + " WHERE r.caller=? AND r.analysis=? AND r.namespace=? AND r.name=? AND r.revision=?"
                " ORDER BY r.attempt DESC LIMIT 1", (caller, analysis, namespace, name, revision)).fetchone()
        return self._run(row) if row else None

    def list_runs(self, analysis: str | None = None, status: str | None = None, limit: int = 100) -> list[RunRecord]:
        where, args = [], []
        if analysis is not None:
            where.append("r.analysis = ?")
            args.append(analysis)
        if status is not None:
            where.append("r.status = ?")
            args.append(status)
        sql = self._SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY r.updated_at DESC LIMIT ?"
        args.append(int(limit))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [self._run(r) for r in rows]

    def update_run(self, run_id: str, *, status: str | None = None, verdict: dict[str, Any] | None = None,
                   state: dict[str, Any] | None = None) -> None:
        sets, args = ["updated_at = ?"], [time.time()]
        if state is not None:
            sets.append("state = ?")
            args.append(json.dumps(state))
        if status is not None:
            if status not in RUN_STATUSES:
                raise ValueError(f"unknown run status {status!r}")
            sets.append("status = ?")
            args.append(status)
        if verdict is not None:
            sets.append("verdict = ?")
            args.append(json.dumps(verdict))
        args.append(run_id)
        with self._lock:
            self._db.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", args)

    # -- windows and their checks

    def add_window(self, window: StoredWindow) -> None:
        checks = (window.verdict or {}).get("checks") or []
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO windows (run_id, seq, kind, started_at, ended_at, verdict, data)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (window.run_id, window.seq, window.kind, window.started_at, window.ended_at,
                     json.dumps(window.verdict) if window.verdict is not None else None, window.data),
                )
                for c in checks:
                    if not isinstance(c, dict) or "name" not in c:
                        continue
                    self._db.execute(
                        "INSERT OR REPLACE INTO checks (run_id, seq, name, verdict, stable, canary, difference,"
                        " p_value, critical, reason) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (window.run_id, window.seq, str(c["name"]), c.get("verdict"), _num(c.get("stable")),
                         _num(c.get("canary")), _num(c.get("difference")), _num(c.get("p_value")),
                         int(bool(c.get("critical"))), c.get("reason")),
                    )
                self._db.execute("UPDATE runs SET updated_at = ? WHERE id = ?", (time.time(), window.run_id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def windows(self, run_id: str, with_data: bool = False) -> list[StoredWindow]:
        cols = "run_id, seq, kind, started_at, ended_at, verdict" + (", data" if with_data else "")
        with self._lock:
            rows = self._db.execute(f"SELECT {cols} FROM windows WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
        return [
            StoredWindow(run_id=r["run_id"], seq=r["seq"], kind=r["kind"], started_at=r["started_at"],
                         ended_at=r["ended_at"], verdict=json.loads(r["verdict"]) if r["verdict"] else None,
                         data=bytes(r["data"]) if with_data and r["data"] is not None else None)
            for r in rows
        ]

    # -- timeline

    def add_event(self, run_id: str, kind: str, message: str, data: dict[str, Any] | None = None,
                  ts: float | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO timeline (run_id, ts, kind, message, data) VALUES (?,?,?,?,?)",
                (run_id, time.time() if ts is None else ts, kind, message,
                 json.dumps(data) if data else None),
            )

    def timeline(self, run_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, kind, message, data FROM timeline WHERE run_id = ? ORDER BY ts, rowid LIMIT ?",
                (run_id, int(limit))).fetchall()
        return [{"ts": r["ts"], "kind": r["kind"], "message": r["message"],
                 "data": json.loads(r["data"]) if r["data"] else None} for r in rows]

    # -- operations

    def ping(self) -> None:
        """Raises sqlite3.Error when the database cannot answer."""
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- retention (webhook/retention.py calls these from its background thread)

    def prune(self, before: float, batch: int = 200) -> dict[str, int]:
        """Delete runs finished before `before` (unix s), and runs untouched since then.

        A finished run (succeeded/failed) whose last update is older than
        `before` goes with its windows, checks and timeline. A run still
        marked running or idle but not updated since `before` was abandoned
        (a live session stores a window every interval). Works in batches of
        `batch` runs so hooks never wait long for the store's lock.
        Returns the rows deleted per table.
        """
        deleted = {"runs": 0, "windows": 0, "checks": 0, "timeline": 0}
        while True:
            with self._lock:
                ids = [r["id"] for r in self._db.execute(
                    "SELECT id FROM runs WHERE updated_at < ? ORDER BY updated_at LIMIT ?",
                    (before, int(batch))).fetchall()]
                if not ids:
                    return deleted
                marks = ",".join("?" * len(ids))
                self._db.execute("BEGIN")
                try:
                    for table in ("timeline", "checks", "windows"):
                        cur = self._db.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", ids)
                        deleted[table] += max(cur.rowcount, 0)
                    cur = self._db.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)
                    deleted["runs"] += max(cur.rowcount, 0)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            if len(ids) < batch:
                return deleted

    def compact(self, before: float, batch: int = 500) -> int:
        """Drop the raw data (samples, probe pairs) of windows of runs finished before `before` (unix s).

        The windows keep their verdicts and the checks table its numbers, so
        a finished run still reads the same in the runs API; only
        recomputing its verdicts from raw samples is no longer possible.
        Returns the number of windows compacted.
        """
        final = ",".join("?" * len(FINAL_STATUSES))
        total = 0
        while True:
            with self._lock:
                cur = self._db.execute(
                    "UPDATE windows SET data = NULL WHERE rowid IN ("
                    " SELECT w.rowid FROM windows w JOIN runs r ON r.id = w.run_id"
                    f" WHERE r.status IN ({final}) AND r.updated_at < ? AND w.data IS NOT NULL LIMIT ?)",
                    (*FINAL_STATUSES, before, int(batch)))
                n = max(cur.rowcount, 0)
            total += n
            if n < batch:
                return total

    def stats(self) -> dict[str, Any]:
        """Size and row counts: {"bytes": database + WAL file (bytes), "free_bytes": pages SQLite will reuse,
        "raw_bytes": raw window data, "rows": {table: count}}."""
        import os

        with self._lock:
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            rows = {t: self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                    for t in ("runs", "windows", "checks", "timeline")}
            raw = self._db.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM windows").fetchone()[0]
        size = pages * page_size
        if self.path != ":memory:":
            try:
                size = os.path.getsize(self.path)
            except OSError:
                pass
            try:
                size += os.path.getsize(self.path + "-wal")
            except OSError:
                pass
        return {"bytes": int(size), "free_bytes": int(free * page_size), "raw_bytes": int(raw), "rows": rows}
