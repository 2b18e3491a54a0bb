"""Run `shadowgate serve` as its own process on 127.0.0.1, for end-to-end tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from modelserver.process import stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """A running webhook service: `url`, `stop()`, `log()`."""

    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path) -> None:
        self.proc, self.url, self.log_path = proc, url, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (the service stops gracefully), SIGKILL after timeout_s seconds."""
        return stop_process(self.proc, timeout_s)

    def __enter__(self) -> "ServiceProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_service(config_path: Path, log_dir: Path, *, port: int | None = None, extra_args=(),
                  ready_timeout_s: float = 60.0, name: str = "service") -> ServiceProcess:
    """Start `python -m webhook.serve --config config_path` and wait until /readyz answers 200."""
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    n, log_path = 1, log_dir / f"{name}.log"
    while log_path.exists():
        n += 1
        log_path = log_dir / f"{name}-{n}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "webhook.serve", "--config", str(config_path), "--bind", f"127.0.0.1:{port}",
             "--log-level", "warning", *extra_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(REPO_ROOT), env=env)
    svc = ServiceProcess(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}:\n{svc.log()[-3000:]}")
        try:
            if requests.get(svc.url + "/readyz", timeout=1).status_code == 200:
                return svc
        except requests.RequestException:
            pass
        time.sleep(0.2)
    svc.stop()
    raise RuntimeError(f"service not ready after {ready_timeout_s:g} s:\n{svc.log()[-3000:]}")
