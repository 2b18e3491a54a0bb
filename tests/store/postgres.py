"""A throwaway PostgreSQL cluster for tests: the Debian `postgresql` package's own binaries, on a free port.

    with running_postgres(work_dir) as pg:
        url = pg.create_database("t1")   # postgresql://shadowgate:<password>@127.0.0.1:<port>/t1

PostgreSQL refuses to run as root: as root, initdb and postgres run as the
`postgres` user (runuser) in a directory it owns; otherwise as the current
user. fsync is off (a test cluster never outlives its tests). Stopped with
`pg_ctl stop -m immediate` however the block ends.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from tests.webhook.service import free_port

USER = "shadowgate"


def postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb and postgres, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


class Postgres:
    def __init__(self, port: int, password: str, data: Path, run_as: list[str], bindir: Path) -> None:
        self.port, self.password, self.data, self.run_as, self.bindir = port, password, data, run_as, bindir

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def sql(self, db: str, statement: str, args=()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(statement, args)
            return cur.fetchall() if cur.description else []


@contextlib.contextmanager
def running_postgres(ready_timeout_s: float = 60.0) -> Iterator[Postgres]:
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (Debian package `postgresql`: `make system-deps`)")
    root = Path(tempfile.mkdtemp(prefix="shadowgate-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    password = secrets.token_hex(12)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if run_as:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
    data = root / "data"
    log = root / "postgres.log"
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
                    "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True, timeout=120)
    port = free_port()
    pg = Postgres(port, password, data, run_as, bindir)
    with open(log, "wb") as out:
        proc = subprocess.Popen([*run_as, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
                                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                                 "-c", "max_connections=300", "-c", "shared_buffers=32MB"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        import psycopg

        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                psycopg.connect(pg.url(), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres not ready after {ready_timeout_s:g} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield pg
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w",
                        "-t", "20"], capture_output=True, timeout=60)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
