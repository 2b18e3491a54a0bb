"""Identical models on separate stand-in processes, driven as Flagger drives the hooks.

    .venv/bin/python -m bench.aa_rollouts                  # 20 rollouts (40-95 s each: 15-30 minutes)
    .venv/bin/python -m bench.aa_rollouts --rollouts 20 --canary-processes 3
    .venv/bin/python -m bench.aa_rollouts --rollouts 5 --rate 150

Stable and canary serve the same SavedModel version from separate `shadowgate
modelserver` processes: stable from one, the canary from one or, with
`--canary-processes N` (2 or 3), from N processes started with `--reuse_port`
on one port, one address as pods behind one Service (the kernel spreads
connections over them). Connections, not requests, are balanced, so the
analysis then opens `load.connections` = 4 x N gRPC connections per version
(the same for both: latency is compared like for like) and the canary's load
reaches every process; the figures say how its requests spread.

The service loads both versions at `--rate` requests/s each (3 s windows,
40 probe pairs/s) with the golden check at pre-rollout, and each rollout is
driven in Flagger's order (confirm-rollout, pre-rollout, then rollback /
rollout / confirm-traffic-increase every interval, confirm-promotion,
post-rollout) with threshold 2. Any rollback is a false fail of the gate:
the count must be 0. A rollout still undecided after 30 ticks counts as
undecided and is ended with post-rollout (Failed), so its load and its
admission slot do not carry over to the next one. Prints one line per
rollout and the windows each took to promotion.

Latency is judged on P90 by default (`--quantile 0.99` for P99): on two
shared cores the P99 ratio of identical versions over 660 requests swings
from 0.5x to 6x from one 3 s window to the next (host stalls), and a gate
that does not assume the windows' spread cannot tell 1x from 2x on that in
30 windows: it stays undecided (never rolled back, not promoted either).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers import start_modelserver, start_modelserver_group  # noqa: E402
from tests.webhook.drivers import FlaggerDriver  # noqa: E402
from tests.webhook.service import start_service  # noqa: E402

INTERVAL_S = 3.0
MAX_CANARY_PROCESSES = 3  # two shared cores: more would measure the host, not the gate
REQUEST_COUNT = ":tensorflow:serving:request_count"


def load_connections(canary_processes: int) -> int:
    """gRPC connections per version: 1 for one process (the default), else 4 per canary process."""
    return 1 if canary_processes == 1 else 4 * canary_processes


def config(stable_server, canary_server, golden: str, store: str, rate: float, quantile: float = 0.9,
           connections: int = 1) -> dict:
    """canary_server: one stand-in, or the first of a --reuse_port group (they share its gRPC address)."""
    def target(server):
        return {"protocol": "tfserving-grpc", "address": server.grpc_target, "model": "digits", "version": 1,
                "timeout_s": 2}

    return {
        "server": {"store": store, "interval_s": INTERVAL_S, "threads": 8, "idle_timeout_s": 30},
        "analyses": {"aa": {
            "stable": target(stable_server), "canary": target(canary_server), "golden": golden,
            "probe": {"rate": 40, "timeout_s": 2},
            "load": {"rate": rate, "max_rate": rate, "timeout_s": 2, "concurrency": 64,
                     "connections": connections},
            "checks": {"drift": {"inputs": False},
                       "latency": {"quantile": quantile, "min_samples": 200 if quantile <= 0.9 else 600}},
        }},
    }


def _ok_requests(server) -> int:
    """Predict requests the process answered OK (its own metrics, on its own REST port)."""
    for line in server.metrics_text().splitlines():
        if line.startswith(REQUEST_COUNT + "{") and 'status="OK"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def _give_up(driver) -> None:
    """End a rollout the driver stopped undecided, as an operator aborting it would (post-rollout, Failed).

    Flagger itself would wait on; left open, the run would keep its load until the idle timeout and its
    admission slot for admission_ttl (10 min): the next rollouts would share the servers with it, then
    queue behind it.
    """
    try:
        driver.call("post-rollout", phase="Failed")
    except requests.RequestException:
        pass


def run(rollouts: int, rate: float, work: Path, progress=print, quantile: float = 0.9,
        canary_processes: int = 1) -> dict:
    """Drive `rollouts` Flagger rollouts of identical versions; returns counts and the runs' figures.

    canary_processes: stand-in processes serving the canary behind one address (1..3).
    The result's `canary_requests` lists the Predict requests each canary process answered OK
    (load, probes and golden checks), in start order.
    """
    from demo.models import build_demo_assets

    if not 1 <= canary_processes <= MAX_CANARY_PROCESSES:
        raise ValueError(f"canary_processes must be 1..{MAX_CANARY_PROCESSES}, got {canary_processes}")
    assets = build_demo_assets(Path(__file__).resolve().parents[1] / ".cache")
    servers = [start_modelserver(work / "a", model_config=assets.model_config, name="stable-server")]
    try:
        if canary_processes == 1:
            canary = [start_modelserver(work / "b", model_config=assets.model_config, name="canary-server")]
        else:
            canary = start_modelserver_group(work / "b", canary_processes, model_config=assets.model_config,
                                             name="canary-server")
    except BaseException:
        servers[0].stop()
        raise
    servers += canary
    connections = load_connections(canary_processes)
    path = work / "analyses.yaml"
    path.write_text(yaml.safe_dump(config(servers[0], canary[0], str(assets.golden), str(work / "runs.db"),
                                          rate, quantile, connections)))
    out = {"promoted": 0, "rolled_back": 0, "timeout": 0, "rollback_reasons": [], "windows": [],
           "canary_processes": canary_processes, "connections": connections, "canary_requests": []}
    try:
        svc = start_service(path, work)
    except BaseException:
        for ms in servers:
            ms.stop()
        raise
    try:
        for i in range(rollouts):
            t0 = time.monotonic()
            d = FlaggerDriver(svc.url, "aa", checksum=f"aa{i}", interval_s=INTERVAL_S, threshold=2,
                              max_weight=50, step_weight=25)
            try:
                res = d.run(max_ticks=30)
            except requests.RequestException as exc:  # a hook past the caller's 10 s: Flagger's check fails
                out["no_answer"] = out.get("no_answer", 0) + 1
                progress(f"rollout {i + 1}/{rollouts}: a hook did not answer within 10 s ({exc.__class__.__name__})")
                _give_up(d)
                continue
            out[res.outcome] += 1
            if res.outcome == "timeout":
                _give_up(d)
            run_id = None
            for hook, status, text in res.calls:
                if '"run"' in text:
                    run_id = requests.models.complexjson.loads(text).get("run")
                    break
            windows = None
            if run_id:
                windows = len(requests.get(f"{svc.url}/api/v1/runs/{run_id}", timeout=5).json()["windows"])
                out["windows"].append(windows)
            if res.outcome != "promoted":
                out["rollback_reasons"].append([c for c in res.calls if c[1] > 202][-3:])
            progress(f"rollout {i + 1}/{rollouts}: {res.outcome} after {res.ticks} ticks, {windows} windows, "
                     f"{time.monotonic() - t0:.0f} s")
        out["canary_requests"] = [_ok_requests(ms) for ms in canary]
    finally:
        svc.stop()
        for ms in servers:
            ms.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rollouts", type=int, default=20)
    ap.add_argument("--rate", type=float, default=220.0, help="load per version, requests/s")
    ap.add_argument("--quantile", type=float, default=0.9, help="the latency check's quantile (0.99: P99)")
    ap.add_argument("--canary-processes", type=int, default=1, choices=range(1, MAX_CANARY_PROCESSES + 1),
                    metavar="N", help="stand-in processes serving the canary behind one address (1-3; "
                    "default 1); 2 or 3 start them with --reuse_port and load over 4 x N connections")
    args = ap.parse_args(argv)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: no server left behind
    with tempfile.TemporaryDirectory() as d:
        out = run(args.rollouts, args.rate, Path(d), quantile=args.quantile,
                  canary_processes=args.canary_processes)
    n = args.canary_processes
    where = (f"on {n + 1} processes (canary on {n}{' behind one address' if n > 1 else ''}, "
             f"{out['connections']} load connection{'s' if out['connections'] > 1 else ''} per version)")
    print(f"\n{args.rollouts} rollouts of identical models {where} at {args.rate:g} req/s per version, "
          f"P{100 * args.quantile:g}: "
          f"{out['promoted']} promoted, {out['rolled_back']} rolled back, {out['timeout']} undecided, "
          f"{out.get('no_answer', 0)} with a hook unanswered in 10 s; "
          f"windows per run (golden included) median {sorted(out['windows'])[len(out['windows']) // 2] if out['windows'] else '-'}")
    if n > 1:
        total = sum(out["canary_requests"]) or 1
        print("canary requests per process: " + ", ".join(
            f"{c} ({100 * c / total:.0f} %)" for c in out["canary_requests"]))
    for r in out["rollback_reasons"]:
        print("  not promoted:", r)
    return 0 if out["rolled_back"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
