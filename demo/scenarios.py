"""The demo's rollouts, back to back, through the running service.

1. Flagger, the good canary (v2): promoted.
2. Flagger, the bad canary (v3): rolled back, with the reasons.
3. Argo Rollouts' web provider, the bad canary: the AnalysisRun fails, the
   Rollout is aborted.
4. Argo Rollouts' job provider (`shadowgate judge`), the bad canary: exit 1,
   the Job fails.

Each scenario is a rollout of the model `digits` from the same stable
version 1 (the demo does not copy a promoted version into the primary).
The canary's stand-in starts when the controller scales it up: after
confirm-rollout for Flagger, with the Rollout's new ReplicaSet for Argo.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import requests

from . import show
from .drivers import ArgoMeasurement, ArgoRolloutDriver, FlaggerDriver, FlaggerTick
from .procs import Supervisor
from .stack import ModelServer, Stack

# The seeds' canary steps, as Flagger's stepWeights and as an Argo Rollout's steps.
STEP_WEIGHTS = (5, 25, 50)
THRESHOLD = 2  # Flagger: failed checks before rollback
EXPECTED = {"flagger-good": "promoted", "flagger-bad": "rolled_back", "argo-bad": "Failed", "judge-bad": "exit 1"}


@dataclass
class Outcome:
    """What one scenario ended with, for the summary, --json and the tests."""

    scenario: str
    controller: str
    canary: str
    outcome: str
    expected: str
    seconds: float
    run: str | None = None
    report: str | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == self.expected


class CanaryPods:
    """The canary Deployment / ReplicaSet as a controller sees it: our stand-in on the canary port."""

    def __init__(self, stack: Stack, role: str, say: Callable[[str], None], clock: Callable[[], float]) -> None:
        self.stack, self.role, self.say, self.clock = stack, role, say, clock
        self.server: ModelServer | None = None
        self._announced = False

    def scale_up(self) -> None:
        self.server = self.stack.scale_up_canary(self.role)
        self._announced = False

    def ready(self) -> bool:
        if self.server is None:
            return False
        ok = self.server.ready()
        if ok and not self._announced:
            self._announced = True
            self.say(f"{show.seconds(self.clock()):>6}  {'':>6}  canary v{self.server.version} ready "
                     f"(its stand-in took {self.server.ready_after_s:.1f} s to load)")
        return ok

    def scale_down(self) -> None:
        self.stack.scale_down_canary()
        self.server = None


class Scenarios:
    """Runs the scenarios against a started Stack; `say` prints one line."""

    def __init__(self, stack: Stack, sup: Supervisor, users: Any, interval_s: float,
                 say: Callable[[str], None] = print) -> None:
        self.stack, self.sup, self.users, self.interval_s, self.say = stack, sup, users, interval_s, say
        self.url = stack.service_url
        self.outcomes: list[Outcome] = []
        self._t0 = time.monotonic()
        self._base: dict[str, tuple[Any, Any]] = {}
        self._quantile = 0.99

    # ------------------------------------------------------------ helpers

    def _clock(self) -> float:
        return time.monotonic() - self._t0

    def _alive(self) -> None:
        """Stop at once (ChildDied) when a process the demo needs has exited."""
        self.sup.check()

    def run_record(self, run_id: str | None) -> dict[str, Any]:
        if not run_id:
            return {}
        r = requests.get(f"{self.url}/api/v1/runs/{run_id}", timeout=5)
        return r.json() if r.status_code == 200 else {}

    def report_url(self, run_id: str | None) -> str | None:
        return f"{self.url}/reports/{run_id}" if run_id else None

    def set_legend(self, checks: list[dict[str, Any]], quantile: float) -> None:
        self._base = {c["name"]: (c.get("alert"), c.get("rollback")) for c in checks if "name" in c}
        self._quantile = quantile

    def _verdict(self, run_id: str | None) -> dict[str, Any]:
        return (self.run_record(run_id).get("verdict_full") or {}) if run_id else {}

    def _checks_row(self, verdict: dict[str, Any]) -> str:
        checks = [c for c in verdict.get("checks", []) if c.get("name") in show.CHECKS]
        return f"{verdict.get('outcome', '-'):<9} {show.checks_line(checks, self._base, self._quantile)}"

    def _header(self, n: int, total: int, title: str) -> None:
        self.say("")
        self.say(show.wrap(f"[{n}/{total}] {title}", 0).replace("\n  ", "\n      "))
        self._t0 = time.monotonic()

    # ------------------------------------------------------------ Flagger

    def flagger(self, role: str, checksum: str, n: int, total: int) -> Outcome:
        version = self.stack.assets.versions[role]
        name = f"flagger-{role}"
        steps = "/".join(map(str, STEP_WEIGHTS))
        self._header(n, total, f"Flagger: the {role} canary (v{version}), stepWeights {steps} %, "
                               f"interval {self.interval_s:g} s, threshold {THRESHOLD}")
        self.say(f"{'time':>6}  {'weight':>6}  Flagger's calls (HTTP status) -> what Flagger does")
        self.say(f"{'':>16}the run's decision, then each check: estimate so far and verdict")
        pods = CanaryPods(self.stack, role, self.say, self._clock)

        def observe(t: FlaggerTick) -> None:
            self._alive()
            if not t.calls:
                if "waiting for the canary" in t.note and t.tick > 1:
                    return  # said once already
                self.say(f"{show.seconds(self._clock()):>6}  {t.weight:>4} %  {t.note}")
                return
            line = f"{show.seconds(self._clock()):>6}  {t.weight:>4} %  {show.hooks(t.calls)}"
            if t.note:
                line += f" -> {t.note}"
            elif t.phase == "Progressing":
                line += f" -> weight {t.weight} %"
            self.say(line)
            for ln in show.notable(t.calls):
                self.say(f"{'':>16}{ln}")
            if t.phase not in ("Finalising", "Succeeded") and t.run:
                v = self._verdict(t.run)
                if v:
                    self.say(f"{'':>16}{self._checks_row(v)}")

        driver = FlaggerDriver(self.url, "digits", namespace="test", checksum=checksum, analysis="digits",
                               threshold=THRESHOLD, step_weights=STEP_WEIGHTS, interval_s=self.interval_s,
                               events=True, workload=pods, router=self.users.set_weight, observer=observe)
        try:
            result = driver.run(max_ticks=25)
        finally:
            self.users.set_weight(0)
            pods.scale_down()
        v = self._verdict(result.run)
        outcome = Outcome(name, "Flagger", f"{role} v{version}", result.outcome, EXPECTED[name], self._clock(),
                          result.run, self.report_url(result.run), v.get("reason", ""),
                          {"ticks": result.ticks, "failed_checks": result.failed_checks,
                           "calls": [(h, s) for h, s, _ in result.calls], "events": result.events})
        word = {"promoted": "promoted", "rolled_back": "rolled back", "timeout": "not decided"}[result.outcome]
        self.say(f"=> {word} after {show.seconds(outcome.seconds)} and {result.ticks} ticks")
        if outcome.reason:
            self.say(show.wrap(f"why: {outcome.reason}", 3))
        if outcome.report:
            self.say(f"   report: {outcome.report}")
        self.outcomes.append(outcome)
        return outcome

    # ------------------------------------------------------------ Argo web provider

    def argo(self, role: str, revision: str, n: int, total: int) -> Outcome:
        version = self.stack.assets.versions[role]
        name = f"argo-{role}"
        pause = 2 * self.interval_s
        steps = [("setWeight", STEP_WEIGHTS[0]), ("pause", pause), ("setWeight", STEP_WEIGHTS[1]), ("pause", pause),
                 ("setWeight", STEP_WEIGHTS[2]), ("pause", pause), ("setWeight", 100)]
        self._header(n, total, f"Argo Rollouts, web provider: the {role} canary (v{version}); steps setWeight 5, "
                               f"pause, 25, pause, 50, pause, 100; background analysis every {self.interval_s:g} s")
        self.say("      metric: successCondition result.failed == false, failureCondition result.failed == true, "
                 "failureLimit 1")
        pods = CanaryPods(self.stack, role, self.say, self._clock)
        self.say(f"{show.seconds(self._clock()):>6}  {'':>6}  new ReplicaSet for revision {revision}: "
                 f"canary v{version} scaling up")

        def on_step(i: int, kind: str, value: float) -> None:
            self._alive()
            what = f"setWeight {value:g}" if kind == "setWeight" else f"pause {value:g} s"
            self.say(f"{show.seconds(self._clock()):>6}  {self.users.weight:>4} %  step {i}: {what}")

        def observe(m: ArgoMeasurement) -> None:
            self._alive()
            line = (f"{show.seconds(self._clock()):>6}  {m.weight:>4} %  measurement {m.n}: {m.phase}"
                    f" (analysis {m.run_phase})")
            self.say(line)
            if m.result:
                checks = show.argo_checks(m.result)
                row = show.checks_line(checks, self._base, self._quantile)
                self.say(f"{'':>16}{m.result.get('decision', '-'):<9} {row}")

        driver = ArgoRolloutDriver(self.url, "digits", rollout="digits", revision=revision, namespace="test",
                                   steps=steps, interval_s=self.interval_s, starting_step=1, failure_limit=1,
                                   inconclusive_limit=3, workload=pods, router=self.users.set_weight,
                                   observer=observe, on_step=on_step)
        try:
            result = driver.run(max_s=20 * self.interval_s + 60)
        finally:
            self.users.set_weight(0)
        last = result.measurements[-1].result if result.measurements else {}
        run_id = last.get("run")
        phase = result.analysis_phase
        outcome = Outcome(name, "Argo web", f"{role} v{version}", phase, EXPECTED[name], self._clock(), run_id,
                          last.get("report") or self.report_url(run_id), last.get("reason", ""),
                          {"rollout": result.outcome, "measurements": [m.phase for m in result.measurements]})
        word = {"aborted": "Rollout aborted (all traffic back to stable)", "promoted": "Rollout promoted",
                "paused": "Rollout paused", "timeout": "no decision"}[result.outcome]
        self.say(f"=> AnalysisRun {phase}: {word}, after {show.seconds(outcome.seconds)}")
        if outcome.reason:
            self.say(show.wrap(f"why: {outcome.reason}", 3))
        if outcome.report:
            self.say(f"   report: {outcome.report}")
        self.outcomes.append(outcome)
        return outcome

    # ------------------------------------------------------------ Argo job provider

    def judge(self, role: str, n: int, total: int) -> Outcome:
        version = self.stack.assets.versions[role]
        name = f"judge-{role}"
        duration = f"{max(30, int(10 * self.interval_s))}s"
        argv = [self.stack.service_python, "-m", "webhook.judge", "--config", str(self.stack.config_path),
                "--analysis", "digits", "--duration", duration, "--interval", f"{self.interval_s:g}s", "--no-progress",
                "--json", str(self.stack.run_dir / "judge.json")]
        self._header(n, total, "Argo Rollouts, job provider: `shadowgate judge --analysis digits "
                               f"--duration {duration}` against the {role} canary (v{version}); the exit code "
                               "is the Job's result")
        if self.stack.canary is None or self.stack.canary.role != role:
            pods = CanaryPods(self.stack, role, self.say, self._clock)
            pods.scale_up()
            while not pods.ready():
                self._alive()
                time.sleep(0.2)
        child = self.sup.spawn("shadowgate judge", argv, log_name="judge")
        limit = time.monotonic() + 120.0 + 10 * self.interval_s
        while child.alive():
            self.sup.check(ignore=(child,))
            if time.monotonic() > limit:
                break
            time.sleep(0.2)
        code = self.sup.stop(child, grace_s=5.0)
        text = child.log_path.read_text(errors="replace") if child.log_path.exists() else ""
        lines = [ln for ln in text.splitlines() if ln.startswith(("analysis ", "reason:"))]
        job = {0: "Job Complete (Successful)", 1: "Job Failed"}.get(code, "Job Failed (error)")
        outcome = Outcome(name, "Argo job", f"{role} v{version}", f"exit {code}", EXPECTED[name], self._clock(),
                          None, None, next((ln[len('reason: '):] for ln in lines if ln.startswith("reason:")), ""),
                          {"log": str(child.log_path)})
        self.say(f"{show.seconds(self._clock()):>6}  {'':>6}  shadowgate judge exited {code}: {job}")
        for ln in lines[:1]:
            self.say(f"   {ln}")
        if outcome.reason:
            self.say(show.wrap(f"why: {outcome.reason}", 3))
        self.say(f"   the Job's log: {show.path(child.log_path)}")
        self.outcomes.append(outcome)
        return outcome

    # ------------------------------------------------------------ the end

    def check_reports(self) -> None:
        """Record for each run whether its report page answers (else whether the runs API has it)."""
        for o in self.outcomes:
            if not o.run:
                continue
            try:
                r = requests.get(o.report, timeout=5)
                o.details["report_status"] = r.status_code
                if r.status_code != 200:
                    api = requests.get(f"{self.url}/api/v1/runs/{o.run}", timeout=5)
                    o.details["api_status"] = api.status_code
                    if api.status_code == 200:
                        o.details["run_status"] = api.json().get("status")
            except requests.RequestException as exc:
                o.details["report_error"] = str(exc)

    def to_json(self) -> list[dict[str, Any]]:
        return [dict(asdict(o), ok=o.ok) for o in self.outcomes]


def dump(path: str, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=str)
