"""The stand-in over REST: TF Serving's URLs, bodies, errors and metrics."""

from __future__ import annotations

import re

import numpy as np
import pytest
import requests

TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def http():
    with requests.Session() as s:
        yield s


@pytest.fixture(scope="module")
def golden(demo_assets):
    data = np.load(demo_assets.golden)
    return data["inputs"], data["labels"]


def predict(http, url, path, body):
    return http.post(f"{url}/v1/models/{path}:predict", json=body, timeout=TIMEOUT_S)


def test_row_form_gives_one_object_per_instance(http, modelserver, golden):
    x = golden[0][:3]
    r = predict(http, modelserver.rest_url, "digits/labels/stable", {"instances": x.tolist()})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 3
    assert set(preds[0]) == {"probabilities", "classes"}
    assert isinstance(preds[0]["classes"], int)
    assert len(preds[0]["probabilities"]) == 10
    assert sum(preds[0]["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_named_instances_and_column_form_agree_with_grpc_style_rows(http, modelserver, golden):
    x = golden[0][:4]
    url = modelserver.rest_url
    rows = predict(http, url, "digits/versions/1", {"instances": x.tolist()}).json()["predictions"]
    named = predict(http, url, "digits/versions/1",
                    {"instances": [{"x": row} for row in x.tolist()]}).json()["predictions"]
    cols = predict(http, url, "digits/versions/1", {"inputs": {"x": x.tolist()}}).json()["outputs"]
    bare = predict(http, url, "digits/versions/1", {"inputs": x.tolist()}).json()["outputs"]
    assert [p["classes"] for p in rows] == [p["classes"] for p in named] == cols["classes"]
    assert cols == bare
    np.testing.assert_allclose([p["probabilities"] for p in rows], cols["probabilities"])


def test_rest_predictions_match_the_savedmodel(http, modelserver, golden, demo_assets):
    import tensorflow as tf

    x = golden[0][:20]
    fn = tf.saved_model.load(str(demo_assets.model_base_path / "2")).signatures["serving_default"]
    want = fn(x=tf.constant(x))
    out = predict(http, modelserver.rest_url, "digits/labels/canary",
                  {"inputs": x.tolist()}).json()["outputs"]
    assert out["classes"] == want["classes"].numpy().tolist()
    np.testing.assert_allclose(out["probabilities"], want["probabilities"].numpy(), rtol=1e-6, atol=1e-7)


def test_unknown_model_is_404_with_tf_serving_error_body(http, modelserver, golden):
    r = predict(http, modelserver.rest_url, "nope", {"instances": golden[0][:1].tolist()})
    assert r.status_code == 404
    assert r.json() == {"error": "Servable not found for request: Latest(nope)"}


def test_unknown_label_is_400_and_unknown_version_404(http, modelserver, golden):
    body = {"instances": golden[0][:1].tolist()}
    r = predict(http, modelserver.rest_url, "digits/labels/blue", body)
    assert r.status_code == 400 and "Unrecognized servable version label: blue" in r.json()["error"]
    r = predict(http, modelserver.rest_url, "digits/versions/9", body)
    assert r.status_code == 404 and "Specific(digits, 9)" in r.json()["error"]


@pytest.mark.parametrize("body,needle", [
    ({"instances": [[0.1] * 63]}, "'x' has shape [1, 63]"),
    ({"instances": [[0.1] * 64, [0.1] * 3]}, "'x'"),                 # ragged rows
    ({"instances": [["a"] * 64]}, "'x': expects DT_FLOAT"),
    ({"inputs": {"pixels": [[0.1] * 64]}}, "missing but required: {x}"),
    ({"instances": []}, "non-empty list"),
    ({"rows": [[0.1] * 64]}, "Missing 'inputs' or 'instances' key"),
    ({"instances": [[0.1] * 64], "inputs": [[0.1] * 64]}, "only one of"),
    ({"instances": [[0.1] * 64], "signature_name": 3}, "'signature_name' key must be a string"),
])
def test_bad_inputs_are_400_naming_the_problem(http, modelserver, body, needle):
    r = predict(http, modelserver.rest_url, "digits", body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]


def test_malformed_json_is_400_with_error_body(http, modelserver):
    r = http.post(f"{modelserver.rest_url}/v1/models/digits:predict", data=b"{instances: [",
                  headers={"Content-Type": "application/json"}, timeout=TIMEOUT_S)
    assert r.status_code == 400
    assert "JSON" in r.json()["error"]


def test_unknown_signature_is_400_failed_precondition(http, modelserver, golden):
    r = predict(http, modelserver.rest_url, "digits",
                {"instances": golden[0][:1].tolist(), "signature_name": "nope"})
    assert r.status_code == 400
    assert r.json()["error"] == 'Serving signature key "nope" not found.'


def test_classify_is_501(http, modelserver):
    r = http.post(f"{modelserver.rest_url}/v1/models/digits:classify", json={"examples": []},
                  timeout=TIMEOUT_S)
    assert r.status_code == 501 and "error" in r.json()


def test_status(http, modelserver):
    r = http.get(f"{modelserver.rest_url}/v1/models/digits", timeout=TIMEOUT_S)
    assert r.json() == {"model_version_status": [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in ("1", "2")]}
    r = http.get(f"{modelserver.rest_url}/v1/models/digits/labels/stable", timeout=TIMEOUT_S)
    assert [s["version"] for s in r.json()["model_version_status"]] == ["1"]
    r = http.get(f"{modelserver.rest_url}/v1/models/digits/versions/2", timeout=TIMEOUT_S)
    assert [s["version"] for s in r.json()["model_version_status"]] == ["2"]
    r = http.get(f"{modelserver.rest_url}/v1/models/nope", timeout=TIMEOUT_S)
    assert r.status_code == 404 and "nope" in r.json()["error"]


def test_metadata(http, modelserver):
    r = http.get(f"{modelserver.rest_url}/v1/models/digits/labels/canary/metadata", timeout=TIMEOUT_S)
    assert r.status_code == 200
    body = r.json()
    assert body["model_spec"]["version"] == "2"
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["inputs"]["x"]["tensor_shape"]["dim"]] == ["-1", "64"]
    assert sig["outputs"]["classes"]["dtype"] == "DT_INT64"


def test_unknown_path_is_404_json(http, modelserver):
    r = http.get(f"{modelserver.rest_url}/v2/whatever", timeout=TIMEOUT_S)
    assert r.status_code == 404 and "error" in r.json()


def _metric(text: str, name: str, **labels) -> float:
    """The value of one sample line of the exposition text (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.rindex("}")]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_status_and_histogram_latency(http, modelserver, golden):
    before = http.get(f"{modelserver.rest_url}/monitoring/prometheus/metrics", timeout=TIMEOUT_S).text
    for _ in range(3):
        assert predict(http, modelserver.rest_url, "digits",
                       {"instances": golden[0][:1].tolist()}).status_code == 200
    assert predict(http, modelserver.rest_url, "digits", {"instances": [[1.0]]}).status_code == 400
    r = http.get(f"{modelserver.rest_url}/monitoring/prometheus/metrics", timeout=TIMEOUT_S)
    assert r.headers["Content-Type"].startswith("text/plain")
    after = r.text
    count = ":tensorflow:serving:request_count"
    assert "# TYPE :tensorflow:serving:request_count counter" in after
    assert "# TYPE :tensorflow:serving:request_latency histogram" in after
    assert (_metric(after, count, model_name="digits", status="OK")
            - _metric(before, count, model_name="digits", status="OK")) == 3
    assert (_metric(after, count, model_name="digits", status="INVALID_ARGUMENT")
            - _metric(before, count, model_name="digits", status="INVALID_ARGUMENT")) == 1
    hist = ":tensorflow:serving:request_latency"
    labels = {"model_name": "digits", "API": "Predict", "entrypoint": "REST"}
    n_after = _metric(after, hist + "_count", **labels)
    assert n_after - _metric(before, hist + "_count", **labels) == 3  # successes only
    assert _metric(after, hist + "_bucket", le="+Inf", **labels) == n_after
    assert _metric(after, hist + "_sum", **labels) > 0
