"""Argo's web provider always gets 200 and a JSON verdict (non-2xx would be a measurement Error)."""

from __future__ import annotations

from tests.webhook.scripted import BAD, GOOD

URL = "/argo/v1/analyses/digits?rollout=podinfo&revision=5f8c9d&namespace=prod"


def _session(app):
    import time
    svc = app.extensions["shadowgate"]
    deadline = time.time() + 5
    while not svc.sessions.active() and time.time() < deadline:
        time.sleep(0.01)
    return svc.sessions.active()[0]


def _close(app):
    s = _session(app)
    s.golden_done.result(timeout=5)
    app.extensions["shadowgate"].sessions.call(s.close_window("interval"), 5)


KEYS = {"stable", "canary", "estimate", "alert", "rollback", "fail_evidence", "fail_at", "pass_at", "ci_low",
        "ci_high", "measured", "verdict", "failed", "passed", "windows", "reason"}


def test_first_call_answers_at_once_with_every_key(make_app):
    """No live golden check on Argo's path: the session measures in the background."""
    app = make_app(spec=GOOD)
    c = app.test_client()
    r = c.get(URL)
    assert r.status_code == 200
    result = r.json
    assert result["decision"] in ("continue", "pass") and result["failed"] is False
    for name in ("accuracy", "latency", "errors", "errors_increase"):
        assert KEYS <= set(result[name]), name
        assert all(result[name][k] is not None for k in KEYS), name  # expr-lang never reads a null


def test_good_canary_passes_and_keys_stay_the_same(make_app):
    app = make_app(spec=GOOD)
    c = app.test_client()
    first = c.get(URL).json
    for _ in range(4):
        _close(app)
    r = c.get(URL).json
    assert r["decision"] == "pass" and r["passed"] is True and r["phase"] == "Successful"
    assert set(r) == set(first) and set(r["latency"]) == set(first["latency"])
    assert r["latency"]["measured"] is True and isinstance(r["latency"]["estimate"], float)


def test_bad_canary_is_200_with_failed_true(make_app):
    app = make_app(spec=BAD)
    c = app.test_client()
    c.get(URL)
    _close(app)
    for _ in range(2):
        r = c.get(URL)
        assert r.status_code == 200
        assert r.json["failed"] is True and r.json["phase"] == "Failed" and r.json["decision"] == "fail"


def test_undecided_is_inconclusive_not_an_error(make_app):
    app = make_app(spec=dict(stable_down=True))
    c = app.test_client()
    c.get(URL)
    _close(app)
    r = c.get(URL)
    assert r.status_code == 200
    assert r.json["failed"] is False and r.json["phase"] == "Inconclusive" and r.json["decision"] == "continue"
    assert r.json["window_health"] == "stable_down"


def test_post_with_json_body(make_app):
    c = make_app(spec=GOOD).test_client()
    r = c.post("/argo/v1/analyses/digits", json={"rollout": "podinfo", "revision": "7", "rate": 20})
    assert r.status_code == 200 and r.json["namespace"] == "default"
    runs = c.get("/api/v1/runs").json["runs"]
    assert runs[0]["caller"] == "argo" and runs[0]["revision"] == "7"


def test_rate_zero_is_refused(make_app):
    r = make_app().test_client().get(URL + "&rate=0")
    assert r.status_code == 400 and r.json["field"] == "rate"


def test_argo_durations_are_exported(make_app):
    c = make_app(spec=GOOD).test_client()
    c.get(URL)
    text = c.get("/metrics").get_data(as_text=True)
    assert 'shadowgate_webhook_duration_seconds_count{caller="argo",hook="analysis",status="200"} 1.0' in text
