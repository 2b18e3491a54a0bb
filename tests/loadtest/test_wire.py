"""Hand-encoded requests are byte-identical to TF Serving's own messages."""

import json

import numpy as np
import pytest

from loadtest.wire import (
    Target,
    build_payloads,
    encode_predict_request,
    encode_predict_response,
    rest_predict_body,
    rest_predict_url,
)


@pytest.fixture(scope="module")
def pb():
    tf = pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import predict_pb2

    return tf, predict_pb2


def test_request_equals_the_official_serialisation(pb):
    tf, predict_pb2 = pb
    x = np.random.default_rng(0).random((3, 64)).astype(np.float32)
    ref = predict_pb2.PredictRequest()
    ref.model_spec.name = "digits"
    ref.model_spec.version.value = 2
    ref.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    assert encode_predict_request({"x": x}, "digits", version=2, signature=None) == ref.SerializeToString()


def test_request_fields_parse_back(pb):
    tf, predict_pb2 = pb
    inputs = {"x": np.ones((1, 4), np.float32), "ids": np.array([[1, -2]], np.int64),
              "words": np.array(["a", "bc"])}
    req = predict_pb2.PredictRequest()
    req.ParseFromString(encode_predict_request(inputs, "m", label="canary"))
    assert req.model_spec.name == "m"
    assert req.model_spec.version_label == "canary"
    assert req.model_spec.signature_name == "serving_default"
    assert np.array_equal(tf.make_ndarray(req.inputs["x"]), inputs["x"])
    assert np.array_equal(tf.make_ndarray(req.inputs["ids"]), inputs["ids"])
    assert list(tf.make_ndarray(req.inputs["words"])) == [b"a", b"bc"]


def test_response_parses_back(pb):
    tf, predict_pb2 = pb
    out = {"probabilities": np.full((1, 10), 0.1, np.float32), "classes": np.array([3], np.int64)}
    resp = predict_pb2.PredictResponse()
    resp.ParseFromString(encode_predict_response(out, "digits", 1))
    assert resp.model_spec.version.value == 1
    assert tf.make_ndarray(resp.outputs["classes"]).tolist() == [3]


def test_rest_url_and_body():
    assert rest_predict_url("127.0.0.1:8501", "digits", label="canary") == \
        "http://127.0.0.1:8501/v1/models/digits/labels/canary:predict"
    assert rest_predict_url("http://h:1/", "d", version=2) == "http://h:1/v1/models/d/versions/2:predict"
    body = json.loads(rest_predict_body({"x": np.array([[1.0, 2.0]])}))
    assert body == {"inputs": {"x": [[1.0, 2.0]]}}


def test_payloads_cycle_rows_in_batches():
    rows = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
    bodies = build_payloads(Target("h:1", "m", "rest"), rows, "x", batch=4)
    first = json.loads(bodies[0])["inputs"]["x"]
    assert len(first) == 4 and first[0] == [0.0, 1.0]
    assert len(bodies) == 3


def test_bad_targets_are_named():
    with pytest.raises(ValueError, match="HOST:PORT"):
        Target("localhost", "m")
    with pytest.raises(ValueError, match="protocol"):
        Target("h:1", "m", "http2")
    with pytest.raises(ValueError, match="version or a label"):
        Target("h:1", "m", version=1, label="canary")
