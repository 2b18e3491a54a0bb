"""Where runs, windows, verdicts and timelines persist.

`Store` (base.py) is the one small interface the rest of the service uses;
two backends implement it:

- `SQLiteStore` (sqlite.py): the embedded default, one file, one process;
- `PostgresStore` (postgres.py): one PostgreSQL shared by any number of
  replicas (`server.store: postgresql://...`). A lease row per live run
  says which replica measures it (webhook/replicas.py); windows are stored
  only by the lease holder. psycopg is imported only when this store is
  opened, so SQLite users need not install it.

Everything the modules imported from the former `webhook/store.py` is
importable from here.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .base import (FINAL_STATUSES, RUN_STATUSES, STOPPED_STATUSES, TABLES, ZDICT_V1, Lease, LeaseLost, Renewal,
                   RunRecord, Store, StoredWindow, StoreUnavailable, load_json, pack_json, summarize_rows)
from .sqlite import SQLiteStore, has_table, read_timeline

__all__ = ["FINAL_STATUSES", "RUN_STATUSES", "STOPPED_STATUSES", "TABLES", "ZDICT_V1", "Lease", "LeaseLost",
           "PostgresStore", "Renewal", "RunRecord", "SQLiteStore", "Store", "StoredWindow", "StoreUnavailable", "has_table",
           "is_postgres_url", "load_json", "open_store", "pack_json", "read_timeline", "summarize_rows"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(store: str) -> bool:
    """`server.store` names a PostgreSQL database (shared by replicas) rather than a SQLite file."""
    return store.lower().startswith(POSTGRES_SCHEMES)


def open_store(location: str, **kwargs: Any) -> Store:
    """The store `server.store` names: a postgresql:// URL or a SQLite file path."""
    if is_postgres_url(location):
        from .postgres import PostgresStore

        return PostgresStore(location, **kwargs)
    try:
        return SQLiteStore(location, **kwargs)
    except (OSError, sqlite3.Error) as exc:
        raise StoreUnavailable(f"cannot open the store {location}: {exc}") from None


def __getattr__(name: str) -> Any:
    # `from webhook.store import PostgresStore` without importing psycopg for everyone else.
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(name)
