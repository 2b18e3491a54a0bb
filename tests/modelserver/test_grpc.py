"""The stand-in over gRPC, driven with the official TF Serving stubs."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from loadtest.tensors import to_ndarray, to_tensor_proto

TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def channel(modelserver):
    ch = grpc.insecure_channel(modelserver.grpc_target)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def golden(demo_assets):
    data = np.load(demo_assets.golden)
    return data["inputs"], data["labels"]


def request(x, name="digits", version=None, label=None, signature=None, input_name="x"):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    if signature is not None:
        req.model_spec.signature_name = signature
    if x is not None:
        req.inputs[input_name].CopyFrom(to_tensor_proto(x))
    return req


def rpc_error(call, req) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(req, timeout=TIMEOUT_S)
    return info.value


@pytest.mark.parametrize("label,version", [("stable", 1), ("canary", 2)])
def test_labels_resolve_to_their_versions(stub, golden, label, version):
    resp = stub.Predict(request(golden[0][:4], label=label), timeout=TIMEOUT_S)
    assert resp.model_spec.name == "digits"
    assert resp.model_spec.version.value == version
    assert resp.model_spec.signature_name == "serving_default"


def test_no_version_means_latest(stub, golden):
    resp = stub.Predict(request(golden[0][:1]), timeout=TIMEOUT_S)
    assert resp.model_spec.version.value == 2


@pytest.mark.parametrize("version", [1, 2])
def test_predictions_match_the_savedmodel_called_in_process(stub, golden, demo_assets, version):
    import tensorflow as tf

    x = golden[0][:50]
    fn = tf.saved_model.load(str(demo_assets.model_base_path / str(version))).signatures["serving_default"]
    want = {k: v.numpy() for k, v in fn(x=tf.constant(x)).items()}
    resp = stub.Predict(request(x, version=version), timeout=TIMEOUT_S)
    got = {k: to_ndarray(v) for k, v in resp.outputs.items()}
    assert set(got) == {"probabilities", "classes"}
    assert got["probabilities"].dtype == np.float32 and got["probabilities"].shape == (50, 10)
    assert got["classes"].dtype == np.int64
    np.testing.assert_array_equal(got["classes"], want["classes"])
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-6, atol=1e-7)


def test_output_filter_returns_only_the_named_outputs(stub, golden):
    req = request(golden[0][:3], label="stable")
    req.output_filter.append("classes")
    resp = stub.Predict(req, timeout=TIMEOUT_S)
    assert list(resp.outputs) == ["classes"]


def test_unknown_model_is_not_found(stub, golden):
    err = rpc_error(stub.Predict, request(golden[0][:1], name="nope"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "Servable not found for request: Latest(nope)" in err.details()


def test_unknown_version_is_not_found(stub, golden):
    err = rpc_error(stub.Predict, request(golden[0][:1], version=7))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "Specific(digits, 7)" in err.details()


def test_unknown_label_is_invalid_argument_as_in_tf_serving(stub, golden):
    err = rpc_error(stub.Predict, request(golden[0][:1], label="blue"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unrecognized servable version label: blue" in err.details()


def test_unknown_signature_is_failed_precondition(stub, golden):
    err = rpc_error(stub.Predict, request(golden[0][:1], signature="predict_proba"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert '"predict_proba"' in err.details()


def test_wrong_dtype_names_the_input(stub, golden):
    err = rpc_error(stub.Predict, request(golden[0][:2].astype(np.float64)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'x'" in err.details() and "DT_DOUBLE" in err.details() and "DT_FLOAT" in err.details()


@pytest.mark.parametrize("shape", [(2, 63), (64,), (2, 8, 8)])
def test_wrong_shape_names_the_input(stub, shape):
    err = rpc_error(stub.Predict, request(np.zeros(shape, np.float32)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'x'" in err.details() and "[-1, 64]" in err.details()


def test_missing_and_extra_inputs_are_named(stub, golden):
    err = rpc_error(stub.Predict, request(golden[0][:1], input_name="pixels"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "missing but required: {x}" in err.details()
    assert "sent extra: {pixels}" in err.details()
    err = rpc_error(stub.Predict, request(None))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "{x}" in err.details()


def test_malformed_tensor_is_invalid_argument(stub):
    req = request(np.zeros((2, 64), np.float32))
    req.inputs["x"].tensor_shape.dim[0].size = 3  # content holds 2 rows
    err = rpc_error(stub.Predict, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'x'" in err.details()


def test_metadata_carries_signature_defs_like_tf_serving(stub):
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "digits"
    req.model_spec.version_label = "stable"
    req.metadata_field.append("signature_def")
    resp = stub.GetModelMetadata(req, timeout=TIMEOUT_S)
    assert resp.model_spec.version.value == 1
    sdm = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sdm)
    sig = sdm.signature_def["serving_default"]
    assert [d.size for d in sig.inputs["x"].tensor_shape.dim] == [-1, 64]
    assert set(sig.outputs) == {"probabilities", "classes"}


def test_metadata_needs_a_supported_field(stub):
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "digits"
    err = rpc_error(stub.GetModelMetadata, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    req.metadata_field.append("graph")
    err = rpc_error(stub.GetModelMetadata, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "graph" in err.details()


def test_model_status_lists_served_versions(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "digits"
    resp = stub.GetModelStatus(req, timeout=TIMEOUT_S)
    assert [s.version for s in resp.model_version_status] == [1, 2]
    assert all(s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
               for s in resp.model_version_status)
    req.model_spec.version_label = "canary"
    resp = stub.GetModelStatus(req, timeout=TIMEOUT_S)
    assert [s.version for s in resp.model_version_status] == [2]
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "nope"
    err = rpc_error(stub.GetModelStatus, req)
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_classify_is_unimplemented(stub):
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "digits"
    err = rpc_error(stub.Classify, req)
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
