"""Flagger's hooks, in Flagger's real order, all reading the run's one decision."""

from __future__ import annotations

import time

from tests.webhook.conftest import payload
from tests.webhook.scripted import BAD, GOOD


def hook(client, kind, **kw):
    return client.post(f"/flagger/{kind}", json=payload(**kw))


def session(app, name="digits"):
    svc = app.extensions["shadowgate"]
    deadline = time.time() + 5
    while time.time() < deadline:
        for s in svc.sessions.active():
            if s.run.name == name:
                return s
        time.sleep(0.01)
    raise AssertionError("no live session")


def close(app, name="digits"):
    """Close the open window now (the interval would, in a real run) and wait for the gate update."""
    s = session(app, name)
    s.golden_done.result(timeout=5)
    app.extensions["shadowgate"].sessions.call(s.close_window("interval"), 5)
    return s


def test_good_canary_in_flaggers_order_is_promoted(make_app):
    """confirm-rollout needs no canary; pre-rollout checks it and the golden set; promotion on a pass."""
    app = make_app(spec=GOOD)
    c = app.test_client()
    r = hook(c, "confirm-rollout")
    assert r.status_code == 200, r.json
    assert "digits" not in app.factory.by_analysis or app.factory.by_analysis["digits"].started == 0
    r = hook(c, "pre-rollout")
    assert r.status_code == 200, r.json
    assert hook(c, "rollback").status_code == 409
    for _ in range(4):
        close(app)
        assert hook(c, "rollout").status_code == 200
    r = hook(c, "confirm-promotion")
    assert r.status_code == 200 and r.json["outcome"] == "pass", r.json
    assert hook(c, "confirm-traffic-increase").status_code == 200
    r = hook(c, "post-rollout", phase="Succeeded")
    assert r.status_code == 200 and r.json["status"] == "succeeded"


def test_bad_canary_every_hook_agrees(make_app):
    app = make_app(spec=BAD)
    c = app.test_client()
    hook(c, "confirm-rollout")
    hook(c, "pre-rollout")
    close(app)
    answers = {k: hook(c, k) for k in ("rollout", "rollback", "confirm-traffic-increase", "confirm-promotion")}
    assert answers["rollout"].status_code == 412
    assert answers["rollback"].status_code == 200 and answers["rollback"].json["rollback"] is True
    assert answers["confirm-traffic-increase"].status_code == 412
    assert answers["confirm-promotion"].status_code == 412
    reason = answers["rollout"].json["reason"]
    assert "\n" not in reason and "accuracy" in reason and "rollback" in reason
    # once failed, always failed: good windows afterwards change nothing
    app.factory.by_analysis["digits"].spec = dict(GOOD)
    for _ in range(3):
        close(app)
    assert hook(c, "rollout").status_code == 412 and hook(c, "rollback").status_code == 200


def test_pre_rollout_412_when_the_canary_is_not_ready(make_app):
    app = make_app(canary_check=(False, "canary digits:canary at 127.0.0.1:1 is not ready: UNAVAILABLE", "canary"))
    c = app.test_client()
    assert hook(c, "confirm-rollout").status_code == 200  # no pod yet: not asked
    r = hook(c, "pre-rollout")
    assert r.status_code == 412 and "not ready" in r.json["reason"]


def test_a_revision_that_failed_is_not_confirmed_again(make_app):
    app = make_app(spec=BAD)
    c = app.test_client()
    hook(c, "pre-rollout")
    close(app)
    hook(c, "post-rollout", phase="Failed")
    r = hook(c, "confirm-rollout")
    assert r.status_code == 412 and "already failed" in r.json["reason"]


def test_stable_down_is_not_the_canarys_fault(make_app):
    app = make_app(spec=GOOD)
    c = app.test_client()
    hook(c, "pre-rollout")
    for _ in range(3):
        close(app)
    app.factory.by_analysis["digits"].spec = dict(stable_down=True)
    close(app)
    assert hook(c, "rollout").status_code == 200
    assert hook(c, "rollback").status_code == 409
    r = hook(c, "confirm-traffic-increase")
    assert r.status_code == 412 and "stable is down" in r.json["reason"]
    assert hook(c, "confirm-promotion").status_code == 412


def test_canary_down_fails(make_app):
    app = make_app(spec=dict(canary_down=True))
    c = app.test_client()
    hook(c, "pre-rollout")
    close(app)
    assert hook(c, "rollout").status_code == 412
    assert hook(c, "rollback").status_code == 200


def test_flagger_without_checksum_keys_runs_on_namespace_and_name(make_app):
    app = make_app(spec=GOOD)
    c = app.test_client()
    body = payload()
    del body["checksum"]
    assert c.post("/flagger/confirm-rollout", json=body).status_code == 200
    assert c.post("/flagger/pre-rollout", json=body).status_code == 200
    assert c.post("/flagger/rollout", json=body).status_code == 200
    assert c.post("/flagger/post-rollout", json={**body, "phase": "Succeeded"}).status_code == 200
    assert c.post("/flagger/pre-rollout", json=body).status_code == 200  # a new run after the finished one
    runs = c.get("/api/v1/runs").json["runs"]
    assert len(runs) == 2 and {r["revision"] for r in runs} == {"-"}


def test_rate_zero_is_refused(make_app):
    c = make_app().test_client()
    r = hook(c, "rollout", rate="0")
    assert r.status_code == 400 and r.json["field"] == "metadata.rate"


def test_event_for_an_unknown_analysis_still_answers_200(make_app):
    c = make_app().test_client()
    r = hook(c, "event", name="not-an-analysis", eventMessage="x")
    assert r.status_code == 200


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
    hook(c, "pre-rollout")
    close(app)
    r = hook(c, "post-rollout", phase="Failed")
    assert r.status_code == 200 and r.json["status"] == "failed"
    deadline = time.time() + 5
    while app.factory.by_analysis["digits"].stopped == 0 and time.time() < deadline:
        time.sleep(0.01)
    assert app.factory.by_analysis["digits"].stopped == 1
    assert c.get("/api/v1/runs?status=failed").json["runs"][0]["verdict"]["outcome"] == "fail"
    # The finished run still answers from the store, without restarting load.
    assert hook(c, "rollout").status_code == 412
    assert app.factory.by_analysis["digits"].started == 1


def test_metrics_are_per_rollout_and_removed_when_it_ends(make_app):
    app = make_app(spec=GOOD)
    c = app.test_client()
    hook(c, "pre-rollout")
    close(app)
    hook(c, "rollout")
    text = c.get("/metrics").get_data(as_text=True)
    assert 'shadowgate_webhook_duration_seconds_count{caller="flagger",hook="rollout",status="200"} 1.0' in text
    labels = 'analysis="digits",name="digits",namespace="test"'  # prometheus_client sorts label names
    assert f'shadowgate_accuracy_ratio{{{labels},version="canary"}}' in text
    assert f'shadowgate_latency_p99_seconds{{{labels},version="stable"}}' in text
    assert f'shadowgate_decision{{{labels}}}' in text
    assert ('shadowgate_check_threshold{analysis="digits",check="latency",kind="rollback",name="digits",'
            'namespace="test"} 2.0') in text
    assert 'shadowgate_load_requests_total{analysis="digits",code="OK",version="canary"}' in text
    hook(c, "post-rollout", phase="Succeeded")
    text = c.get("/metrics").get_data(as_text=True)
    assert f'shadowgate_decision{{{labels}}}' not in text
    assert f'shadowgate_accuracy_ratio{{{labels},version="canary"}}' not in text


def test_limits_protect_the_model_servers_by_queueing_never_by_a_failed_check(make_app, config_dict):
    """A cap on admitted runs per analysis and on the load one model server gets; both exported.

    (Was a 429 on rollout: Flagger counts that as a failed check. Now a run beyond the caps waits in the
    admission queue: 200 "not measured yet" on rollout, 412 at confirm-rollout; a rate beyond the budget
    is not applied, said in the reason.)
    """
    config_dict["server"].update(max_sessions_per_analysis=2, max_target_rate=300)
    config_dict["analyses"]["digits"]["load"] = {"rate": 100, "max_rate": 400}
    app = make_app(config_dict, spec=GOOD)
    c = app.test_client()
    assert hook(c, "rollout", name="a1", analysis="digits").status_code == 200
    r = hook(c, "rollout", name="a2", analysis="digits")
    assert r.status_code == 200 and r.json["queued"] == 1, r.json
    assert "max_target_rate" in r.json["reason"] and "not measured yet" in r.json["reason"], r.json
    r = hook(c, "confirm-rollout", name="a2", analysis="digits")
    assert r.status_code == 412 and r.json["queued"] == 1 and "queued: 0 ahead" in r.json["reason"], r.json
    r = hook(c, "rollout", name="a1", analysis="digits", rate="400")
    assert r.status_code == 200 and "metadata.rate 400 not applied" in r.json["reason"], r.json
    text = c.get("/metrics").get_data(as_text=True)
    assert 'shadowgate_limit{kind="target_rate"} 300.0' in text
    assert 'shadowgate_usage{kind="sessions"} 1.0' in text
    assert 'shadowgate_admission_admitted{namespace="test"} 1.0' in text
    assert 'shadowgate_admission_queued{namespace="test"} 1.0' in text


def test_a_new_revision_takes_over_the_old_revisions_capacity_at_once(make_app, config_dict):
    """Flagger restarts the analysis for a new revision without a post-rollout for the old one: the old
    run must stop loading the servers and give its slot back now, not after idling out (it held the only
    slot: the new revision waited, 412 at every confirm-rollout)."""
    config_dict["server"].update(max_sessions_per_analysis=1)
    app = make_app(config_dict, spec=GOOD)
    c = app.test_client()
    svc = app.extensions["shadowgate"]
    assert hook(c, "confirm-rollout", name="shop", analysis="digits", checksum="rev1").status_code == 200
    old = hook(c, "pre-rollout", name="shop", analysis="digits", checksum="rev1").json["run"]
    assert [s.run.id for s in svc.sessions.active()] == [old]
    r = hook(c, "confirm-rollout", name="shop", analysis="digits", checksum="rev2")
    assert r.status_code == 200 and "queued" not in r.json, r.json
    new = hook(c, "pre-rollout", name="shop", analysis="digits", checksum="rev2").json["run"]
    deadline = time.time() + 5
    while time.time() < deadline and [s.run.id for s in svc.sessions.active()] != [new]:
        time.sleep(0.05)
    assert [s.run.id for s in svc.sessions.active()] == [new]
    stored = c.get(f"/api/v1/runs/{old}").json
    assert stored["status"] == "idle" and any("rev2" in e["message"] for e in stored["timeline"]), stored
    # another rollout's revision is not touched
    assert hook(c, "confirm-rollout", name="other", analysis="digits", checksum="rev9").status_code == 412


def test_sessions_per_analysis_cap(make_app, config_dict):
    config_dict["server"].update(max_sessions_per_analysis=1)
    app = make_app(config_dict, spec=GOOD)
    c = app.test_client()
    assert hook(c, "rollout", name="b1", analysis="digits").status_code == 200
    r = hook(c, "rollout", name="b2", analysis="digits")  # was 429
    assert r.status_code == 200 and "max_sessions_per_analysis" in r.json["reason"] and r.json["queued"] == 1
    assert hook(c, "rollout", name="b3", analysis="podinfo").status_code == 200  # another analysis may start
    assert len(app.extensions["shadowgate"].sessions.active()) == 2  # b2 is not measured


def test_promotion_freezes_the_decision_while_flagger_finalises(make_app):
    """The canary is scaled to zero before post-rollout: windows measured then must not flip a promoted run."""
    app = make_app(spec=GOOD)
    c = app.test_client()
    hook(c, "confirm-rollout")
    hook(c, "pre-rollout")
    for _ in range(4):
        close(app)
    assert hook(c, "confirm-promotion").status_code == 200
    deadline = time.time() + 5
    m = app.factory.by_analysis["digits"]
    while m.stopped == 0 and time.time() < deadline:
        time.sleep(0.01)
    assert m.stopped == 1  # load stopped at promotion
    m.spec = dict(canary_down=True)  # the canary goes away, as Kubernetes scales it down
    assert hook(c, "rollout", phase="Promoting").status_code == 200
    assert hook(c, "confirm-promotion", phase="Promoting").status_code == 200
    assert m.started == 1  # no new session was started for the promoted run
    r = hook(c, "post-rollout", phase="Succeeded")
    assert r.status_code == 200 and r.json["status"] == "succeeded" and r.json["outcome"] == "pass"
