"""The demo from start to end: models, processes, scenarios, outcomes, keep running."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

from . import show
from .procs import Supervisor
from .scenarios import Scenarios, dump
from .stack import HOST, BAD_LATENCY_S, BAD_LATENCY_SIGMA, DemoSettings, Ports, Stack, StartError, find_prometheus


def say(text: str = "") -> None:
    print(text, flush=True)


class Demo:
    """One run of the demo; `run()` returns the exit code, `close()` stops what it started in-process."""

    def __init__(self, args: argparse.Namespace, scenarios: list[str], run_dir: Path, sup: Supervisor) -> None:
        self.args, self.chosen, self.run_dir, self.sup = args, scenarios, run_dir, sup
        self.users: Any = None
        self.finished = False
        self.exit_code = 1
        self.started = time.monotonic()

    # ------------------------------------------------------------ set-up

    def _assets(self):
        from .models import rollout_assets_cached

        cache = Path(self.args.cache_dir)
        assets = rollout_assets_cached(cache)
        if assets is not None:
            return assets
        say(show.field("models", "building them once (three small Keras networks, about 20 s) ..."))
        child = self.sup.spawn("the model build", [sys.executable, "-m", "demo.models", "--rollout",
                                                   "--cache-dir", str(cache)], log_name="build")
        try:
            child.proc.wait(600)
        except Exception:
            raise StartError(f"the model build did not finish in 10 min (log {child.log_path})") from None
        code = self.sup.stop(child)
        assets = rollout_assets_cached(cache)
        if code != 0 or assets is None:
            raise StartError(f"the model build failed with code {code} (log {child.log_path}):\n{child.log_tail()}")
        return assets

    def _plan(self, stack: Stack) -> tuple[str, list[dict[str, Any]]]:
        """The gate's promise for the golden set (as `shadowgate plan` says it) and the gated checks."""
        from webhook.config import load_config
        from webhook.plan import lines

        settings = load_config(stack.config_path)
        analysis = settings.analyses["digits"]
        plan = [ln.strip() for ln in lines(analysis) if "golden set" in ln]
        cfg = analysis.judge_config
        checks = [{"name": n, "alert": cfg.thresholds(n, 1)[0], "rollback": cfg.thresholds(n, 1)[1]}
                  for n in analysis.gate.active]
        return (plan[0] if plan else ""), checks

    def _setup(self) -> tuple[Stack, Any]:
        from .users import ClickModel, Users

        a = self.args
        prometheus = find_prometheus()
        if prometheus is None:
            raise StartError("no `prometheus` binary: `make demo` installs the Debian package "
                             "(or: sudo apt-get install prometheus)")
        assets = self._assets()
        acc, agree = assets.accuracy, assets.agreement
        v = assets.versions
        say(show.field("models", f"stable v{v['stable']} {100 * acc[v['stable']]:.1f} % accurate on "
                       f"{assets.golden_rows:,} held-out digits; good canary v{v['good']} {100 * acc[v['good']]:.1f} % "
                       f"(answers like v1 on {100 * agree[v['good']]:.1f} % of them); bad canary v{v['bad']} "
                       f"{100 * acc[v['bad']]:.1f} %, served with a log-normal latency tail (median "
                       f"+{1000 * BAD_LATENCY_S:g} ms, sigma {BAD_LATENCY_SIGMA:g})"))
        interval = a.interval
        rate = a.load_rate or max(50.0, math.ceil(300.0 / interval))
        settings = DemoSettings(interval_s=interval, load_rate=rate)
        ports = Ports.choose(a.port, a.prometheus_port)
        stack = Stack(self.sup, assets, ports, self.run_dir, settings)
        plan, checks = self._plan(stack)
        if plan:
            say(show.field("plan", plan))
        # Every process first (from this thread), then wait for all of them together.
        t = time.monotonic()
        stable = stack.start_stable()
        prom = stack.start_prometheus(prometheus)
        svc = stack.start_service()
        stack.wait_http(prom, f"{stack.prometheus_url}/-/ready")
        stack.wait_http(svc, f"{stack.service_url}/readyz")
        stable.wait_ready()
        golden = np.load(assets.golden)
        users = Users(stable.rest_url, f"http://{HOST}:{ports.canary_rest}", golden["inputs"], golden["labels"],
                      port=ports.users, rate=a.users, page_size=20, clicks=ClickModel())
        users.start()
        self.users = users
        m = users.model
        runtime = " (the runtime venv: no TensorFlow, as in the image)" if stack.runtime_python else ""
        say(show.field("started", f"in {time.monotonic() - t:.0f} s: stable stand-in {stable.grpc_target}, "
                                  f"Prometheus {stack.prometheus_url}, Shadowgate {stack.service_url}{runtime}"))
        say(show.field("users", f"{a.users:g} page views/s of 20 digits, routed by the canary weight; a right "
                                f"answer is clicked {100 * m.p_right:g} % of the time, a wrong one "
                                f"{100 * m.p_wrong:g} % (impressions and clicks per version, scraped by "
                                "Prometheus: the CTR source)"))
        say(show.field("load", f"Shadowgate sends {rate:g} requests/s to each version and {settings.probe_rate:g} "
                               f"golden probe pairs/s, and closes a window every {interval:g} s; alpha 1 %, beta 5 %"))
        return stack, checks

    # ------------------------------------------------------------ run

    def run(self) -> int:
        say("Shadowgate demo: the digits model rolled out as Flagger and Argo Rollouts would drive it, "
            "gated by the service")
        say("")
        stack, checks = self._setup()
        sc = Scenarios(stack, self.sup, self.users, self.args.interval, say=say)
        sc.set_legend(checks, stack.settings.quantile)
        say(show.field("checks", "estimate so far, then pass, FAIL or wait (- no data yet); "
                                 "thresholds alert / rollback: " + show.legend(checks, stack.settings.quantile)))
        plan = [("good", lambda n, k: sc.flagger("good", "9f3c2a71d0", n, k)),
                ("bad", lambda n, k: sc.flagger("bad", "4b7e19c5aa", n, k)),
                ("argo", lambda n, k: sc.argo("bad", "7c5ddbdf54", n, k)),
                ("judge", lambda n, k: sc.judge("bad", n, k))]
        todo = [(name, fn) for name, fn in plan if name in self.chosen]
        try:
            for i, (_, fn) in enumerate(todo, 1):
                fn(i, len(todo))
        except requests.RequestException as exc:
            self.sup.check()  # a dead child is the better explanation
            raise StartError(f"a call to Shadowgate failed: {exc}") from None
        stack.scale_down_canary()
        sc.check_reports()
        ok = all(o.ok for o in sc.outcomes)
        self._summary(sc, stack)
        if self.args.json:
            dump(self.args.json, {"ok": ok, "seconds": time.monotonic() - self.started,
                                  "service": stack.service_url, "prometheus": stack.prometheus_url,
                                  "run_dir": str(self.run_dir), "outcomes": sc.to_json()})
        self.exit_code = 0 if ok else 1
        self.finished = True
        if self.args.keep_running:
            self._keep_running(stack)
        return self.exit_code

    def _summary(self, sc: Scenarios, stack: Stack) -> None:
        say("")
        say(f"outcomes (all in {show.seconds(time.monotonic() - self.started)})")
        for o in sc.outcomes:
            mark = "as expected" if o.ok else f"UNEXPECTED (expected {o.expected})"
            where = o.report or show.path(o.details.get("log", ""))
            outcome = o.outcome.replace("_", " ")
            say(f"  {o.controller:<9} {o.canary:<15} {outcome:<12} {mark:<12} {where}")
        missing = [o for o in sc.outcomes if o.run and o.details.get("report_status") != 200]
        if missing:
            say("  (report pages answer 404 in this version of the service; the runs API has the same: "
                f"{stack.service_url}/api/v1/runs/<run>)")
        say(f"Prometheus  {stack.prometheus_url}  e.g. sum by (version) (rate(clicks_total[1m])) / "
            "sum by (version) (rate(impressions_total[1m]))")
        say(f"logs        {show.path(self.run_dir)}")

    def _keep_running(self, stack: Stack) -> None:
        say("")
        say(f"Shadowgate keeps running at {stack.service_url} for the reports; Ctrl-C stops everything.")
        while True:
            self.sup.check()
            time.sleep(1.0)

    def close(self) -> None:
        if self.users is not None:
            self.users.stop()
            self.users = None
