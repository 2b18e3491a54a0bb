"""The controllers' drivers call hooks in Flagger's and Argo Rollouts' order, with their semantics.

A scripted stand-in for Shadowgate (a Flask app on 127.0.0.1, answers chosen
per test) records every call; the drivers' workload and router hooks record
what the controllers would do to the canary's pods and its traffic.
"""

from __future__ import annotations

import json
import threading
from typing import Callable

import pytest
from flask import Flask, request
from werkzeug.serving import make_server

from demo.drivers import ArgoRolloutDriver, FlaggerDriver, argo_measure


class Scripted:
    """Answers per hook from `script(hook, body) -> (status, json)`; records (hook, phase, metadata)."""

    def __init__(self, script: Callable[[str, dict], tuple[int, dict]]) -> None:
        self.script = script
        self.calls: list[tuple[str, str | None, dict]] = []
        app = Flask("scripted")

        @app.post("/flagger/<hook>")
        def flagger(hook: str):
            body = request.get_json()
            self.calls.append((hook, body.get("phase"), body.get("metadata", {})))
            status, answer = self.script(hook, body)
            return app.response_class(json.dumps(answer), status=status, mimetype="application/json")

        @app.get("/argo/v1/analyses/<analysis>")
        def argo(analysis: str):
            self.calls.append(("argo", None, dict(request.args)))
            status, answer = self.script("argo", dict(request.args))
            return app.response_class(json.dumps(answer), status=status, mimetype="application/json")

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def hooks(self) -> list[str]:
        return [h for h, _, _ in self.calls if h != "event"]

    def __enter__(self) -> "Scripted":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()


class Pods:
    """The canary's pods as the test sees them: scale-ups, scale-downs, readiness after a few looks."""

    def __init__(self, ready_after: int = 0) -> None:
        self.log: list[str] = []
        self.looks, self.ready_after = 0, ready_after

    def scale_up(self) -> None:
        self.log.append("up")

    def ready(self) -> bool:
        self.looks += 1
        return "up" in self.log and self.looks > self.ready_after

    def scale_down(self) -> None:
        self.log.append("down")


def flagger(url: str, pods: Pods, weights: list[int], **kw) -> FlaggerDriver:
    return FlaggerDriver(url, "digits", checksum="abc123", analysis="digits", threshold=2, step_weights=[5, 25, 50],
                         interval_s=0.01, workload=pods, router=weights.append, events=True, **kw)


def passing(hook: str, body: dict) -> tuple[int, dict]:
    if hook == "rollback":
        return 409, {"ok": False, "reason": "no rollback", "run": "run-1"}
    return 200, {"ok": True, "reason": "fine", "run": "run-1"}


def test_a_passing_canary_goes_through_every_step_then_promotion_in_flaggers_order():
    pods, weights = Pods(ready_after=2), []
    with Scripted(passing) as svc:
        result = flagger(svc.url, pods, weights).run()
    assert result.outcome == "promoted" and result.failed_checks == 0 and result.run == "run-1"
    assert svc.hooks() == [
        "confirm-rollout",                                          # canary still at zero replicas
        "rollback", "pre-rollout", "confirm-traffic-increase",      # weight 0 -> 5
        "rollback", "rollout", "confirm-traffic-increase",          # 5 -> 25
        "rollback", "rollout", "confirm-traffic-increase",          # 25 -> 50
        "rollback", "rollout", "confirm-traffic-increase", "confirm-promotion",  # promote
        "post-rollout",                                             # after Promoting and Finalising
    ]
    assert weights == [5, 25, 50, 0]
    assert pods.log == ["up", "down"]
    # Flagger's phases on the wire: Progressing for every check, Succeeded at the end.
    phases = {(h, p) for h, p, _ in svc.calls if h != "event"}
    assert ("post-rollout", "Succeeded") in phases and ("confirm-promotion", "Progressing") in phases
    assert all(m.get("analysis") == "digits" for _, _, m in svc.calls)
    events = [m["eventMessage"] for h, _, m in svc.calls if h == "event"]
    assert events[0] == "New revision detected! Scaling up digits.test"
    assert "Advance digits.test canary weight 25" in events and events[-1].startswith("Promotion completed!")


def test_the_canary_is_scaled_up_only_after_confirm_rollout_passes():
    answers = iter([412, 412, 200])
    pods, weights = Pods(), []

    def script(hook, body):
        if hook == "confirm-rollout":
            status = next(answers)
            assert pods.log == [], "the canary has pods before confirm-rollout passed"
            return status, {"reason": "wait"}
        return passing(hook, body)

    with Scripted(script) as svc:
        result = flagger(svc.url, pods, weights).run()
    assert result.outcome == "promoted"
    assert svc.hooks()[:3] == ["confirm-rollout"] * 3


def test_a_failing_pre_rollout_counts_and_the_rollback_hook_rolls_back():
    failed = {"yes": False}

    def script(hook, body):
        if hook == "pre-rollout":
            failed["yes"] = True
            return 412, {"reason": "golden set: fail: accuracy", "run": "run-2"}
        if hook == "rollback":
            return (200, {"reason": "roll back"}) if failed["yes"] else (409, {"reason": "no"})
        return 200, {"reason": "ok", "run": "run-2"}

    pods, weights = Pods(), []
    with Scripted(script) as svc:
        result = flagger(svc.url, pods, weights).run()
    assert result.outcome == "rolled_back" and result.failed_checks == 1
    assert svc.hooks() == ["confirm-rollout", "rollback", "pre-rollout", "rollback", "post-rollout"]
    assert ("post-rollout", "Failed") in {(h, p) for h, p, _ in svc.calls}
    assert weights == [0] and pods.log == ["up", "down"]


def test_failed_rollout_checks_reach_the_threshold():
    def script(hook, body):
        if hook == "rollout":
            return 412, {"reason": "fail"}
        return passing(hook, body)

    pods, weights = Pods(), []
    with Scripted(script) as svc:
        result = flagger(svc.url, pods, weights).run()
    assert result.outcome == "rolled_back" and result.failed_checks == 2
    # The threshold is checked at the start of the tick after the second failure.
    assert svc.hooks()[-3:] == ["rollout", "rollback", "post-rollout"]
    assert weights == [5, 0]


def test_a_waiting_promotion_skips_traffic_increase_and_asks_again():
    answers = iter([412, 412, 200])

    def script(hook, body):
        if hook == "confirm-promotion":
            return next(answers), {"reason": "promotion waits"}
        return passing(hook, body)

    with Scripted(script) as svc:
        result = flagger(svc.url, Pods(), []).run()
    assert result.outcome == "promoted"
    tail = svc.hooks()[svc.hooks().index("confirm-promotion"):]
    assert tail == ["confirm-promotion", "rollback", "rollout", "confirm-promotion", "rollback", "rollout",
                    "confirm-promotion", "post-rollout"]
    rollbacks = [p for h, p, _ in svc.calls if h == "rollback"]
    assert "WaitingPromotion" in rollbacks


@pytest.mark.parametrize("status, answer, final, phase", [
    (200, {"failed": False, "decision": "continue"}, False, "Successful"),
    (200, {"failed": True, "decision": "fail"}, False, "Failed"),
    (200, {"failed": False, "decision": "continue"}, True, "Inconclusive"),
    (200, {"failed": False, "decision": "pass"}, True, "Successful"),
    (200, {"decision": "pass"}, False, "Error"),      # the condition reads a missing field
    (200, {"failed": None}, False, "Error"),          # ... or a null one
    (503, {"failed": False}, False, "Error"),         # any status outside 200-299
])
def test_argo_measurement_phases(status, answer, final, phase):
    with Scripted(lambda hook, body: (status, answer)) as svc:
        assert argo_measure(svc.url, "digits", "r", "1", final=final)[0] == phase


def test_argo_analysis_fails_after_failure_limit_and_aborts_the_rollout():
    answers = iter([{"failed": False}, {"failed": True}, {"failed": True}])
    weights: list[int] = []
    seen = []
    with Scripted(lambda hook, body: (200, next(answers))) as svc:
        driver = ArgoRolloutDriver(svc.url, "digits", "digits", "7c5ddbdf54", steps=[
            ("setWeight", 5), ("pause", 0.3), ("setWeight", 25), ("pause", 30), ("setWeight", 100)],
            interval_s=0.2, failure_limit=1, router=weights.append, observer=seen.append)
        result = driver.run(max_s=10)
    assert result.outcome == "aborted" and result.analysis_phase == "Failed"
    assert [m.phase for m in seen] == ["Successful", "Failed", "Failed"]
    assert [m.run_phase for m in seen] == ["Running", "Running", "Failed"]
    assert weights == [5, 25, 0]  # the third measurement comes after the step to 25 %
    assert svc.calls[0][2] == {"rollout": "digits", "revision": "7c5ddbdf54", "namespace": "test"}


def test_argo_steps_complete_while_the_analysis_passes():
    weights: list[int] = []
    with Scripted(lambda hook, body: (200, {"failed": False})) as svc:
        driver = ArgoRolloutDriver(svc.url, "digits", "digits", "1", steps=[
            ("setWeight", 5), ("pause", 0.05), ("setWeight", 50), ("pause", 0.05), ("setWeight", 100)],
            interval_s=0.02, router=weights.append)
        result = driver.run(max_s=10)
    assert result.outcome == "promoted" and result.analysis_phase == "Successful"
    assert weights == [5, 50, 100]


def test_argo_errors_in_a_row_end_the_analysis():
    with Scripted(lambda hook, body: (500, {})) as svc:
        driver = ArgoRolloutDriver(svc.url, "digits", "digits", "1", steps=[("setWeight", 5), ("pause", 60)],
                                   interval_s=0.01, consecutive_error_limit=4)
        result = driver.run(max_s=30)
    assert result.analysis_phase == "Error" and len(result.measurements) == 5


def test_a_promotion_confirmed_at_the_last_tick_still_completes():
    with Scripted(passing) as svc:
        result = flagger(svc.url, Pods(), []).run(max_ticks=4)  # confirm-promotion in tick 4
    assert result.outcome == "promoted" and result.ticks == 6
    assert svc.hooks()[-2:] == ["confirm-promotion", "post-rollout"]
