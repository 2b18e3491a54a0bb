"""What callers are told when a pass is not final, a stage begins, or the gate cannot decide.

Flagger: a confirm-promotion before the last stage (or with the newest window
beyond rollback) waits (412, not counted) and freezes nothing; the one that
answers 200 makes the decision final. Each confirm-traffic-increase that
answers 200 starts a stage. Argo: `stage=` starts a stage, `final=true` is the
promotion gate, and a check that cannot decide keeps the answer Inconclusive.
"""

from __future__ import annotations

from tests.webhook.scripted import GOOD
from tests.webhook.test_argo import URL
from tests.webhook.test_argo import _close as argo_close
from tests.webhook.test_flagger import close, hook

STAGED = {"drift": {"enabled": False},
          "stages": [{"from_window": 6, "latency": {"alert": 1.4, "rollback": 1.9}}]}


def _config(config_dict, checks):
    for a in config_dict["analyses"].values():
        a["checks"] = checks
    return config_dict


def _pass(c, app, hook_kind="rollout", most=12):
    for _ in range(most):
        close(app)
        r = hook(c, hook_kind)
        if r.json.get("outcome") == "pass":
            return r
    raise AssertionError(r.json)


def test_a_confirm_promotion_before_the_last_stage_waits_and_freezes_nothing(make_app, config_dict):
    app = make_app(_config(config_dict, STAGED), spec=GOOD)
    c = app.test_client()
    assert hook(c, "confirm-rollout").status_code == 200
    assert hook(c, "pre-rollout").status_code == 200
    r = _pass(c, app)
    assert r.json["final"] is False
    look = app.extensions["shadowgate"].sessions.active()[0].state.windows
    assert look < 6
    r = hook(c, "confirm-promotion")
    assert r.status_code == 412 and "last stage starts at window 6" in r.json["reason"], r.json
    svc = app.extensions["shadowgate"]
    run = svc.store.get_run(r.json["run"])
    assert run.status == "running"  # nothing frozen: measuring goes on
    while svc.sessions.active()[0].state.windows < 6:
        close(app)
    for _ in range(12):  # the last stage's pass is earned on its own windows
        r = hook(c, "confirm-promotion")
        if r.status_code == 200:
            break
        close(app)
    assert r.status_code == 200 and r.json["final"] is True, r.json
    assert svc.store.get_run(r.json["run"]).status == "promoted"


def test_a_traffic_increase_starts_a_stage_whose_pass_is_earned_again(make_app):
    app = make_app(spec=GOOD)
    c = app.test_client()
    hook(c, "confirm-rollout")
    hook(c, "pre-rollout")
    _pass(c, app)
    r = hook(c, "confirm-traffic-increase")
    assert r.status_code == 200
    close(app)
    r = hook(c, "confirm-promotion")
    assert r.status_code == 412 and r.json["outcome"] == "continue", r.json
    assert "earlier stage" in r.json["reason"]
    for _ in range(12):
        close(app)
        r = hook(c, "confirm-promotion")
        if r.status_code == 200:
            break
    assert r.status_code == 200 and r.json["final"] is True
    import time

    svc = app.extensions["shadowgate"]
    deadline = time.time() + 5
    while time.time() < deadline:  # the timeline is written in the background
        texts = [str(e) for e in svc.store.timeline(r.json["run"])]
        if any("earned again" in t for t in texts):
            break
        time.sleep(0.05)
    assert any("earned again" in t for t in texts)


def test_a_newest_window_beyond_rollback_holds_the_promotion(make_app):
    """The run passed; then the canary slows 4x (one window cannot fail latency): promotion waits."""
    app = make_app(spec=GOOD)
    c = app.test_client()
    hook(c, "confirm-rollout")
    hook(c, "pre-rollout")
    _pass(c, app)
    app.factory.by_analysis["digits"].spec = dict(GOOD, canary_median_s=0.040)
    close(app)
    r = hook(c, "confirm-promotion")
    # the pass is withdrawn by that window's evidence, or (if it still holds) the alarm on the newest
    # window holds the promotion: either way the caller waits
    assert r.status_code == 412, r.json
    assert "beyond rollback" in r.json["reason"] or "withdrawn" in r.json["reason"], r.json


def test_argo_promotion_gate_is_final_and_a_stage_takes_a_pass_back(make_app):
    app = make_app(spec=GOOD)
    c = app.test_client()
    c.get(URL + "&stage=20")
    for _ in range(12):
        argo_close(app)
        r = c.get(URL + "&stage=20").json
        if r["decision"] == "pass":
            break
    assert r["decision"] == "pass" and r["final"] is False
    r = c.get(URL + "&stage=40").json  # the next step: a heavier stage from the next window
    argo_close(app)
    r = c.get(URL + "&stage=40").json
    assert r["decision"] == "continue" and r["phase"] == "Inconclusive" and r["stage"] == 1, r["reason"]
    for _ in range(12):
        argo_close(app)
        r = c.get(URL + "&stage=40&final=true").json
        if r["decision"] == "pass":
            break
    assert r["decision"] == "pass" and r["final"] is True
    app.factory.by_analysis["digits"].spec = dict(GOOD, canary_acc=0.2)
    argo_close(app)
    r = c.get(URL + "&stage=40").json
    assert r["decision"] == "pass" and r["final"] is True  # told to promote: it stays


def test_a_check_that_cannot_decide_is_inconclusive_and_says_what_would_let_it(make_app, config_dict):
    """Windows of 2000 requests against a quantile that needs 5000: never a pass, Argo Inconclusive."""
    app = make_app(_config(config_dict, {"drift": {"enabled": False}, "latency": {"min_samples": 5000}}),
                   spec=GOOD)
    c = app.test_client()
    c.get(URL)
    for _ in range(5):
        argo_close(app)
    r = c.get(URL).json
    assert r["decision"] == "continue" and r["phase"] == "Inconclusive" and r["passed"] is False
    assert r["insufficient"] and "raise the load rate or the interval" in r["insufficient"][0]
    assert r["reason"].startswith("cannot decide")
    assert r["latency"]["verdict"] == "insufficient"


def test_a_configuration_that_can_never_decide_is_refused_unless_opted_in(tmp_path, config_dict):
    import pytest

    from webhook.config import ConfigError, load_settings

    a = config_dict["analyses"]["digits"]
    a["interval_s"] = 30
    a["load"] = {"rate": 10}
    with pytest.raises(ConfigError) as e:
        load_settings(config_dict, tmp_path)
    assert e.value.field == "analyses.digits.load.rate"
    assert "raise load.rate to >= 20" in str(e.value) and "interval_s to >= 60" in str(e.value)
    a["allow_undecidable"] = True
    load_settings(config_dict, tmp_path)
