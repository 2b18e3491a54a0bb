"""Start the stand-in as a child process and wait until it serves.

Used by the demo, the benchmarks and the tests (tests/servers.py wraps it):

    with start_process(["--model_config_file", cfg], log_dir=tmp) as ms:
        channel = grpc.insecure_channel(ms.grpc_target)
        requests.get(ms.rest_url + "/v1/models/digits", timeout=5)
        ms.set_faults({"latency_s": 0.05, "labels": ["canary"]})

The child binds free ports (port 0) on 127.0.0.1 and prints its ready line;
`start_process` reads it from the log file within `ready_timeout_s`
seconds (TF import and model loading take 5-10 s) or raises
`ModelServerError` with the end of the log.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

_READY_RE = re.compile(r"^modelserver ready grpc=(\S+):(\d+) rest=(\S+):(\d+)\s*$", re.M)
_REPO_ROOT = Path(__file__).resolve().parent.parent



def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> int | None:
    """SIGTERM `proc`, then SIGKILL after timeout_s seconds; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode

class ModelServerError(RuntimeError):
    """The server process did not start (message holds the end of its log)."""


class ModelServerProcess:
    """A running stand-in: addresses, fault control, stop. A context manager."""

    def __init__(self, proc: subprocess.Popen, log_path: Path, host: str,
                 grpc_port: int, rest_port: int, args: list[str]) -> None:
        self.proc = proc
        self.log_path = log_path
        self.host = host
        self.grpc_port = grpc_port
        self.rest_port = rest_port
        self.args = args

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def grpc_target(self) -> str:
        """"127.0.0.1:PORT" for grpc.insecure_channel."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        """"http://127.0.0.1:PORT", no trailing slash."""
        return f"http://{self.host}:{self.rest_port}"

    def get_faults(self, timeout_s: float = 5.0) -> dict:
        """The faults in force (GET /v1/_faults)."""
        r = requests.get(f"{self.rest_url}/v1/_faults", timeout=timeout_s)
        r.raise_for_status()
        return r.json()

    def set_faults(self, faults: dict | None, timeout_s: float = 5.0) -> dict:
        """Replace all faults (None or {} clears them); returns what the server holds.

        Raises ValueError with the server's message when a field is invalid.
        """
        r = requests.put(f"{self.rest_url}/v1/_faults", json=faults or {}, timeout=timeout_s)
        if r.status_code == 400:
            raise ValueError(r.json().get("error", r.text))
        r.raise_for_status()
        return r.json()

    def clear_faults(self, timeout_s: float = 5.0) -> dict:
        return self.set_faults({}, timeout_s)

    def metrics_text(self, timeout_s: float = 5.0) -> str:
        """The Prometheus exposition text of the server."""
        r = requests.get(f"{self.rest_url}/monitoring/prometheus/metrics", timeout=timeout_s)
        r.raise_for_status()
        return r.text

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after timeout_s seconds; returns the exit code."""
        return stop_process(self.proc, timeout_s)

    def __enter__(self) -> "ModelServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ModelServerProcess pid={self.pid} grpc={self.grpc_target} rest={self.rest_url}>"


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def start_process(args: list[str], log_dir: str | Path, name: str = "modelserver",
                  ready_timeout_s: float = 60.0, env: dict | None = None) -> ModelServerProcess:
    """Run `python -m modelserver --port 0 --rest_api_port 0 *args` and wait for it.

    log_dir: where `<name>.log` (stdout and stderr) goes.
    ready_timeout_s: seconds to wait for the ready line.
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    n = 1
    while log_path.exists():
        n += 1
        log_path = log_dir / f"{name}-{n}.log"
    full_args = ["--port", "0", "--rest_api_port", "0", "--host", "127.0.0.1", *map(str, args)]
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(_REPO_ROOT)] + ([child_env["PYTHONPATH"]] if child_env.get("PYTHONPATH") else []))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "modelserver", *full_args],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(_REPO_ROOT), env=child_env)
    deadline = time.monotonic() + ready_timeout_s
    while True:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        m = _READY_RE.search(text)
        if m:
            return ModelServerProcess(proc, log_path, m.group(1), int(m.group(2)),
                                      int(m.group(4)), full_args)
        code = proc.poll()
        if code is not None:
            raise ModelServerError(f"modelserver exited with code {code} before it was ready:\n"
                                   f"{_tail(text)}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(5)
            raise ModelServerError(f"modelserver not ready after {ready_timeout_s:g} s "
                                   f"(log {log_path}):\n{_tail(text)}")
        time.sleep(0.1)
