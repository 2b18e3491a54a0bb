"""The default store: one SQLite file, for one process.

`SQLiteStore` is the default (webhook/store/postgres.py is the shared one, for
replicas): one file, WAL journal (readers never wait for the writer), one
connection guarded by a lock (the service is one process; writes are a few
per window). Being one process, it owns every run: the lease methods of
`Store` are trivial here.

Times are unix seconds (float).

Footprint (bench/store_footprint.py measures it; README "Retention"):
- a window's verdict is stored zlib-compressed (`pack_json`; rows written
  before are JSON text, and `load_json` reads both);
- raw window data (`data`: samples, probe pairs; tens of kB a window) is
  what a live run needs, and only its newest windows: once dropped, a
  window keeps a small `summary` instead (what a report reads of the raw
  data: counts, latency quantiles, probe tallies, and for the newest load
  window and the golden window the histograms; reporting.model.window_summary);
- when a run ends (`compact_run`): every window's raw data is replaced by
  its summary, the gate's run state is dropped (a finished run never
  resumes), the checks table keeps its numbers but not the reasons (the
  verdict has them) and the timeline is folded into one compressed row
  (`timeline_archive`). What the runs API and the report show is unchanged;
- a run not finished but untouched for long (`compact_stale`: idle, or an
  Argo run, which never gets a post-rollout) is compacted the same way but
  keeps its gate state (compressed), should it resume.
`SQLiteStore.set_raw_policy` says when (webhook/retention.py sets it from
the server's retention settings and runs the passes); by default nothing is
dropped.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from typing import Any, Callable

from .base import (FINAL_STATUSES, RUN_STATUSES, TABLES, Lease, Renewal, RunRecord, StoredWindow, _default_summarizer,
                   _num, load_json, pack_json, summarize_rows)

log = logging.getLogger(__name__)

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
    summary BLOB,
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
CREATE TABLE IF NOT EXISTS timeline_archive (
    run_id TEXT PRIMARY KEY,
    events BLOB NOT NULL,
    n INTEGER NOT NULL
);
"""
# timeline_archive.events: pack_json([[ts, kind, message, data], ...]) in (ts, rowid) order: the timeline of a
# finished run folded into one row (compact_run); entries added later stay in `timeline` until the next pass.


def has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def read_timeline(db: sqlite3.Connection, run_id: str, limit: int, archive: bool = True) -> list[dict[str, Any]]:
    """A run's timeline, oldest first: its archived entries (if `archive`) and its rows, at most `limit`.

    Shared by the store and the reports' read-only connection (reporting.source)."""
    rows = db.execute("SELECT ts, kind, message, data FROM timeline WHERE run_id = ? ORDER BY ts, rowid LIMIT ?",
                      (run_id, int(limit))).fetchall()
    events = [{"ts": r[0], "kind": r[1], "message": r[2], "data": json.loads(r[3]) if r[3] else None} for r in rows]
    row = db.execute("SELECT events FROM timeline_archive WHERE run_id = ?", (run_id,)).fetchone() if archive else None
    if row is None:
        return events
    old = [{"ts": e[0], "kind": e[1], "message": e[2], "data": e[3]} for e in load_json(row[0])]
    merged = old + events
    merged.sort(key=lambda e: e["ts"])  # stable: archived entries first at equal times, as their rowids were
    return merged[:int(limit)]


class SQLiteStore:
    """The default store: one SQLite file in WAL mode."""

    shared = False  # one process: it measures every run, no lease is needed

    def __init__(self, path: str, *, summarize: Callable[..., dict[str, Any]] | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        # What to drop and when (set_raw_policy): by default every window keeps its raw data.
        self.compact_on_finish = False
        self.keep_raw_windows: int | None = None
        self.windows_compacted = 0  # windows whose raw data this store dropped since it opened
        self._summarize = summarize or _default_summarizer
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
            if "compacted_at" not in cols:  # stores written before compaction at the end of a run
                self._db.execute("ALTER TABLE runs ADD COLUMN compacted_at REAL")
            if "summary" not in {r[1] for r in self._db.execute("PRAGMA table_info(windows)")}:
                self._db.execute("ALTER TABLE windows ADD COLUMN summary BLOB")
            # compacted_at: when compact_run (or the stale pass) last left the run with nothing to drop; any
            # write to the run clears it. Retention looks for the runs without it through this index only.
            self._db.execute("CREATE INDEX IF NOT EXISTS runs_to_compact ON runs (updated_at)"
                             " WHERE compacted_at IS NULL")

    def set_raw_policy(self, *, compact_on_finish: bool, keep_raw_windows: int | None) -> None:
        """When raw window data goes (webhook/retention.py sets this from the server's settings).

        compact_on_finish: a run is compacted (compact_run) as soon as its status becomes succeeded or
        failed, and again when a window arrives after that.
        keep_raw_windows: a run still going (with a stored gate state, so a restart never replays its
        windows) keeps the raw data of its newest this many windows; older ones keep their summary.
        None keeps all.
        """
        if keep_raw_windows is not None and keep_raw_windows < 1:
            raise ValueError("keep_raw_windows: at least 1 (the newest window's figures), or None")
        self.compact_on_finish = bool(compact_on_finish)
        self.keep_raw_windows = keep_raw_windows

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
            state=load_json(row["state"]) if row["state"] else None,  # packed once a stale run was compacted
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
        sets, args = ["updated_at = ?", "compacted_at = NULL"], [time.time()]
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
        if status in FINAL_STATUSES and self.compact_on_finish:
            self._compact_quietly(run_id)

    # -- windows and their checks

    def add_window(self, window: StoredWindow, *, owner: str | None = None, state: dict[str, Any] | None = None,
                   run_verdict: dict[str, Any] | None = None) -> None:
        """Store a window, and the run's gate state and verdict with it when given (one transaction, so a
        restart never finds a window without the state that counted it). `owner` is for shared stores."""
        checks = (window.verdict or {}).get("checks") or []
        verdict = pack_json(window.verdict) if window.verdict is not None else None
        summary = pack_json(window.raw_summary) if window.raw_summary is not None else None
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO windows (run_id, seq, kind, started_at, ended_at, verdict, data, summary)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (window.run_id, window.seq, window.kind, window.started_at, window.ended_at, verdict,
                     window.data, summary),
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
                sets, args = ["updated_at = ?", "compacted_at = NULL"], [time.time()]
                if state is not None:
                    sets.append("state = ?")
                    args.append(json.dumps(state))
                if run_verdict is not None:
                    sets.append("verdict = ?")
                    args.append(json.dumps(run_verdict))
                self._db.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*args, window.run_id))
                row = self._db.execute("SELECT status, state IS NOT NULL FROM runs WHERE id = ?",
                                       (window.run_id,)).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if row is None or window.data is None:
            return
        if row[0] in FINAL_STATUSES:
            if self.compact_on_finish:  # a window closed while the run was being finished
                self._compact_quietly(window.run_id)
        elif self.keep_raw_windows is not None and row[1]:
            try:
                self._drop_raw(window.run_id, keep=self.keep_raw_windows)
            except Exception:  # never the window's cost: the next retention pass tries again
                log.exception("run %s: dropping raw data of older windows", window.run_id)

    def windows(self, run_id: str, with_data: bool = False) -> list[StoredWindow]:
        """The run's windows in order; with_data: with their raw data and summaries."""
        cols = "run_id, seq, kind, started_at, ended_at, verdict" + (", data, summary" if with_data else "")
        with self._lock:
            rows = self._db.execute(f"SELECT {cols} FROM windows WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
        return [
            StoredWindow(run_id=r["run_id"], seq=r["seq"], kind=r["kind"], started_at=r["started_at"],
                         ended_at=r["ended_at"], verdict=load_json(r["verdict"]),
                         data=bytes(r["data"]) if with_data and r["data"] is not None else None,
                         raw_summary=load_json(r["summary"]) if with_data else None)
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
            # An entry after the run was compacted: the next retention pass folds it into the archive.
            self._db.execute("UPDATE runs SET compacted_at = NULL WHERE id = ? AND compacted_at IS NOT NULL",
                             (run_id,))

    def timeline(self, run_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        with self._lock:
            return read_timeline(self._db, run_id, limit)

    # -- operations

    def ping(self) -> None:
        """Raises sqlite3.Error when the database cannot answer."""
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- leases: one process measures every run, so it always holds the lease

    def heartbeat(self, replica: str, live_runs: int, ttl_s: float) -> None:
        pass

    def leave(self, replica: str) -> None:
        pass

    def lease(self, run_id: str) -> Lease | None:
        return None

    def want_run(self, run_id: str) -> None:
        pass

    def claim_run(self, run_id: str, replica: str, ttl_s: float, *, grace_s: float = 0.0) -> bool:
        return True

    def claimable(self, limit: int = 100) -> list[str]:
        return []

    def renew_leases(self, replica: str, run_ids: list[str], ttl_s: float) -> dict[str, Renewal]:
        return {r: Renewal(r, 0.0) for r in run_ids}

    def release_run(self, run_id: str, replica: str) -> None:
        pass

    def end_lease(self, run_id: str) -> None:
        pass

    def touch_run(self, run_id: str) -> None:
        pass

    def request(self, run_id: str, kind: str, arg: str = "") -> None:
        pass

    def replicas(self) -> list[dict[str, Any]]:
        return []

    # -- compaction: raw window data replaced by summaries

    def _summaries(self, run_id: str, rows: list[tuple[int, str, bytes]],
                   figures_for: set[int]) -> list[tuple[int, int, bytes]]:
        """(seq, length of the raw data, packed summary) of raw windows `rows` (seq, kind, data), computed
        without the lock. Windows in `figures_for` and golden windows keep their figures too."""
        return summarize_rows(self._summarize, rows, figures_for)

    def _write_summaries(self, run_id: str, done: list[tuple[int, int, bytes]]) -> int:
        """Replace raw data by summaries (the lock held, in a transaction); returns the windows changed."""
        n = 0
        for seq, size, summary in done:
            cur = self._db.execute("UPDATE windows SET summary = ?, data = NULL WHERE run_id = ? AND seq = ?"
                                   " AND length(data) = ?", (summary, run_id, seq, size))
            n += max(cur.rowcount, 0)
        return n

    def _raw_rows(self, run_id: str, below: int | None = None) -> tuple[list[tuple[int, str, bytes]], int | None]:
        """The run's windows with raw data (all, or those with seq <= below) and its newest load window."""
        sql = "SELECT seq, kind, data FROM windows WHERE run_id = ? AND typeof(data) = 'blob'"
        args: list[Any] = [run_id]
        if below is not None:
            sql += " AND seq <= ?"
            args.append(below)
        rows = [(r[0], r[1], bytes(r[2])) for r in self._db.execute(sql + " ORDER BY seq", args)]
        newest = self._db.execute("SELECT MAX(seq) FROM windows WHERE run_id = ? AND kind != 'golden'",
                                  (run_id,)).fetchone()[0]
        return rows, newest

    def _drop_raw(self, run_id: str, keep: int) -> int:
        """Summarise and drop the raw data of the run's windows but its newest `keep`; returns how many."""
        with self._lock:
            top = self._db.execute("SELECT MAX(seq) FROM windows WHERE run_id = ?", (run_id,)).fetchone()[0]
            if top is None:
                rows, newest = [], None
            else:
                rows, newest = self._raw_rows(run_id, top - keep)
        done = self._summaries(run_id, rows, {newest} if newest is not None else set())
        with self._lock:
            self._db.execute("BEGIN")
            try:
                n = self._write_summaries(run_id, done)
                self._db.execute("COMMIT")
                self.windows_compacted += n
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def compact_run(self, run_id: str) -> int:
        """Compact one finished run (a run still going is left alone); returns the windows whose raw data went.

        Every window's raw data is replaced by its summary (the figures a report reads of it), verdicts
        stored as text are compressed, the gate's run state is dropped (a finished run never resumes),
        the checks table loses its reasons (the windows' verdicts keep them) and the timeline is folded
        into `timeline_archive`. The runs API and the run's report read the same afterwards; only
        recomputing verdicts from raw samples, and evidently's drift report, need the raw data.
        """
        return self._compact(run_id, finished=True)

    def _compact(self, run_id: str, finished: bool) -> int:
        """compact_run (finished), or the same for a run not finished that may resume: its state is kept,
        compressed (get_run reads it back whole)."""
        final = ",".join("?" * len(FINAL_STATUSES))
        with self._lock:
            run = self._db.execute("SELECT status, updated_at, state FROM runs WHERE id = ?", (run_id,)).fetchone()
            if run is None or (run[0] in FINAL_STATUSES) != finished or (not finished and run[2] is None):
                return 0
            rows, newest = self._raw_rows(run_id)
            texts = [(r[0], r[1]) for r in self._db.execute(
                "SELECT seq, verdict FROM windows WHERE run_id = ? AND typeof(verdict) = 'text'", (run_id,))]
        done = self._summaries(run_id, rows, {newest} if newest is not None else set())
        packed = [(seq, text, pack_json(json.loads(text))) for seq, text in texts]
        state = None if finished or not isinstance(run[2], str) else pack_json(json.loads(run[2]))
        with self._lock:
            self._db.execute("BEGIN")
            try:
                n = self._write_summaries(run_id, done)
                for seq, text, blob in packed:
                    self._db.execute("UPDATE windows SET verdict = ? WHERE run_id = ? AND seq = ? AND verdict = ?",
                                     (blob, run_id, seq, text))
                self._db.execute("UPDATE checks SET reason = NULL WHERE run_id = ? AND reason IS NOT NULL",
                                 (run_id,))
                self._archive_timeline(run_id)
                # The run is marked (and its state dropped or packed) only if nothing wrote it since it was
                # read above: a session storing a last state clears compacted_at, and the next pass comes back.
                if finished:
                    self._db.execute(f"UPDATE runs SET state = NULL, compacted_at = ? WHERE id = ? AND updated_at = ?"
                                     f" AND status IN ({final})", (time.time(), run_id, run[1], *FINAL_STATUSES))
                else:
                    self._db.execute("UPDATE runs SET state = COALESCE(?, state), compacted_at = ? WHERE id = ?"
                                     " AND updated_at = ?", (state, time.time(), run_id, run[1]))
                self._db.execute("COMMIT")
                self.windows_compacted += n
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def _archive_timeline(self, run_id: str) -> None:
        """Fold the run's timeline rows into its archive row (the lock held, in a transaction)."""
        rows = self._db.execute("SELECT rowid, ts, kind, message, data FROM timeline WHERE run_id = ?"
                                " ORDER BY ts, rowid", (run_id,)).fetchall()
        if not rows:
            return
        old = self._db.execute("SELECT events FROM timeline_archive WHERE run_id = ?", (run_id,)).fetchone()
        events = load_json(old[0]) if old else []
        events += [[r[1], r[2], r[3], json.loads(r[4]) if r[4] else None] for r in rows]
        events.sort(key=lambda e: e[0])
        self._db.execute("INSERT OR REPLACE INTO timeline_archive (run_id, events, n) VALUES (?,?,?)",
                         (run_id, pack_json(events), len(events)))
        ids = [r[0] for r in rows]
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            self._db.execute(f"DELETE FROM timeline WHERE rowid IN ({','.join('?' * len(chunk))})", chunk)

    def _compact_quietly(self, run_id: str) -> None:
        try:
            self.compact_run(run_id)
        except Exception:  # never the caller's cost: the next retention pass tries again
            log.exception("run %s: compaction at the end of the run failed", run_id)

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
        deleted = {t: 0 for t in TABLES}
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
                    for table in ("timeline", "timeline_archive", "checks", "windows"):
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

    def _to_compact(self, sql: str, args: tuple, batch: int, fn: Callable[[str], int]) -> int:
        """fn(run_id) for each run that `sql` selects (runs not compacted), `batch` at a time; sum of fn."""
        total, seen = 0, set()
        while True:
            with self._lock:
                ids = [r[0] for r in self._db.execute(sql + " ORDER BY updated_at LIMIT ?", (*args, int(batch)))]
            fresh = [i for i in ids if i not in seen]
            for run_id in fresh:
                total += fn(run_id)
            seen.update(fresh)
            if len(ids) < batch or not fresh:
                return total

    def compact(self, before: float, batch: int = 100) -> int:
        """Compact (compact_run) the runs finished before `before` (unix s) that are not yet.

        Also picks up what came after a run's compaction at its end: a
        window closed while it was being finished, the last hook calls in
        its timeline. Returns the number of windows whose raw data went.
        """
        final = ",".join("?" * len(FINAL_STATUSES))
        return self._to_compact(f"SELECT id FROM runs WHERE compacted_at IS NULL AND updated_at < ?"
                                f" AND status IN ({final})", (before, *FINAL_STATUSES), batch, self.compact_run)

    def compact_stale(self, before: float, batch: int = 100) -> int:
        """Compact runs not finished but untouched since `before` (unix s), keeping their gate state.

        Idle runs (an Argo run never gets a post-rollout: it ends idle),
        runs promoted whose post-rollout never came, abandoned ones: as
        compact_run, but the state stays (compressed), for an idle run
        resumes from it, never from raw windows; runs without a state are
        left alone (they would replay theirs). Returns the number of windows
        whose raw data went.
        """
        final = ",".join("?" * len(FINAL_STATUSES))
        return self._to_compact(f"SELECT id FROM runs WHERE compacted_at IS NULL AND updated_at < ?"
                                f" AND status NOT IN ({final}) AND state IS NOT NULL", (before, *FINAL_STATUSES),
                                batch, lambda run_id: self._compact(run_id, finished=False))

    def stats(self) -> dict[str, Any]:
        """Size and row counts: {"bytes": database + WAL file (bytes), "free_bytes": pages SQLite will reuse,
        "raw_bytes": raw window data, "rows": {table: count}}."""
        import os

        with self._lock:
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            rows = {t: self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
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
