"""Argo's web provider always gets 200 and a JSON verdict (non-2xx would be a measurement Error)."""

from __future__ import annotations

from tests.webhook.scripted import BAD, GOOD

URL = "/argo/v1/analyses/digits?rollout=podinfo&revision=5f8c9d&namespace=prod"


def test_first_call_judges_the_golden_set_and_passes_a_good_canary(make_app):
    c = make_app(spec=GOOD).test_client()
    r = c.get(URL)
    assert r.status_code == 200
    result = r.json
    # successCondition: result.passed == true
    assert result["passed"] is True and result["phase"] == "Successful"
    assert result["windows"] == [1] and result["fresh"] is True
    assert result["checks"]["accuracy"]["verdict"] == "pass"
    # shortcuts for conditions like result.accuracy.delta > -0.02
    assert result["accuracy"]["delta"] == result["checks"]["accuracy"]["difference"]
    assert isinstance(result["accuracy"]["delta"], float)
    assert {"stable", "canary", "ratio", "p_value"} <= set(result["accuracy"])


def test_bad_canary_is_200_with_passed_false(make_app):
    c = make_app(spec=BAD).test_client()
    for _ in range(2):
        r = c.get(URL)
        assert r.status_code == 200
        assert r.json["passed"] is False and r.json["phase"] == "Failed"


def test_no_new_window_answers_with_the_whole_run(make_app):
    app = make_app(spec=GOOD)
    c = app.test_client()
    c.get(URL)
    app.factory.by_analysis["digits"].spec = None
    r = c.get(URL)
    assert r.status_code == 200 and r.json["fresh"] is False and r.json["passed"] is True


def test_no_data_is_inconclusive_not_an_error(make_app):
    c = make_app(spec=dict(stable_down=True)).test_client()
    r = c.get(URL)
    assert r.status_code == 200
    assert r.json["passed"] is False and r.json["phase"] == "Inconclusive" and r.json["outcome"] == "nodata"


def test_post_with_json_body_and_run_scope(make_app):
    c = make_app(spec=GOOD).test_client()
    r = c.post("/argo/v1/analyses/digits", json={"rollout": "podinfo", "revision": "7", "scope": "run"})
    assert r.status_code == 200 and r.json["scope"] == "run" and r.json["namespace"] == "default"
    runs = c.get("/api/v1/runs").json["runs"]
    assert runs[0]["caller"] == "argo" and runs[0]["revision"] == "7"


def test_argo_durations_are_exported(make_app):
    c = make_app(spec=GOOD).test_client()
    c.get(URL)
    text = c.get("/metrics").get_data(as_text=True)
    assert 'shadowgate_webhook_duration_seconds_count{caller="argo",hook="analysis",status="200"} 1.0' in text
