"""The demo's little cluster on 127.0.0.1: stand-in TF Servings, Prometheus, Shadowgate.

Like Kubernetes Services, every address is fixed before anything starts:
the stable stand-in (`digits-primary`), the canary's port (`digits-canary`,
served by whichever canary version is scaled up, none at first),
Prometheus, the users' click exporter and the service. The service's
`analyses.yaml` and Prometheus' scrape configuration are written from these
addresses, so the canary can come and go as Flagger or Argo scale it.

Every process is started by the Supervisor (demo.procs) and waited for with
a deadline: a stand-in prints its ready line, Prometheus and the service
answer their readiness endpoints.
"""

from __future__ import annotations

import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from .models import MODEL_NAME, RolloutAssets
from .procs import REPO_ROOT, Child, ChildDied, Supervisor

_READY_RE = re.compile(r"^modelserver ready grpc=(\S+):(\d+) rest=(\S+):(\d+)\s*$", re.M)
HOST = "127.0.0.1"

# The bad canary's latency tail: log-normal extra delay, median 3 ms, sigma 2
# (P95 about 80 ms, P99 about 0.3 s, one in 1,500 beyond the 2 s deadline),
# against a few ms to a few tens of ms for the stable stand-in on a busy
# 2-core machine.
BAD_LATENCY_S = 0.003
BAD_LATENCY_SIGMA = 2.0


class StartError(RuntimeError):
    """A piece of the demo did not start; the message says which and where its log is."""


# `make runtime-venv`: the image's wheels, no TensorFlow (the service imports in about a second
# there, against 10 s or more with TensorFlow in the development venv).
RUNTIME_PYTHON = REPO_ROOT / ".cache" / "runtime-venv" / "bin" / "python"


def runtime_python() -> str | None:
    """The runtime venv's Python when it is built, else None (then the development venv runs the service)."""
    built = RUNTIME_PYTHON.is_file() and (RUNTIME_PYTHON.parent.parent / ".installed-stamp").is_file()
    return str(RUNTIME_PYTHON) if built else None


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_or_free(wanted: int | None, fallback_free: bool) -> int:
    """`wanted` if it can be bound; else a free port when `fallback_free`, else StartError."""
    if not wanted:
        return free_port()
    with socket.socket() as s:
        try:
            s.bind((HOST, wanted))
            return wanted
        except OSError:
            if fallback_free:
                return free_port()
            raise StartError(f"port {wanted} on {HOST} is taken (give another, or 0 for any free port)") from None


@dataclass
class Ports:
    """Every port of the demo, chosen before anything starts."""

    service: int
    prometheus: int
    users: int
    stable_grpc: int
    stable_rest: int
    canary_grpc: int
    canary_rest: int

    @classmethod
    def choose(cls, service: int | None, prometheus: int | None) -> "Ports":
        """service / prometheus: wanted ports (None: 8080 / 9090 if free, else any free one; 0: any)."""
        taken: set[int] = set()

        def pick(wanted: int | None, default: int) -> int:
            p = port_or_free(default if wanted is None else wanted, fallback_free=wanted is None)
            while p in taken:
                p = free_port()
            taken.add(p)
            return p

        return cls(service=pick(service, 8080), prometheus=pick(prometheus, 9090),
                   **{k: pick(0, 0) for k in ("users", "stable_grpc", "stable_rest", "canary_grpc", "canary_rest")})


@dataclass
class DemoSettings:
    """The knobs the demo's analysis is built from (seconds, requests per second)."""

    interval_s: float = 4.0
    load_rate: float = 75.0
    probe_rate: float = 10.0
    ctr_min_impressions: int = 200
    quantile: float = 0.95  # the latency check's quantile
    min_samples: int = 200  # requests per version a window needs for latency evidence


def analyses_yaml(ports: Ports, assets: RolloutAssets, run_dir: Path, s: DemoSettings) -> dict[str, Any]:
    """The service's configuration: one analysis `digits`, as examples/analyses.yaml has it.

    The gate keeps its thresholds and error rates (alpha 1 %, beta 5 %,
    accuracy 2 / 5 points, latency 1.5x / 2x, errors 0.5 / 1 %, CTR 15 / 30 %).
    The demo's own settings, all for a short run on a small, possibly busy
    machine: windows of `interval_s` seconds (Flagger's interval is the
    same); the latency check on P95 (`quantile`), which a few hundred
    requests per window measure, where a P99 needs about 600 per window per
    version, more load than two cores shared with the model servers keep on
    time; `ctr.min_impressions` lowered to what a few simulated users make
    in a window at 25 % weight (the default, 1,000, suits production
    traffic); and no input drift (both versions get the same golden inputs,
    so it says nothing about the canary and only costs CPU; prediction drift
    is still reported).
    """
    def target(port: int, label: str) -> dict[str, Any]:
        return {"protocol": "tfserving-grpc", "address": f"{HOST}:{port}", "model": MODEL_NAME,
                "label": label, "signature": "serving_default", "timeout_s": 2}

    window = "{window}"
    return {
        "server": {
            "bind": f"{HOST}:{ports.service}",
            "threads": 8,
            "store": str(run_dir / "runs.db"),
            "interval_s": s.interval_s,
            # Argo runs have no end hook: their load stops soon after the last measurement.
            "idle_timeout_s": 3 * s.interval_s,
            "public_url": f"http://{HOST}:{ports.service}",
            "retention_days": None,
        },
        "analyses": {
            MODEL_NAME: {
                "stable": target(ports.stable_grpc, "stable"),
                "canary": target(ports.canary_grpc, "canary"),
                "golden": str(assets.golden),
                "reference": str(assets.reference),
                "probe": {"rate": s.probe_rate, "timeout_s": 2},
                "load": {"rate": s.load_rate, "max_rate": max(100.0, s.load_rate), "timeout_s": 2,
                         "concurrency": 64},
                "interval_s": s.interval_s,
                "checks": {
                    "alpha": 0.01, "beta": 0.05,
                    "accuracy": {"alert": 0.02, "rollback": 0.05},
                    "latency": {"quantile": s.quantile, "alert": 1.5, "rollback": 2.0,
                                "min_samples": s.min_samples},
                    "errors": {"alert": 0.005, "rollback": 0.01},
                    "errors_increase": {"alert": 0.005, "rollback": 0.01},
                    "ctr": {"alert": 0.15, "rollback": 0.30, "min_impressions": s.ctr_min_impressions},
                    "drift": {"inputs": False},
                },
                "ctr": {
                    "prometheus": f"http://{HOST}:{ports.prometheus}",
                    "clicks": f'sum(increase(clicks_total{{app="digits",version="{{version}}"}}[{window}]))',
                    "impressions": f'sum(increase(impressions_total{{app="digits",version="{{version}}"}}[{window}]))',
                    "timeout_s": 2,
                    "versions": {"stable": "stable", "canary": "canary"},
                },
            },
        },
    }


def prometheus_yaml(ports: Ports) -> dict[str, Any]:
    """Scrape the users' clicks every second, the service and the stand-ins every 2 s."""
    def job(name: str, target: str, path: str = "/metrics", every: str = "2s") -> dict[str, Any]:
        return {"job_name": name, "metrics_path": path, "scrape_interval": every,
                "static_configs": [{"targets": [target]}]}

    serving = "/monitoring/prometheus/metrics"
    return {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "scrape_configs": [
            job("users", f"{HOST}:{ports.users}", every="1s"),
            job("shadowgate", f"{HOST}:{ports.service}"),
            job("digits-primary", f"{HOST}:{ports.stable_rest}", serving),
            job("digits-canary", f"{HOST}:{ports.canary_rest}", serving),
        ],
    }


class ModelServer:
    """A stand-in TF Serving the demo started: addresses, readiness, its Child."""

    def __init__(self, child: Child, role: str, version: int, grpc_port: int, rest_port: int) -> None:
        self.child, self.role, self.version = child, role, version
        self.grpc_target = f"{HOST}:{grpc_port}"
        self.rest_url = f"http://{HOST}:{rest_port}"
        self.ready_after_s: float | None = None

    def ready(self) -> bool:
        """True once its ready line is in the log; ChildDied if it exited first."""
        if self.ready_after_s is not None:
            return True
        try:
            text = self.child.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        if _READY_RE.search(text):
            self.ready_after_s = time.monotonic() - self.child.started
            return True
        if not self.child.alive():
            raise ChildDied(f"{self.child.name} exited with code {self.child.proc.returncode} before it was "
                            f"ready (log {self.child.log_path}):\n{self.child.log_tail()}")
        return False

    def wait_ready(self, timeout_s: float = 90.0) -> float:
        """Block until ready; returns seconds since start. StartError after `timeout_s`."""
        deadline = self.child.started + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise StartError(f"{self.child.name} not ready after {timeout_s:g} s (log {self.child.log_path})")
            time.sleep(0.1)
        return self.ready_after_s or 0.0


class Stack:
    """Starts and stops the demo's processes; every address comes from `ports`."""

    def __init__(self, sup: Supervisor, assets: RolloutAssets, ports: Ports, run_dir: Path,
                 settings: DemoSettings) -> None:
        self.sup, self.assets, self.ports, self.run_dir, self.settings = sup, assets, ports, run_dir, settings
        self.config_path = run_dir / "analyses.yaml"
        self.config_path.write_text(yaml.safe_dump(analyses_yaml(ports, assets, run_dir, settings), sort_keys=False))
        self.stable: ModelServer | None = None
        self.canary: ModelServer | None = None
        self.service: Child | None = None
        self.prometheus: Child | None = None
        self._canaries = 0
        self._terminating: list[Child] = []
        # The service and `shadowgate judge` run as in the image when the runtime venv is there.
        self.runtime_python = runtime_python()
        self.service_python = self.runtime_python or sys.executable

    @property
    def service_url(self) -> str:
        return f"http://{HOST}:{self.ports.service}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{HOST}:{self.ports.prometheus}"

    # ------------------------------------------------------------ model servers

    def _model_server(self, role: str, name: str, log_name: str, grpc_port: int, rest_port: int,
                      faults: list[str]) -> ModelServer:
        argv = [sys.executable, "-m", "modelserver", "--host", HOST, "--port", grpc_port,
                "--rest_api_port", rest_port, "--model_config_file", self.assets.configs[role], *faults]
        child = self.sup.spawn(name, argv, log_name=log_name)
        return ModelServer(child, role, self.assets.versions[role], grpc_port, rest_port)

    def start_stable(self) -> ModelServer:
        self.stable = self._model_server("stable", "digits-primary (stable v1)", "stable", self.ports.stable_grpc,
                                         self.ports.stable_rest, [])
        return self.stable

    def scale_up_canary(self, role: str) -> ModelServer:
        """Start the canary's stand-in on the canary port (returns at once; see ModelServer.ready)."""
        self.scale_down_canary(wait=True)  # the port must be free again
        faults = []
        if role == "bad":
            faults = ["--latency", str(BAD_LATENCY_S), "--latency-sigma", str(BAD_LATENCY_SIGMA),
                      "--fault-seed", "7"]
        self._canaries += 1
        version = self.assets.versions[role]
        self.canary = self._model_server(role, f"digits-canary ({role} v{version})",
                                         f"canary-{self._canaries}-{role}", self.ports.canary_grpc,
                                         self.ports.canary_rest, faults)
        return self.canary

    def scale_down_canary(self, wait: bool = False) -> None:
        """Scale the canary to zero as Kubernetes does: its pod is asked to stop (SIGTERM) and the
        controller goes on at once (Flagger calls post-rollout right after ScaleToZero); `wait`
        also waits for it to be gone (SIGKILL after 5 s)."""
        if self.canary is not None:
            self._terminating.append(self.canary.child)
            self.sup.terminate(self.canary.child)
            self.canary = None
        if wait:
            for child in self._terminating:
                self.sup.stop(child, grace_s=5.0)
            self._terminating = []

    # ------------------------------------------------------------ Prometheus and the service

    def start_prometheus(self, binary: str) -> Child:
        d = self.run_dir / "prometheus"
        d.mkdir(exist_ok=True)
        cfg = d / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(prometheus_yaml(self.ports), sort_keys=False))
        self.prometheus = self.sup.spawn("prometheus", [
            binary, f"--config.file={cfg}", f"--storage.tsdb.path={d / 'data'}",
            f"--web.listen-address={HOST}:{self.ports.prometheus}", "--storage.tsdb.retention.time=1d",
            "--log.level=warn"])
        return self.prometheus

    def start_service(self) -> Child:
        self.service = self.sup.spawn("shadowgate", [
            self.service_python, "-m", "webhook.serve", "--config", self.config_path,
            "--bind", f"{HOST}:{self.ports.service}", "--log-level", "warning"], log_name="service")
        return self.service

    def wait_http(self, child: Child, url: str, timeout_s: float = 120.0) -> float:
        """Wait until `url` answers 200; returns seconds since `child` started."""
        deadline = child.started + timeout_s
        while True:
            if not child.alive():
                raise ChildDied(f"{child.name} exited with code {child.proc.returncode} (log {child.log_path}):\n"
                                f"{child.log_tail()}")
            try:
                if requests.get(url, timeout=1.0).status_code == 200:
                    return time.monotonic() - child.started
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise StartError(f"{child.name} did not answer {url} within {timeout_s:g} s (log {child.log_path})")
            time.sleep(0.2)


def find_prometheus() -> str | None:
    """The Prometheus server binary (Debian's `prometheus`), or None."""
    return shutil.which("prometheus") or next(
        (p for p in ("/usr/bin/prometheus", "/usr/local/bin/prometheus") if Path(p).is_file()), None)
