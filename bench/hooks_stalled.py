"""Hook answer times with a stalled canary and a Prometheus that never answers.

    .venv/bin/python -m bench.hooks_stalled [--rounds 40]

Stable is a real stand-in TF Serving; the canary's address and the CTR
Prometheus are sockets that accept connections and never answer (the worst
peer: no refusal, no error, only the caller's deadline). The service runs as
its own process and is driven in Flagger's order and by Argo calls:
confirm-rollout, pre-rollout (it checks the canary live, under its deadline),
then rounds of rollback / rollout / confirm-traffic-increase /
confirm-promotion / event and an Argo call, and post-rollout. Nothing slow
may sit on those hooks' path: the CTR fetch runs when a window closes,
beside the answers, and the session stop runs in the background. Prints
p50 / p99 / max per hook; the goal is p99 < 50 ms for every hook but
pre-rollout, which must stay within its deadline (8 s).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers import start_modelserver  # noqa: E402
from tests.webhook.service import start_service  # noqa: E402


class Silent:
    """A TCP listener that accepts, reads and never writes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)  # held open, never answered
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        for c in self.conns:
            c.close()
        self.sock.close()


def config(stable, canary_port: int, prom_port: int, golden: str, store: str) -> dict:
    return {
        "server": {"store": store, "interval_s": 2.0, "threads": 8},
        "analyses": {"stalled": {
            "stable": {"protocol": "tfserving-grpc", "address": stable.grpc_target, "model": "digits",
                       "label": "stable", "timeout_s": 1},
            "canary": {"protocol": "tfserving-grpc", "address": f"127.0.0.1:{canary_port}", "model": "digits",
                       "label": "canary", "timeout_s": 2},
            "golden": golden,
            "probe": {"rate": 20, "timeout_s": 2},
            "load": {"rate": 50, "max_rate": 100, "timeout_s": 2, "concurrency": 32},
            "ctr": {"prometheus": f"http://127.0.0.1:{prom_port}", "timeout_s": 3,
                    "clicks": 'sum(increase(clicks_total{version="{version}"}[{window}]))',
                    "impressions": 'sum(increase(impressions_total{version="{version}"}[{window}]))'},
            "checks": {"drift": {"inputs": False}},
            "allow_undecidable": True,  # hook answer times are measured here, not the gate (100 requests a window)
        }},
    }


def measure(rounds: int, work: Path, progress=print) -> dict[str, list[float]]:
    """Answer times (seconds) per hook; also the statuses seen, under key 'status:<hook>'."""
    from demo.models import build_demo_assets

    assets = build_demo_assets(Path(__file__).resolve().parents[1] / ".cache")
    stable = start_modelserver(work / "stable", model_config=assets.model_config, name="stable-server")
    canary, prom = Silent(), Silent()
    path = work / "analyses.yaml"
    path.write_text(yaml.safe_dump(config(stable, canary.port, prom.port, str(assets.golden),
                                          str(work / "runs.db"))))
    svc = start_service(path, work)
    times: dict[str, list[float]] = {}
    session = requests.Session()

    def call(hook: str, phase: str = "Progressing", url: str | None = None, **meta) -> None:
        body = {"name": "stalled", "namespace": "test", "phase": phase, "checksum": "s1", "metadata": meta}
        t = time.perf_counter()
        if url:
            r = session.get(url, timeout=12)
        else:
            r = session.post(f"{svc.url}/flagger/{hook}", json=body, timeout=12)
        times.setdefault(hook, []).append(time.perf_counter() - t)
        times.setdefault(f"status:{hook}", []).append(r.status_code)

    try:
        call("confirm-rollout", phase="Initialized")
        call("pre-rollout")
        argo = f"{svc.url}/argo/v1/analyses/stalled?rollout=stalled-argo&revision=a1"
        for i in range(rounds):
            for hook in ("rollback", "rollout", "confirm-traffic-increase", "confirm-promotion"):
                call(hook)
            call("event", eventMessage=f"round {i}", eventType="Normal")
            call("argo", url=argo)
            time.sleep(0.1)
            if progress and i % 10 == 9:
                progress(f"round {i + 1}/{rounds}")
        call("post-rollout", phase="Failed")
    finally:
        svc.stop()
        stable.stop()
        canary.close()
        prom.close()
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        times = measure(args.rounds, Path(d))
    print("| hook | calls | statuses | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for hook, xs in times.items():
        if hook.startswith("status:"):
            continue
        xs = sorted(xs)
        p99 = xs[min(len(xs) - 1, int(0.99 * len(xs)))]
        statuses = ",".join(str(s) for s in sorted(set(times[f"status:{hook}"])))
        print(f"| {hook} | {len(xs)} | {statuses} | {1000 * statistics.median(xs):.1f} | {1000 * p99:.1f} | "
              f"{1000 * xs[-1]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
