"""`python -m demo` (`make demo`): two stand-in TF Servings, the golden set, a table.

Builds (or finds cached) the demo models, starts a stable and a canary
stand-in (each serves the demo config; the stable one is called by label
`stable` -> version 1, the canary one by label `canary` -> version 2, as a
Flagger primary and canary deployment would be), sends every golden row to
both over gRPC, one request per row, and prints accuracy and latency per
version. The servers are stopped at the end, also on errors.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
WARMUP_REQUESTS = 20


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shadowgate demo",
                                description="Stable and canary stand-ins scored on the golden set.")
    p.add_argument("--cache-dir", default=str(REPO_ROOT / ".cache"),
                   help="where the demo models are built and cached (default .cache/)")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="deadline of each request in seconds (default 5)")
    return p


def _score(target: str, label: str, model_name: str, inputs: np.ndarray, labels: np.ndarray,
           timeout_s: float) -> dict:
    """Send each row alone; returns accuracy (0..1), latencies (s) and the version that answered."""
    from loadtest.clients import GrpcClient, ModelRef

    with GrpcClient(target, ModelRef(model_name, label=label), timeout_s=timeout_s) as client:
        for i in range(WARMUP_REQUESTS):
            client.predict({"x": inputs[i % len(inputs)][None, :]})
        latencies = np.empty(len(inputs))
        predicted = np.empty(len(inputs), dtype=np.int64)
        versions = set()
        for i, row in enumerate(inputs):
            start = time.perf_counter()
            result = client.predict({"x": row[None, :]})
            latencies[i] = time.perf_counter() - start
            predicted[i] = int(result.outputs["classes"][0])
            versions.add(result.model_version)
    return {"accuracy": float(np.mean(predicted == labels)), "latencies_s": latencies,
            "versions": sorted(v for v in versions if v is not None)}


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns 0, or 1 with a one-line reason."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from demo.models import build_demo_assets
    from loadtest.errors import ServingError
    from modelserver.process import ModelServerError, start_process

    t0 = time.monotonic()
    print("building demo models (cached after the first run) ...", flush=True)
    assets = build_demo_assets(Path(args.cache_dir))
    golden = np.load(assets.golden)
    inputs, labels = golden["inputs"], golden["labels"]
    log_dir = Path(tempfile.mkdtemp(prefix="shadowgate-demo-"))
    print("starting stable and canary stand-ins ...", flush=True)

    roles = ("stable", "canary")
    servers = {}
    try:
        with ThreadPoolExecutor(len(roles)) as pool:
            futures = {role: pool.submit(start_process, ["--model_config_file", assets.model_config],
                                         log_dir, role) for role in roles}
            errors = []
            for role, fut in futures.items():
                try:
                    servers[role] = fut.result()
                except ModelServerError as e:
                    errors.append(f"{role}: {e}")
            if errors:
                print("demo: a stand-in did not start (logs in " + str(log_dir) + "): "
                      + "; ".join(errors), file=sys.stderr)
                return 1
        rows = []
        for role in roles:
            ms = servers[role]
            result = _score(ms.grpc_target, role, assets.model_name, inputs, labels, args.timeout)
            lat_ms = result["latencies_s"] * 1000.0
            rows.append((role, ",".join(map(str, result["versions"])), ms.grpc_target,
                         len(labels), result["accuracy"], np.percentile(lat_ms, 50),
                         np.percentile(lat_ms, 99)))
    except ServingError as e:
        print(f"demo: a request failed: {e} (server logs in {log_dir})", file=sys.stderr)
        return 1
    finally:
        for ms in servers.values():
            ms.stop()
    shutil.rmtree(log_dir, ignore_errors=True)

    print()
    print(f"golden set: {len(labels)} held-out digits, one gRPC Predict per row")
    print(f"{'label':<8} {'version':>7}  {'server':<21} {'rows':>5} {'accuracy':>9} "
          f"{'p50 ms':>7} {'p99 ms':>7}")
    for role, version, target, n, acc, p50, p99 in rows:
        print(f"{role:<8} {version:>7}  {target:<21} {n:>5} {acc * 100:>8.1f}% {p50:>7.2f} {p99:>7.2f}")
    delta = (rows[1][4] - rows[0][4]) * 100
    print(f"\ncanary accuracy minus stable: {delta:+.1f} points "
          f"(done in {time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
