"""The same TF Serving messages built in any environment, as hex: `python wire_sample.py`.

Run by tests/deploy/test_runtime.py twice: in the runtime venv (TensorFlow's
protos from tensorflow-protobuf, no TensorFlow) and in the development venv
(TensorFlow itself). Equal bytes mean the runtime speaks TF Serving's wire
format exactly as TensorFlow does. Prints JSON {name: hex}.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def samples() -> dict[str, str]:
    from google.protobuf import any_pb2

    from loadtest import clients  # noqa: F401  (installs the proto path first)
    from loadtest.tensors import to_tensor_proto
    from loadtest.wire import encode_predict_request
    from tensorflow.core.framework import tensor_shape_pb2, types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import (
        get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2, status_pb2,
    )

    out: dict[str, str] = {}
    rng = np.random.default_rng(7)
    arrays = {
        "float32": rng.normal(size=(2, 64)).astype(np.float32),
        "float64": rng.normal(size=(3,)),
        "float16": rng.normal(size=(2, 2)).astype(np.float16),
        "int64": np.arange(-3, 3, dtype=np.int64).reshape(2, 3),
        "int32": np.array([[1, -2, 3]], np.int32),
        "uint8": np.arange(8, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "string": np.array(["a", "bé", ""]),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 4), np.float32),
    }
    for name, arr in arrays.items():
        out[f"tensor.{name}"] = to_tensor_proto(arr).SerializeToString(deterministic=True).hex()

    req = predict_pb2.PredictRequest()
    req.model_spec.name = "digits"
    req.model_spec.version_label = "canary"
    req.model_spec.signature_name = "serving_default"
    req.inputs["x"].CopyFrom(to_tensor_proto(arrays["float32"]))
    req.output_filter.append("probabilities")
    out["predict_request"] = req.SerializeToString(deterministic=True).hex()
    # The load generator's hand-encoded request (no protobuf at all).
    out["predict_request.wire"] = encode_predict_request(
        {"x": arrays["float32"]}, "digits", version=2, signature="serving_default").hex()
    ver = predict_pb2.PredictRequest()
    ver.model_spec.name = "digits"
    ver.model_spec.version.value = 2
    ver.model_spec.signature_name = "serving_default"
    ver.inputs["x"].CopyFrom(to_tensor_proto(arrays["float32"]))
    out["predict_request.version"] = ver.SerializeToString(deterministic=True).hex()

    resp = predict_pb2.PredictResponse()
    resp.model_spec.name = "digits"
    resp.model_spec.version.value = 2
    resp.outputs["probabilities"].CopyFrom(to_tensor_proto(rng.random((2, 10)).astype(np.float32)))
    resp.outputs["classes"].CopyFrom(to_tensor_proto(np.array([3, 7], np.int64)))
    out["predict_response"] = resp.SerializeToString(deterministic=True).hex()

    sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    sig.inputs["x"].name = "serving_default_x:0"
    sig.inputs["x"].dtype = types_pb2.DT_FLOAT
    sig.inputs["x"].tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=-1), tensor_shape_pb2.TensorShapeProto.Dim(size=64)]))
    sig.outputs["probabilities"].name = "StatefulPartitionedCall:0"
    sig.outputs["probabilities"].dtype = types_pb2.DT_FLOAT
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    sig_map.signature_def["serving_default"].CopyFrom(sig)
    meta = get_model_metadata_pb2.GetModelMetadataResponse()
    meta.model_spec.name = "digits"
    meta.model_spec.version.value = 2
    packed = any_pb2.Any()
    packed.Pack(sig_map)
    meta.metadata["signature_def"].CopyFrom(packed)
    out["metadata_response"] = meta.SerializeToString(deterministic=True).hex()

    status = get_model_status_pb2.GetModelStatusResponse()
    v = status.model_version_status.add()
    v.version = 2
    v.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    v.status.error_code = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type.values_by_name[
        "NOT_FOUND"].number
    v.status.error_message = "no such version"
    out["status_response"] = status.SerializeToString(deterministic=True).hex()
    spec = model_pb2.ModelSpec(name="digits", version_label="stable")
    out["model_spec"] = spec.SerializeToString(deterministic=True).hex()

    codes = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type
    out["enum.tensorflow.error.Code"] = json.dumps(
        {v.name: v.number for v in codes.values if not v.name.startswith("DO_NOT_USE")}, sort_keys=True)
    out["enum.tensorflow.DataType"] = json.dumps(
        {v.name: v.number for v in types_pb2.DataType.DESCRIPTOR.values if v.number <= 23}, sort_keys=True)
    return out


if __name__ == "__main__":
    json.dump(samples(), sys.stdout, sort_keys=True)
