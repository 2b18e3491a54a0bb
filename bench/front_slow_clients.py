"""Answer time of /healthz and a hook while slow clients hold connections open.

Starts `shadowgate serve` (the asyncio front, `server.threads` 16) on
127.0.0.1 and measures, from a client on one kept-alive connection, the
answer time of `GET /healthz` and of a Flagger `event` hook: first on a quiet
service, then with `--slow` connections held open that never finish (half
of them stop inside the headers, half half-way through a JSON body). With
`--compare-gunicorn` the same app also runs under gunicorn's gthread worker
(the serving model before the front, 16 threads), where 16 such connections
were enough to stop every answer.

    python -m bench.front_slow_clients --slow 200 --calls 500

Prints p50, p99 and max in milliseconds, and how many calls got no answer
within `--timeout` seconds. Target: under 100 ms with 200 slow connections.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.webhook.service import free_port, start_service  # noqa: E402

EVENT = {"name": "digits", "namespace": "bench", "checksum": "slowclients", "phase": "Progressing",
         "metadata": {"eventMessage": "bench", "eventType": "Normal"}}


def _config(d: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(d / "golden.npz", inputs=rng.random((64, 8)).astype(np.float32), labels=rng.integers(0, 10, 64))
    target = {"protocol": "tfserving-grpc", "address": "127.0.0.1:1", "model": "digits"}
    cfg = {
        # Slow connections must stay held for the whole measurement.
        "server": {"store": str(d / "runs.db"), "threads": 16, "read_timeout_s": 300, "interval_s": 3600},
        "analyses": {"digits": {"stable": {**target, "label": "stable"}, "canary": {**target, "label": "canary"},
                                "golden": "golden.npz", "interval_s": 3600}},
    }
    path = d / "analyses.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _hold(port: int, n: int) -> list[socket.socket]:
    held = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            s.sendall(b"POST /flagger/rollout HTTP/1.1\r\nHost: shadowgate\r\nContent-Type: application/json\r\n")
        else:
            s.sendall(b"POST /flagger/rollout HTTP/1.1\r\nHost: shadowgate\r\nContent-Length: 400\r\n\r\n"
                      b'{"name": "digits", "namespace": "te')
        held.append(s)
    return held


def _measure(url: str, calls: int, timeout_s: float) -> dict[str, tuple[float, float, float, int]]:
    """Per target: (p50 ms, p99 ms, max ms, calls without an answer)."""
    out = {}
    with requests.Session() as http:
        for name, call in (("healthz", lambda: http.get(url + "/healthz", timeout=timeout_s)),
                           ("event hook", lambda: http.post(url + "/flagger/event", json=EVENT, timeout=timeout_s))):
            times, lost = [], 0
            for _ in range(calls):
                t = time.perf_counter()
                try:
                    call().raise_for_status()
                    times.append((time.perf_counter() - t) * 1e3)
                except requests.RequestException:
                    lost += 1
                    if lost >= 3:  # starved: no point waiting out every call
                        lost += calls - len(times) - lost
                        break
            a = np.array(times) if times else np.array([np.nan])
            out[name] = (float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max()), lost)
    return out


def _gunicorn(config: Path, d: Path, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, SHADOWGATE_BENCH_CONFIG=str(config), PYTHONPATH=str(REPO))
    log = open(d / "gunicorn.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--threads", str(threads),
                             "--workers", "1", "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
                             "bench.front_slow_clients:gunicorn_app()"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("gunicorn did not start")


def gunicorn_app():
    """The same Flask app, for `gunicorn ... 'bench.front_slow_clients:gunicorn_app()'`."""
    from webhook.app import create_app
    from webhook.config import load_config

    return create_app(load_config(os.environ["SHADOWGATE_BENCH_CONFIG"]))


def _row(server: str, slow: int, m: dict) -> list[str]:
    rows = []
    for name, (p50, p99, mx, lost) in m.items():
        fmt = (lambda v: "-" if np.isnan(v) else f"{v:.1f}")
        rows.append(f"| {server} | {slow} | {name} | {fmt(p50)} | {fmt(p99)} | {fmt(mx)} | {lost} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slow", type=int, default=200, help="connections held open that never finish")
    ap.add_argument("--calls", type=int, default=500, help="calls per target and case")
    ap.add_argument("--timeout", type=float, default=5.0, help="client timeout per call (seconds)")
    ap.add_argument("--compare-gunicorn", action="store_true",
                    help="also run the app under gunicorn gthread (16 threads), the serving model before the front")
    args = ap.parse_args(argv)

    rows = ["| server | slow connections | call | p50 ms | p99 ms | max ms | no answer |",
            "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        config = _config(d)
        servers = [("shadowgate serve (asyncio front)", None)]
        if args.compare_gunicorn:
            servers.append(("gunicorn gthread, 16 threads", "gunicorn"))
        for label, kind in servers:
            if kind is None:
                svc = start_service(config, d, name="front-bench")
                url, stop = svc.url, svc.stop
            else:
                proc, url = _gunicorn(config, d, 16)
                stop = lambda p=proc: (p.terminate(), p.wait(20))  # noqa: E731
            try:
                port = int(url.rsplit(":", 1)[1])
                rows += _row(label, 0, _measure(url, args.calls, args.timeout))
                held = _hold(port, args.slow)
                time.sleep(0.5)
                try:
                    rows += _row(label, args.slow, _measure(url, args.calls, args.timeout))
                finally:
                    for s in held:
                        s.close()
            finally:
                stop()
            print("\n".join(rows), flush=True)
            rows = rows[:2]
    return 0


if __name__ == "__main__":
    sys.exit(main())
