"""Bad requests get a JSON error naming the problem, with the status the contracts call for."""

from __future__ import annotations

import base64

import pytest

from tests.webhook.conftest import TOKEN, payload


def _post(client, hook, body=None, **kw):
    return client.post(f"/flagger/{hook}", json=body, **kw)


def test_malformed_json_is_400_naming_the_body(make_app):
    c = make_app().test_client()
    r = c.post("/flagger/rollout", data=b"{not json", content_type="application/json")
    assert r.status_code == 400
    assert r.json["field"] == "body" and "JSON" in r.json["error"]


def test_empty_body_and_non_object_are_400(make_app):
    c = make_app().test_client()
    assert c.post("/flagger/rollout", data=b"").status_code == 400
    r = c.post("/flagger/rollout", json=["name", "namespace"])
    assert r.status_code == 400 and "object" in r.json["error"]


@pytest.mark.parametrize("field", ["name", "namespace"])  # checksum: older Flagger sends none
def test_missing_identity_field_is_400_naming_it(make_app, field):
    c = make_app().test_client()
    body = payload()
    del body[field]
    r = _post(c, "rollout", body)
    assert r.status_code == 400
    assert r.json["field"] == field and field in r.json["error"]


@pytest.mark.parametrize("field,value", [
    ("name", "Digits!"), ("namespace", "a" * 64), ("checksum", "../../etc/passwd"), ("checksum", 12345),
    ("name", "x; rm -rf /"),
])
def test_identifiers_are_validated(make_app, field, value):
    c = make_app().test_client()
    r = _post(c, "rollout", {**payload(), field: value})
    assert r.status_code == 400 and r.json["field"] == field


def test_metadata_values_must_be_strings(make_app):
    c = make_app().test_client()
    r = _post(c, "rollout", {**payload(), "metadata": {"rate": 5}})
    assert r.status_code == 400 and r.json["field"] == "metadata.rate"
    r = _post(c, "rollout", {**payload(), "metadata": "cmd"})
    assert r.status_code == 400 and r.json["field"] == "metadata"


def test_bad_rate_in_metadata_is_400(make_app):
    c = make_app().test_client()
    r = _post(c, "rollout", payload(rate="fast"))
    assert r.status_code == 400 and r.json["field"] == "metadata.rate"


def test_unknown_hook_type_is_404_listing_the_allowed_ones(make_app):
    c = make_app().test_client()
    r = _post(c, "pre-rollout-please", payload())
    assert r.status_code == 404
    assert "confirm-promotion" in r.json["error"] and r.json["field"] == "type"


def test_unknown_analysis_is_404(make_app):
    c = make_app().test_client()
    r = _post(c, "rollout", payload(name="checkout"))
    assert r.status_code == 404 and "checkout" in r.json["error"]
    r = _post(c, "rollout", payload(analysis="nope"))
    assert r.status_code == 404 and r.json["field"] == "metadata.analysis"


def test_oversized_body_is_413(make_app):
    c = make_app().test_client()
    r = _post(c, "event", payload(eventMessage="x" * 10_000))
    assert r.status_code == 413 and r.json["field"] == "body"


def test_wrong_method_is_json_405(make_app):
    c = make_app().test_client()
    r = c.get("/flagger/rollout")
    assert r.status_code == 405 and "error" in r.json


def test_token_required_when_configured(make_app, config_dict):
    config_dict["server"]["auth"] = {"token": TOKEN}
    c = make_app(config_dict).test_client()
    r = _post(c, "event", payload())
    assert r.status_code == 401 and r.json["field"] == "Authorization"
    r = _post(c, "event", payload(), headers={"Authorization": "Bearer wrong-token-wrong-token"})
    assert r.status_code == 401
    assert _post(c, "event", payload(), headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    # Flagger cannot set headers, but sends the URL's user info as basic auth.
    basic = base64.b64encode(f"flagger:{TOKEN}".encode()).decode()
    assert _post(c, "event", payload(), headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert c.get("/argo/v1/analyses/digits?rollout=r&revision=1").status_code == 401
    assert c.get("/api/v1/runs").status_code == 401
    # Probes and scraping need no token.
    assert c.get("/healthz").status_code == 200
    assert c.get("/metrics").status_code == 200


def test_namespace_allow_list_is_403(make_app, config_dict):
    config_dict["server"]["namespaces"] = ["prod"]
    c = make_app(config_dict).test_client()
    r = _post(c, "event", payload(namespace="test"))
    assert r.status_code == 403 and r.json["field"] == "namespace"
    assert _post(c, "event", payload(namespace="prod")).status_code == 200
    r = c.get("/argo/v1/analyses/digits?rollout=r&revision=1&namespace=test")
    assert r.status_code == 403


def test_argo_missing_query_fields_are_400(make_app):
    c = make_app().test_client()
    r = c.get("/argo/v1/analyses/digits?revision=1")
    assert r.status_code == 400 and r.json["field"] == "rollout"
    r = c.get("/argo/v1/analyses/digits?rollout=podinfo")
    assert r.status_code == 400 and r.json["field"] == "revision"
    r = c.get("/argo/v1/analyses/digits?rollout=podinfo&revision=1&scope=all")
    assert r.status_code == 400 and r.json["field"] == "scope"
    r = c.get("/argo/v1/analyses/digits?rollout=podinfo&revision=1&rate=lots")
    assert r.status_code == 400 and r.json["field"] == "rate"


def test_argo_unknown_analysis_is_404(make_app):
    c = make_app().test_client()
    r = c.get("/argo/v1/analyses/checkout?rollout=podinfo&revision=1")
    assert r.status_code == 404 and "digits" in r.json["error"]


def test_argo_post_body_must_be_an_object(make_app):
    c = make_app().test_client()
    r = c.post("/argo/v1/analyses/digits", data=b"[1,2]", content_type="application/json")
    assert r.status_code == 400 and r.json["field"] == "body"


def test_runs_api_validates_ids(make_app):
    c = make_app().test_client()
    assert c.get("/api/v1/runs/../../etc").status_code == 404
    r = c.get("/api/v1/runs/not-a-run")
    assert r.status_code == 400 and r.json["field"] == "run_id"
    assert c.get("/api/v1/runs/run-0123456789abcdef").status_code == 404
    assert c.get("/api/v1/runs?limit=0").status_code == 400
    assert c.get("/api/v1/runs?status=weird").status_code == 400
