"""Flagger's hooks answer as its table says: success <= 202, a failing verdict 412, rollback inverted."""

from __future__ import annotations

import json

from tests.webhook.conftest import payload
from tests.webhook.scripted import BAD, GOOD


def hook(client, kind, **kw):
    return client.post(f"/flagger/{kind}", json=payload(**kw))


def test_good_canary_goes_through_a_whole_analysis(make_app):
    app = make_app(spec=GOOD)
    c = app.test_client()
    assert hook(c, "confirm-rollout").status_code == 200
    r = hook(c, "pre-rollout")
    assert r.status_code == 200, r.json
    for _ in range(3):
        r = hook(c, "rollout")
        assert r.status_code == 200, r.json
        assert r.json["outcome"] in ("pass", "marginal")
        assert hook(c, "confirm-traffic-increase").status_code == 200
        assert hook(c, "rollback").status_code == 409
    r = hook(c, "confirm-promotion")
    assert r.status_code == 200, r.json
    r = hook(c, "post-rollout", phase="Succeeded")
    assert r.status_code == 200 and r.json["status"] == "succeeded"

    runs = c.get("/api/v1/runs").json["runs"]
    assert len(runs) == 1 and runs[0]["status"] == "succeeded" and runs[0]["windows"] == 5
    detail = c.get(f"/api/v1/runs/{runs[0]['id']}").json
    # post-rollout closes the open window before the load stops
    assert [w["kind"] for w in detail["windows"]] == ["golden", "early", "early", "early", "final"]
    kinds = {e["kind"] for e in detail["timeline"]}
    assert {"run", "session", "window", "flagger:pre-rollout", "flagger:post-rollout"} <= kinds
    assert detail["live"] is False


def test_bad_canary_fails_rollout_with_one_readable_line(make_app):
    app = make_app(spec=BAD)
    c = app.test_client()
    r = hook(c, "pre-rollout")
    assert r.status_code == 412
    r = hook(c, "rollout")
    assert r.status_code == 412
    text = r.get_data(as_text=True)
    assert "\n" not in text.strip()
    body = json.loads(text)
    assert body["ok"] is False and body["outcome"] == "fail" and "accuracy" in body["reason"]
    assert hook(c, "confirm-traffic-increase").status_code == 412
    assert hook(c, "confirm-promotion").status_code == 412
    # accuracy is critical by default: Flagger rolls back at once on 200.
    r = hook(c, "rollback")
    assert r.status_code == 200 and r.json["rollback"] is True


def test_a_window_is_reported_to_rollout_once(make_app):
    app = make_app(spec=BAD)
    c = app.test_client()
    assert hook(c, "rollout").status_code == 412
    app.factory.by_analysis["digits"].spec = None  # nothing new measured
    r = hook(c, "rollout")
    assert r.status_code == 200 and r.json["outcome"] == "nodata"


def test_confirm_rollout_412_when_the_canary_is_not_ready(make_app):
    app = make_app(canary_check=(False, "canary digits:canary has no AVAILABLE version (states: 2=LOADING)",
                                 "canary"))
    c = app.test_client()
    r = hook(c, "confirm-rollout")
    assert r.status_code == 412 and "LOADING" in r.json["reason"]


def test_stable_down_is_not_the_canarys_fault(make_app):
    app = make_app(spec=dict(stable_down=True))
    c = app.test_client()
    r = hook(c, "rollout")
    assert r.status_code == 200, r.json
    assert r.json["outcome"] == "nodata"
    assert hook(c, "rollback").status_code == 409
    # ...but there is no evidence to promote on.
    assert hook(c, "confirm-promotion").status_code == 412


def test_canary_down_fails(make_app):
    app = make_app(spec=dict(canary_down=True))
    c = app.test_client()
    r = hook(c, "rollout")
    assert r.status_code == 412, r.json


def test_metadata_rate_is_capped_by_the_config(make_app, config_dict):
    config_dict["analyses"]["digits"]["load"] = {"rate": 5, "max_rate": 50}
    app = make_app(config_dict)
    c = app.test_client()
    assert hook(c, "rollout", rate="500").status_code in (200, 412)
    import time
    deadline = time.time() + 5
    m = app.factory.by_analysis["digits"]
    while not m.rates and time.time() < deadline:
        time.sleep(0.01)
    assert m.rates[-1] == 50


def test_event_is_recorded_in_the_timeline(make_app):
    app = make_app()
    c = app.test_client()
    r = hook(c, "event", eventMessage="Starting canary analysis for digits.test", eventType="Normal",
             timestamp="1700000000000")
    assert r.status_code == 200
    run = c.get("/api/v1/runs").json["runs"][0]
    timeline = c.get(f"/api/v1/runs/{run['id']}").json["timeline"]
    assert any("Starting canary analysis" in e["message"] for e in timeline)
    # An event never starts load.
    assert "digits" not in app.factory.by_analysis or app.factory.by_analysis["digits"].started == 0


def test_analysis_from_metadata_and_separate_runs(make_app):
    app = make_app()
    c = app.test_client()
    assert hook(c, "rollout", name="frontend", analysis="podinfo").status_code == 200
    assert hook(c, "rollout", checksum="newrevision1").status_code == 200
    runs = c.get("/api/v1/runs").json["runs"]
    assert {(r["analysis"], r["name"], r["revision"]) for r in runs} == {
        ("podinfo", "frontend", "85d557f47b"), ("digits", "digits", "newrevision1")}


def test_post_rollout_failed_records_failed_and_stops_load(make_app):
    app = make_app(spec=BAD)
    c = app.test_client()
    hook(c, "rollout")
    r = hook(c, "post-rollout", phase="Failed")
    assert r.status_code == 200 and r.json["status"] == "failed"
    assert app.factory.by_analysis["digits"].stopped == 1
    assert c.get("/api/v1/runs?status=failed").json["runs"][0]["verdict"]["outcome"] == "fail"
    # The finished run still answers from the store, without restarting load.
    assert hook(c, "rollout").status_code == 412
    assert app.factory.by_analysis["digits"].started == 1


def test_webhook_durations_and_window_values_are_exported(make_app):
    app = make_app(spec=GOOD)
    c = app.test_client()
    hook(c, "rollout")
    text = c.get("/metrics").get_data(as_text=True)
    assert 'shadowgate_webhook_duration_seconds_count{caller="flagger",hook="rollout",status="200"} 1.0' in text
    assert 'shadowgate_accuracy_ratio{analysis="digits",version="canary"}' in text
    assert 'shadowgate_latency_p99_seconds{analysis="digits",version="stable"}' in text
    assert 'shadowgate_verdict{analysis="digits"}' in text
    assert 'shadowgate_load_requests_total{analysis="digits",code="OK",version="canary"} 2000.0' in text
    assert 'shadowgate_probes_total{analysis="digits",outcome="ok",version="stable"} 300.0' in text


def test_rollout_judges_every_window_closed_since_the_last_call_together(make_app):
    app = make_app(spec=GOOD)
    c = app.test_client()
    assert hook(c, "rollout").json["windows"] == [1]
    svc = app.extensions["shadowgate"]
    (session,) = svc.sessions.active()
    for _ in range(2):  # two windows close on the interval before Flagger calls again
        svc.sessions.call(session.close_window("interval"), 10)
    r = hook(c, "rollout")
    assert r.status_code == 200 and r.json["windows"] == [2, 3]
    assert hook(c, "rollout").json["windows"] == [4]  # nothing new: the open window closes early
