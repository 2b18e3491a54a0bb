"""Pre-rollout answer time when many analyses start together.

    .venv/bin/python -m bench.prerollout_burst --analyses 20 [--rounds 5] [--golden-wait 1.5|none]

One stand-in TF Serving (the demo model: canary identical to stable) and
the webhook service (`shadowgate serve`, one process) with N analyses.
Each round, N Flagger-like canaries of a new revision are admitted
(confirm-rollout), then all N call pre-rollout at the same instant (a
barrier), as when N Canary objects are applied together; each answer time
is measured by the client, from send to full response. post-rollout ends
the round's runs. Pre-rollout checks the canary's model and signature, then
waits for the golden-set check (every golden row on both versions) up to
`server.golden_wait_s`; an answer without the golden result says "still
running" and the result gates the next hooks.

Prints p50, p99 and max in milliseconds, the statuses, and how many answers
carried the golden-set result. Target: p99 under 2 s with 20 analyses.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import start_modelserver  # noqa: E402
from tests.webhook.service import start_service  # noqa: E402


def _golden_subset(src: Path, rows: int, dst: Path) -> str:
    with np.load(src) as z:
        np.savez(dst, inputs=z["inputs"][:rows], labels=z["labels"][:rows])
    return str(dst)


def _config(n: int, server, golden: str, golden_wait: float | None, store: str) -> dict:
    def target(**which):
        return {"protocol": "tfserving-grpc", "address": server.grpc_target, "model": "digits", "timeout_s": 2,
                **which}

    analysis = {
        "stable": target(label="stable"),
        "canary": target(version=1),
        "golden": golden,
        "probe": {"rate": 1, "timeout_s": 2},
        "load": {"rate": 1, "max_rate": 5, "timeout_s": 2, "concurrency": 8},
        "checks": {"drift": {"inputs": False}},
        "interval_s": 10,
        "allow_undecidable": True,
    }
    srv: dict = {"store": store, "interval_s": 10, "max_sessions": max(50, n + 10),
                 "max_sessions_per_analysis": 10}
    if golden_wait is not None:
        srv["golden_wait_s"] = golden_wait
    return {"server": srv, "analyses": {f"a{i:03d}": analysis for i in range(n)}}


def _round(url: str, n: int, revision: str) -> list[tuple[int, float, str]]:
    bodies = [{"name": f"a{i:03d}", "namespace": f"team-{i % 5}", "phase": "Initialized", "checksum": revision,
               "metadata": {"analysis": f"a{i:03d}"}} for i in range(n)]
    sessions = [requests.Session() for _ in range(n)]
    for s, b in zip(sessions, bodies):
        r = s.post(f"{url}/flagger/confirm-rollout", json=b, timeout=10)
        if r.status_code != 200:
            raise RuntimeError(f"confirm-rollout {r.status_code}: {r.text[:300]}")
    out: list = [None] * n
    barrier = threading.Barrier(n)

    def pre(i: int) -> None:
        body = dict(bodies[i], phase="Progressing")
        barrier.wait()
        t = time.perf_counter()
        r = sessions[i].post(f"{url}/flagger/pre-rollout", json=body, timeout=12)
        out[i] = (r.status_code, time.perf_counter() - t, r.json().get("reason", ""))

    threads = [threading.Thread(target=pre, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s, b in zip(sessions, bodies):
        s.post(f"{url}/flagger/post-rollout", json=dict(b, phase="Succeeded"), timeout=10)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--analyses", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5, help="bursts, each with a new revision of every canary")
    ap.add_argument("--golden-rows", type=int, default=360, help="golden rows probed by each pre-rollout")
    ap.add_argument("--golden-wait", default="default",
                    help="server.golden_wait_s: seconds, 'none' (the whole hook deadline) or 'default'")
    args = ap.parse_args(argv)
    gw = {"default": None, "none": 8.0}.get(args.golden_wait)
    if gw is None and args.golden_wait not in ("default",):
        gw = float(args.golden_wait)

    from demo.models import build_demo_assets

    assets = build_demo_assets(REPO / ".cache")
    samples: list = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        server = start_modelserver(d, model_config=assets.model_config)
        try:
            golden = _golden_subset(assets.golden, args.golden_rows, d / "golden.npz")
            cfg = _config(args.analyses, server, golden, gw, str(d / "runs.db"))
            (d / "analyses.yaml").write_text(yaml.safe_dump(cfg))
            svc = start_service(d / "analyses.yaml", d)
            try:
                for k in range(args.rounds):
                    samples += _round(svc.url, args.analyses, f"rev{k}")
                    time.sleep(2.0)  # the round's load stops
            finally:
                svc.stop()
        finally:
            server.stop()
    ms = np.array([t for _, t, _ in samples]) * 1000
    golden_in = sum(1 for _, _, why in samples if why.startswith("golden set:"))
    print(f"{args.analyses} analyses starting together, {args.rounds} rounds, {args.golden_rows} golden rows, "
          f"golden_wait_s {args.golden_wait}")
    print(f"pre-rollout: {len(ms)} calls, p50 {np.percentile(ms, 50):.0f} ms, p99 {np.percentile(ms, 99):.0f} ms, "
          f"max {ms.max():.0f} ms, statuses {sorted({s for s, _, _ in samples})}")
    print(f"answers with the golden-set result: {golden_in}; still running (gates the next hooks): "
          f"{sum(1 for _, _, why in samples if 'still running' in why)}; "
          f"in the background: {sum(1 for _, _, why in samples if 'background' in why)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
