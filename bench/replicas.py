"""N Flagger canaries on 1 and on 3 replicas sharing one PostgreSQL: hook answer times, admission, false blame, load.

    .venv/bin/python -m bench.replicas [--analyses 200] [--duration-s 120] [--replicas 1,3]

A throwaway PostgreSQL cluster (tests/store/postgres.py, as the store
tests use) and `--model-servers` stand-in TF Serving
processes (the demo model; each canary is the very model its stable serves:
every canary is healthy). Then, for each replica count, that many
`shadowgate serve` processes on a fresh database of that cluster (one
replica too, so both counts pay the same store), with the server's default
caps (`server.max_sessions` 50, `server.max_target_rate` 1000) unless told
otherwise, and N analyses, each with `--rate` req/s of load per version and
`--probe-rate` probe pairs/s. N Flagger canaries (demo/drivers.py's
FlaggerDriver: Flagger's order of calls, success is status <= 202, a timeout
or any other status of pre-rollout / rollout is a failed check, `--threshold`
of them roll back) start spread over one hook period and call their hooks
every `--period` seconds for `--duration-s`; every call goes to a replica
picked round-robin (or at random), as a Kubernetes Service would.

Prints a markdown table, per replica count:

- hook answer time (client side, send to full answer, every hook call):
  p50, p99, max;
- runs admitted (confirm-rollout answered 200) and still queued at the end
  (412 "queued" until then), and each replica's own count (/metrics);
- runs measured (with load windows in the store), and how long after
  confirm-rollout's 200 their load began;
- healthy canaries rolled back (goal: 0), and the failed checks behind them:
  Shadowgate's limits (no answer within Flagger's 10 s, 429, 5xx) or the
  gate's answer (412);
- windows stored: judged (health ok or golden), not counted (Shadowgate's
  own overload said so) and neither (e.g. stable_down: a false blame);
- requests each model server received (its own counter) against what the
  admitted runs asked (their rate times the time they measured, plus each
  golden-set check's rows on both versions), in req/s over the run.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from demo.drivers import FlaggerDriver  # noqa: E402
from tests.servers import start_modelserver  # noqa: E402
from tests.store.postgres import running_postgres  # noqa: E402
from tests.webhook.service import start_service  # noqa: E402

LIMIT_STATUSES = "no answer within 10 s, 429 or 5xx"


def _golden_subset(src: Path, rows: int, dst: Path) -> str:
    with np.load(src) as z:
        np.savez(dst, inputs=z["inputs"][:rows], labels=z["labels"][:rows])
    return str(dst)


def _config(args, servers, golden: str, store: str) -> dict:
    def target(server, **which):
        return {"protocol": "tfserving-grpc", "address": server.grpc_target, "model": "digits", "timeout_s": 2,
                **which}

    analyses = {}
    for i in range(args.analyses):
        server = servers[i % len(servers)]
        analyses[f"a{i:03d}"] = {
            "stable": target(server, label="stable"),
            "canary": target(server, version=1),  # the model stable serves: a healthy canary
            "golden": golden,
            "probe": {"rate": args.probe_rate, "timeout_s": 2},
            "load": {"rate": args.rate, "max_rate": max(args.rate, 1.0), "timeout_s": 2, "concurrency": 8},
            "checks": {"drift": {"inputs": False}},
            "interval_s": args.interval,
            "allow_undecidable": True,  # 1 req/s gives no P99 per window: latency cannot decide
        }
    srv: dict = {"store": store, "interval_s": args.interval}
    for key in ("max_sessions", "max_target_rate", "threads"):
        if getattr(args, key) is not None:
            srv[key] = getattr(args, key)
    return {"server": srv, "analyses": analyses}


def planned_rate(args) -> float:
    """Requests/s one run sends its model server: load on both versions and probe pairs (both on one server)."""
    return 2 * args.rate + 2 * args.probe_rate


class Pool:
    """The replicas behind a Kubernetes Service: each call goes to the next one (or a random one)."""

    def __init__(self, urls: list[str], choice: str, seed: int = 0) -> None:
        self.urls, self.choice = list(urls), choice
        self._lock = threading.Lock()
        self._n = 0
        self._rng = random.Random(seed)

    def url(self) -> str:
        with self._lock:
            if self.choice == "random":
                return self._rng.choice(self.urls)
            self._n += 1
            return self.urls[self._n % len(self.urls)]


class _NoAnswer:
    """What Flagger sees when a hook does not answer within its 10 s: a failed call."""

    status_code = 0

    def __init__(self, exc: Exception) -> None:
        self.text = json.dumps({"reason": f"no answer: {exc.__class__.__name__}"})


@dataclass
class Sample:
    hook: str
    status: int
    seconds: float
    busy: bool


class ServiceFlagger(FlaggerDriver):
    """Flagger calling a Service: every call lands on the replica the pool picks; each call is timed."""

    def __init__(self, pool: Pool, *args, **kw) -> None:
        super().__init__(pool.url(), *args, **kw)
        self.pool = pool
        self.samples: list[Sample] = []
        self.admitted_at: float | None = None
        self.admitted_wall: float | None = None
        self.started_at = time.monotonic()

    def call(self, hook, phase="Progressing", **extra):
        self.url = self.pool.url()
        t0 = time.perf_counter()
        try:
            ok, r = super().call(hook, phase, **extra)
        except requests.RequestException as exc:  # Flagger counts it as a failed call (and check)
            r = _NoAnswer(exc)
            c = (hook, 0, r.text)
            self.calls.append(c)
            self._tick_calls.append(c)
            self.samples.append(Sample(hook, 0, time.perf_counter() - t0, False))
            return False, r
        self.samples.append(Sample(hook, r.status_code, time.perf_counter() - t0, '"busy":true' in r.text
                                   or '"busy": true' in r.text))
        if hook == "confirm-rollout" and ok and self.admitted_at is None:
            self.admitted_at, self.admitted_wall = time.monotonic(), time.time()
        return ok, r


@dataclass
class Canary:
    driver: ServiceFlagger
    thread: threading.Thread
    result: dict = field(default_factory=dict)


def _start_canaries(args, pool: Pool, ticks: int) -> list[Canary]:
    canaries = []
    for i in range(args.analyses):
        d = ServiceFlagger(pool, f"app{i:03d}", namespace=f"team-{i % 4}", checksum="rev1", analysis=f"a{i:03d}",
                           threshold=args.threshold, step_weight=10, max_weight=30, interval_s=args.period,
                           timeout_s=10.0, confirm_attempts=ticks)
        result: dict = {}
        offset = args.period * i / args.analyses  # independent rollouts: spread over one period

        def run(d=d, result=result, offset=offset):
            time.sleep(offset)
            try:
                result["r"] = d.run(max_ticks=ticks)
            except Exception as exc:  # noqa: BLE001 - reported, never hidden
                result["error"] = f"{exc.__class__.__name__}: {exc}"

        canaries.append(Canary(d, threading.Thread(target=run, daemon=True, name=f"canary-{i}"), result))
    for c in canaries:
        c.thread.start()
    return canaries


_SAMPLE = re.compile(r'^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)')


def _metric_values(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def _requests_served(server) -> float:
    """Predict requests the stand-in counted (every status): what it was sent."""
    return _metric_values(server.metrics_text(), ":tensorflow:serving:request_count")


def _progress(total_s: float, label: str):
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None and sys.stderr.isatty():
        return tqdm(total=int(total_s), desc=label, unit="s", leave=False)
    return None


def _store_view(url: str, args, t1: float, t2: float) -> dict:
    """Windows by health, and what each run asked of its model server within [t1, t2] (requests)."""
    from webhook.store import open_store

    store = open_store(url)
    kinds: collections.Counter = collections.Counter()
    asked: collections.Counter = collections.Counter()  # per model server index
    measured = 0
    outcomes: collections.Counter = collections.Counter()
    unmeasured: dict[str, list[str]] = {}  # run name -> its newest timeline lines, for runs never measured
    first_load: dict[str, float] = {}  # run name -> when its load began (its first load window's start)
    try:
        for run in store.list_runs(limit=100_000):
            outcomes[(run.verdict or {}).get("outcome", "none")] += 1
            server = int(run.analysis[1:]) % args.model_servers
            ws = store.windows(run.id)
            load = [w for w in ws if w.kind != "golden"]
            for w in ws:
                health = ((w.verdict or {}).get("window") or {}).get("health", "?")
                if health in ("ok", "golden"):
                    kinds["judged"] += 1
                elif health == "overloaded":
                    kinds["not counted"] += 1
                else:
                    kinds[f"neither ({health})"] += 1
                if w.kind == "golden" and t1 <= w.started_at <= t2:
                    asked[server] += 2 * args.golden_rows
            if not load and len(unmeasured) < 3:
                unmeasured[run.name] = [f"{e['ts'] - t1:5.1f} s {e['kind']}: {e['message'][:160]}"
                                        for e in store.timeline(run.id)[-6:]]
            if load:
                measured += 1
                first_load[run.name] = min(w.started_at for w in load)
                start = max(t1, min(w.started_at for w in load))
                end = min(t2, max(w.ended_at for w in load))
                asked[server] += planned_rate(args) * max(0.0, end - start)
    finally:
        store.close()
    return {"windows": kinds, "asked": asked, "measured": measured, "outcomes": outcomes, "unmeasured": unmeasured,
            "first_load": first_load}


def bench(k: int, args, pg, servers, golden: str, d: Path) -> dict:
    url = pg.create_database(f"bench_r{k}_{int(time.time())}")
    path = d / f"analyses-r{k}.yaml"
    path.write_text(yaml.safe_dump(_config(args, servers, golden, url)))
    with ThreadPoolExecutor(k) as ex:  # each takes seconds to import and load its data sets
        replicas = list(ex.map(lambda i: start_service(path, d, name=f"r{k}-replica{i}"), range(k)))
    try:
        pool = Pool([r.url for r in replicas], args.choice)
        ticks = max(1, round(args.duration_s / args.period))
        sent0 = [_requests_served(s) for s in servers]
        t1 = time.time()
        started = time.monotonic()
        canaries = _start_canaries(args, pool, ticks)
        expected = args.period * (ticks + 1)
        bar = _progress(expected, f"{k} replica(s)")
        last_line = shown = 0.0
        while any(c.thread.is_alive() for c in canaries):
            time.sleep(1.0)
            elapsed = time.monotonic() - started
            admitted = sum(c.driver.admitted_at is not None for c in canaries)
            back = sum(1 for c in canaries if c.driver.phase == "Failed")
            calls = sum(len(c.driver.samples) for c in canaries)
            if bar is not None:
                bar.update(max(0, min(int(elapsed), int(expected)) - int(shown)))
                shown = min(int(elapsed), int(expected))
                bar.set_postfix(admitted=admitted, rolled_back=back, calls=calls)
            elif elapsed - last_line >= 15:
                last_line = elapsed
                print(f"  {k} replica(s): {elapsed:4.0f} of ~{expected:.0f} s, {calls} hook calls, "
                      f"{admitted} runs admitted, {back} rolled back", flush=True)
            if elapsed > expected + 3 * args.period + 60:
                print(f"  {k} replica(s): canaries still running after {elapsed:.0f} s: stopped waiting",
                      file=sys.stderr)
                break
        if bar is not None:
            bar.close()
        t2 = time.time()
        sent = [_requests_served(s) - s0 for s, s0 in zip(servers, sent0)]
        time.sleep(args.interval + 3.0)  # the windows open at t2 are stored: they bound what was asked
        metrics = []
        for r in replicas:
            try:
                metrics.append(requests.get(r.url + "/metrics", timeout=10).text)
            except requests.RequestException:
                metrics.append("")
        tracebacks = sum(r.log().count("Traceback") for r in replicas)
    finally:
        with ThreadPoolExecutor(k) as ex:  # together: none takes over another's runs as it stops
            list(ex.map(lambda r: r.stop(), replicas))
    view = _store_view(url, args, t1, t2)
    return {"k": k, "canaries": canaries, "metrics": metrics, "sent": sent, "span": t2 - t1,
            "tracebacks": tracebacks, **view}


def summarize(r: dict, args) -> dict:
    samples = [s for c in r["canaries"] for s in c.driver.samples]
    ms = np.array([s.seconds for s in samples]) * 1000 if samples else np.zeros(1)
    results = [c.result.get("r") for c in r["canaries"]]
    rolled = [c for c, res in zip(r["canaries"], results) if res is not None and res.outcome == "rolled_back"]
    failed_checks = [(c.driver.name, h, st, text) for c in r["canaries"] for h, st, text in c.driver.calls
                     if h in ("pre-rollout", "rollout") and not 0 < st <= 202]
    limits = [f for f in failed_checks if f[2] == 0 or f[2] == 429 or f[2] >= 500]
    admitted = sum(c.driver.admitted_at is not None for c in r["canaries"])
    waited = [c.driver.admitted_at - c.driver.started_at for c in r["canaries"] if c.driver.admitted_at is not None]
    to_load = [r["first_load"][c.driver.name] - c.driver.admitted_wall for c in r["canaries"]
               if c.driver.admitted_wall is not None and c.driver.name in r["first_load"]]
    per_replica = [(int(_metric_values(m, "shadowgate_usage", kind="admitted")),
                    int(_metric_values(m, "shadowgate_usage", kind="queued")),
                    int(_metric_values(m, "shadowgate_usage", kind="sessions"))) for m in r["metrics"]]
    span = max(r["span"], 1e-9)
    return {
        "calls": len(samples), "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()), "statuses": collections.Counter(s.status for s in samples),
        "busy": sum(s.busy for s in samples), "no_answer": sum(s.status == 0 for s in samples),
        "by_hook": {h: np.array([s.seconds for s in samples if s.hook == h]) * 1000
                    for h in sorted({s.hook for s in samples})},
        "admitted": admitted, "queued": len(r["canaries"]) - admitted, "waited_max": max(waited, default=0.0),
        "per_replica": per_replica, "to_load": np.array(to_load or [0.0]),
        "promoted": sum(1 for res in results if res is not None and res.outcome == "promoted"),
        "rolled_back": rolled, "failed_checks": failed_checks, "limit_checks": limits,
        "errors": [c.result["error"] for c in r["canaries"] if "error" in c.result],
        "sent_rps": [s / span for s in r["sent"]],
        "asked_rps": [r["asked"].get(i, 0.0) / span for i in range(len(r["sent"]))],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--analyses", type=int, default=200, help="analyses, each with one Flagger canary")
    ap.add_argument("--duration-s", type=float, default=120.0, help="seconds each canary calls its hooks")
    ap.add_argument("--replicas", default="1,3", help="replica counts to run, comma-separated")
    ap.add_argument("--period", type=float, default=10.0, help="seconds between a canary's hook rounds")
    ap.add_argument("--interval", type=float, default=10.0, help="window length of the analyses, seconds")
    ap.add_argument("--rate", type=float, default=1.0, help="load requests/s per version per analysis")
    ap.add_argument("--probe-rate", type=float, default=1.0, help="probe pairs/s per analysis")
    ap.add_argument("--golden-rows", type=int, default=60, help="golden rows probed by each pre-rollout")
    ap.add_argument("--model-servers", type=int, default=2, help="stand-in model servers; analysis i uses i %% n")
    ap.add_argument("--threshold", type=int, default=2, help="failed checks that roll a canary back (Flagger)")
    ap.add_argument("--choice", choices=("round-robin", "random"), default="round-robin",
                    help="how the Service picks a replica for each call")
    ap.add_argument("--max-sessions", type=int, default=None, help="server.max_sessions (default: the server's, 50)")
    ap.add_argument("--max-target-rate", type=float, default=None,
                    help="server.max_target_rate (default: the server's, 1000)")
    ap.add_argument("--threads", type=int, default=None, help="server.threads (default: the server's, 16)")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.replicas.split(",") if x.strip()]

    from demo.models import build_demo_assets

    assets = build_demo_assets(REPO / ".cache")
    raw = []
    with tempfile.TemporaryDirectory(prefix="shadowgate-bench-replicas-") as tmp:
        d = Path(tmp)
        golden = _golden_subset(assets.golden, args.golden_rows, d / "golden.npz")
        with running_postgres() as pg:
            servers = []
            try:
                for i in range(args.model_servers):
                    servers.append(start_modelserver(d, model_config=assets.model_config, name=f"modelserver{i}"))
                for k in counts:
                    print(f"{k} replica(s): {args.analyses} analyses, hooks every {args.period:g} s for "
                          f"{args.duration_s:g} s ...", flush=True)
                    raw.append(bench(k, args, pg, servers, golden, d))
            finally:
                for s in servers:
                    s.stop()

    rows = [(r, summarize(r, args)) for r in raw]
    ms_n = args.model_servers
    print(f"\n{args.analyses} Flagger canaries (healthy: canary = stable's model), hooks every {args.period:g} s "
          f"for {args.duration_s:g} s, {args.rate:g} req/s load per version and {args.probe_rate:g} probe pairs/s "
          f"each ({planned_rate(args):g} req/s per run), {ms_n} model server(s), one PostgreSQL; calls "
          f"{args.choice} over the replicas; max_sessions {args.max_sessions or 50}, "
          f"max_target_rate {args.max_target_rate or 1000:g}\n")
    print("| replicas | hook calls | hook p50 / p99 / max ms | runs admitted / queued | runs measured | healthy "
          "canaries rolled back | failed checks (Shadowgate's limits) | windows judged / not counted / neither | "
          "per model server: sent / asked req/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r, s in rows:
        w = r["windows"]
        neither = sum(v for key, v in w.items() if key.startswith("neither"))
        load = ", ".join(f"{a:.0f} / {b:.0f}" for a, b in zip(s["sent_rps"], s["asked_rps"]))
        print(f"| {r['k']} | {s['calls']} | {s['p50']:.0f} / {s['p99']:.0f} / {s['max']:.0f} | "
              f"{s['admitted']} / {s['queued']} | {r['measured']} | {len(s['rolled_back'])} | "
              f"{len(s['failed_checks'])} ({len(s['limit_checks'])}) | "
              f"{w.get('judged', 0)} / {w.get('not counted', 0)} / {neither} | {load} |")
    bad = False
    for r, s in rows:
        print(f"\n{r['k']} replica(s):")
        print(f"  statuses: {dict(sorted(s['statuses'].items()))} (0: no answer within 10 s); busy answers "
              f"{s['busy']}")
        print("  per hook, p50 / p99 / max ms: " + "; ".join(
            f"{h} {np.percentile(v, 50):.0f} / {np.percentile(v, 99):.0f} / {v.max():.0f} ({len(v)})"
            for h, v in s["by_hook"].items() if len(v)))
        print(f"  admitted by the answers: {s['admitted']} (longest wait in the queue {s['waited_max']:.0f} s), "
              f"still queued at the end: {s['queued']}; promoted {s['promoted']}")
        print("  each replica's own count at the end (/metrics admitted, queued, sessions measured): "
              + ", ".join(f"{a}/{q}/{m}" for a, q, m in s["per_replica"]))
        print(f"  runs with load windows: {r['measured']} (admitted but never measured: "
              f"{s['admitted'] - r['measured']}); run outcomes: {dict(r['outcomes'])}")
        print(f"  from confirm-rollout's 200 to the load's start: p50 {np.percentile(s['to_load'], 50):.0f} s, "
              f"max {s['to_load'].max():.0f} s (Flagger calls pre-rollout one period after the 200)")
        for name, lines in r["unmeasured"].items():
            print(f"  e.g. {name}, never measured; its timeline ends:")
            for line in lines:
                print(f"      {line}")
        print(f"  windows: {dict(r['windows'])}")
        for name, hook, st, text in s["failed_checks"][:5]:
            print(f"  failed check: {name} {hook} {st}: {text[:240]}")
        for c in s["rolled_back"][:5]:
            why = [f"{h} {st}: {t[:200]}" for h, st, t in c.driver.calls if h in ("rollback", "pre-rollout", "rollout")
                   and not (h == "rollback" and st == 409) and not (h != "rollback" and 0 < st <= 202)]
            print(f"  rolled back: {c.driver.name}: {why[:2]}")
        for e in s["errors"][:3]:
            print(f"  driver error: {e}")
        if r["tracebacks"]:
            print(f"  Tracebacks in the replicas' logs: {r['tracebacks']}")
        bad |= bool(s["rolled_back"] or s["limit_checks"] or s["errors"]
                    or any(key.startswith("neither") for key in r["windows"]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
