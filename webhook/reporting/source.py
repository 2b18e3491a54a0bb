"""What a report reads from the store, and only what it needs.

A run of 1000 windows keeps about 10 MB of verdict JSON (stored
compressed) and 70 MB of raw window data (a finished run, and a live
run's older windows, keep a summary of it instead: webhook/store/); a report
reads the small index of every window and the verdicts and data (or
summaries) of the windows it shows (see model.select_windows), so its
cost does not grow with the run's length.

With the SQLite store the reads go through a read-only connection of their
own (WAL: readers never wait for the service's writer, and never make it
wait). Any other `Store` is read through its interface (slower: it returns
every window's verdict).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..store import RunRecord, Store, has_table, load_json, read_timeline


@dataclass
class WindowRow:
    """One stored window without its verdict or data."""

    seq: int
    kind: str
    started_at: float
    ended_at: float
    has_data: bool
    has_summary: bool = False  # its raw data was dropped and a summary of it kept (store.compact_run)

    @property
    def has_raw(self) -> bool:
        """The report has its raw-data figures: from the raw data or from its summary."""
        return self.has_data or self.has_summary


@dataclass
class RunFilter:
    """Filters of the run list; None is any."""

    namespace: str | None = None
    name: str | None = None
    analysis: str | None = None
    caller: str | None = None
    outcome: str | None = None  # pass | fail | continue (the gate's decision)
    status: str | None = None  # running | idle | succeeded | failed (what the controller said)

    def matches(self, run: RunRecord) -> bool:
        outcome = (run.verdict or {}).get("outcome") or "continue"
        return all(want is None or want == have for want, have in (
            (self.namespace, run.namespace), (self.name, run.name), (self.analysis, run.analysis),
            (self.caller, run.caller), (self.outcome, outcome), (self.status, run.status)))


class ReportSource:
    """Reads runs for reports from a Store (`store`) or directly from a SQLite file (`path`)."""

    def __init__(self, store: Store | None = None, path: str | Path | None = None) -> None:
        if path is None and store is not None:
            p = getattr(store, "path", None)
            path = p if p and p != ":memory:" else None
        if store is None and path is None:
            raise ValueError("a store or a path is needed")
        self.store = store
        self.path = str(path) if path is not None else None
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._schema: dict[str, bool] = {}  # what the file has (an older store may lack summaries)

    # ------------------------------------------------------------ connection

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            if not Path(self.path).exists():
                raise FileNotFoundError(f"no store at {self.path}")
            db = sqlite3.connect(f"file:{quote(self.path)}?mode=ro", uri=True, check_same_thread=False,
                                 timeout=5.0)
            db.row_factory = sqlite3.Row
            self._db = db
        return self._db

    def _query(self, sql: str, args: tuple | list = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn().execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
                self._schema.clear()

    def _has(self, what: str) -> bool:
        """The file has `what` ("summary": windows.summary, "archive": timeline_archive); a yes is kept,
        a no asked again (the service may upgrade the file while this reads it). The lock is held."""
        if not self._schema.get(what):
            db = self._conn()
            if what == "summary":
                self._schema[what] = "summary" in {r[1] for r in db.execute("PRAGMA table_info(windows)")}
            else:
                self._schema[what] = has_table(db, "timeline_archive")
        return self._schema[what]

    @property
    def direct(self) -> bool:
        """Reads go to SQLite directly (else through the Store interface)."""
        return self.path is not None

    # ------------------------------------------------------------ runs

    @staticmethod
    def _run(row: sqlite3.Row) -> RunRecord:
        return RunRecord(
            id=row["id"], analysis=row["analysis"], caller=row["caller"], namespace=row["namespace"],
            name=row["name"], revision=row["revision"], attempt=row["attempt"], status=row["status"],
            created_at=row["created_at"], updated_at=row["updated_at"],
            verdict=json.loads(row["verdict"]) if row["verdict"] else None, windows=row["nwin"],
            state=None,
        )

    _RUNS = "SELECT r.*, (SELECT COUNT(*) FROM windows w WHERE w.run_id = r.id) AS nwin FROM runs r"

    def runs(self, flt: RunFilter | None = None, limit: int = 200) -> list[RunRecord]:
        """Runs matching `flt`, newest first (by start), at most `limit`."""
        flt = flt or RunFilter()
        if not self.direct:
            runs = [r for r in self.store.list_runs(flt.analysis, flt.status, 100_000) if flt.matches(r)]
            runs.sort(key=lambda r: r.created_at, reverse=True)
            return runs[:limit]
        where, args = [], []
        for col in ("namespace", "name", "analysis", "caller", "status"):
            v = getattr(flt, col)
            if v is not None:
                where.append(f"r.{col} = ?")
                args.append(v)
        if flt.outcome is not None:
            where.append("COALESCE(json_extract(r.verdict, '$.outcome'), 'continue') = ?")
            args.append(flt.outcome)
        sql = self._RUNS + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY r.created_at DESC LIMIT ?"
        args.append(int(limit))
        return [self._run(r) for r in self._query(sql, args)]

    def run(self, run_id: str) -> RunRecord | None:
        if not self.direct:
            return self.store.get_run(run_id)
        rows = self._query(self._RUNS + " WHERE r.id = ?", (run_id,))
        return self._run(rows[0]) if rows else None

    # ------------------------------------------------------------ windows

    def window_index(self, run_id: str) -> list[WindowRow]:
        """Every window of the run, in order, without verdicts or data."""
        if not self.direct:
            return [WindowRow(w.seq, w.kind, w.started_at, w.ended_at, True)
                    for w in self.store.windows(run_id)]
        # typeof() reads the record header only; `data IS NOT NULL` would read the whole blob.
        with self._lock:
            summary = "typeof(summary)" if self._has("summary") else "NULL"
            rows = self._conn().execute(f"SELECT seq, kind, started_at, ended_at, typeof(data) AS t, {summary} AS s"
                                        " FROM windows WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
        return [WindowRow(r["seq"], r["kind"], r["started_at"], r["ended_at"], r["t"] == "blob", r["s"] == "blob")
                for r in rows]

    def windows(self, run_id: str, seqs: list[int],
                with_data: bool = True) -> dict[int, tuple[dict | None, bytes | None]]:
        """{seq: (stored verdict dict, raw data or None)} for the windows `seqs`."""
        wanted = set(seqs)
        if not wanted:
            return {}
        if not self.direct:
            return {w.seq: (w.verdict, w.data) for w in self.store.windows(run_id, with_data=with_data)
                    if w.seq in wanted}
        out: dict[int, tuple[dict | None, bytes | None]] = {}
        ordered = sorted(wanted)
        cols = "seq, verdict" + (", data" if with_data else "")
        for i in range(0, len(ordered), 500):  # SQLite's limit on bound parameters
            chunk = ordered[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._query(f"SELECT {cols} FROM windows WHERE run_id = ? AND seq IN ({marks})",
                                 [run_id, *chunk]):
                data = bytes(r["data"]) if with_data and r["data"] is not None else None
                out[r["seq"]] = (load_json(r["verdict"]), data)
        return out

    def summaries(self, run_id: str, seqs: list[int]) -> dict[int, dict]:
        """{seq: summary of the raw data} for those of the windows `seqs` whose raw data was dropped
        (reporting.model.window_summary)."""
        wanted = set(seqs)
        if not wanted:
            return {}
        if not self.direct:
            return {w.seq: w.raw_summary for w in self.store.windows(run_id, with_data=True)
                    if w.seq in wanted and getattr(w, "raw_summary", None)}
        out: dict[int, dict] = {}
        ordered = sorted(wanted)
        with self._lock:
            if not self._has("summary"):
                return {}
        for i in range(0, len(ordered), 500):
            chunk = ordered[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._query(f"SELECT seq, summary FROM windows WHERE run_id = ? AND seq IN ({marks})"
                                 " AND summary IS NOT NULL", [run_id, *chunk]):
                out[r["seq"]] = load_json(r["summary"])
        return out

    # ------------------------------------------------------------ timeline

    def timeline(self, run_id: str, limit: int = 20_000) -> list[dict[str, Any]]:
        if not self.direct:
            return self.store.timeline(run_id, limit)
        with self._lock:
            return read_timeline(self._conn(), run_id, limit, archive=self._has("archive"))
