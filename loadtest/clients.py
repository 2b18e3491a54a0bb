"""Clients for TF Serving: gRPC and REST, blocking and asyncio.

Every call has a deadline (`timeout_s`, seconds) and every failure is a
`ServingError` keeping the gRPC status name (REST codes mapped with TF
Serving's own table), so callers count errors by code without caring about
the transport.

Addresses come from the operator's configuration or command line only.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Mapping

import grpc
import numpy as np
import requests
from google.protobuf import wrappers_pb2

from . import tfprotos

tfprotos.install()  # the runtime has TensorFlow's protos without TensorFlow (see tfprotos)

from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from .errors import ServingError, http_to_code  # noqa: E402
from .tensors import dtype_name, to_ndarray, to_tensor_proto

DEFAULT_TIMEOUT_S = 5.0
# Every channel owns its connections. gRPC's default is a process-wide pool of
# subchannels keyed by address and channel arguments: a new run's channel to an
# address would share the connection, and the reconnect backoff, of an earlier
# run's channel there. When that earlier canary died, the new canary (healthy,
# same address) then failed at once with the dead one's cached "Connection
# refused". A local pool means each client (one run, one check) connects on its
# own, so what it reports is what its server answered. The reconnect backoff is
# kept short, so a server that comes back is reached within a second, not after
# gRPC's default of up to 120 s.
ISOLATED_CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# Golden-set batches and score matrices can exceed gRPC's 4 MiB default.
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    *ISOLATED_CHANNEL_OPTIONS,
]

PROTOCOLS = ("tfserving-grpc", "tfserving-rest")


@dataclass(frozen=True)
class ModelRef:
    """Which model to call: name, and at most one of version or label."""

    name: str
    version: int | None = None
    label: str | None = None
    signature: str = "serving_default"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("model name must not be empty")
        if self.version is not None and self.label is not None:
            raise ValueError("give a model version or a version label, not both")

    def spec(self) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.name, signature_name=self.signature)
        if self.version is not None:
            spec.version.CopyFrom(wrappers_pb2.Int64Value(value=int(self.version)))
        elif self.label is not None:
            spec.version_label = self.label
        return spec

    def rest_path(self) -> str:
        path = f"/v1/models/{self.name}"
        if self.version is not None:
            path += f"/versions/{int(self.version)}"
        elif self.label is not None:
            path += f"/labels/{self.label}"
        return path

    def describe(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.label is not None:
            return f"{self.name}:{self.label}"
        return self.name


@dataclass
class PredictResult:
    """Outputs by name, and the version that answered (None when REST: TF Serving does not say)."""

    outputs: dict[str, np.ndarray]
    model_version: int | None = None


# --------------------------------------------------------------------------- gRPC


def _grpc_error(err: grpc.RpcError, target: str) -> ServingError:
    code = err.code() if hasattr(err, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    details = err.details() if hasattr(err, "details") else str(err)
    return ServingError(name, details or name, target=target)


def _metadata_from_proto(resp: get_model_metadata_pb2.GetModelMetadataResponse) -> dict[str, Any]:
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    if "signature_def" in resp.metadata:
        resp.metadata["signature_def"].Unpack(sigmap)

    def tensors(m) -> dict[str, Any]:
        return {
            k: {
                "dtype": dtype_name(v.dtype),
                "shape": None if v.tensor_shape.unknown_rank else [int(d.size) for d in v.tensor_shape.dim],
            }
            for k, v in sorted(m.items())
        }

    sigs = {
        name: {"inputs": tensors(sd.inputs), "outputs": tensors(sd.outputs), "method_name": sd.method_name}
        for name, sd in sorted(sigmap.signature_def.items())
    }
    version = resp.model_spec.version.value if resp.model_spec.HasField("version") else None
    return {"model_version": version, "signatures": sigs}


# TF's error codes are gRPC's; REST status answers spell them by name ("OK").
_CODE_NAMES = {sc.value[0]: sc.name for sc in grpc.StatusCode}


def _status_from_proto(resp: get_model_status_pb2.GetModelStatusResponse) -> list[dict[str, Any]]:
    state_name = get_model_status_pb2.ModelVersionStatus.State.Name
    return [
        {
            "version": int(s.version),
            "state": state_name(s.state),
            "error_code": _CODE_NAMES.get(int(s.status.error_code), "UNKNOWN"),
            "error_message": s.status.error_message,
        }
        for s in resp.model_version_status
    ]


class _GrpcBase:
    def __init__(self, target: str, model: ModelRef, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.target = target
        self.model = model
        self.timeout_s = float(timeout_s)

    def build_request(self, inputs: Mapping[str, Any] | predict_pb2.PredictRequest) -> predict_pb2.PredictRequest:
        """A PredictRequest for `inputs` (name -> array). Build once, send many times on hot paths."""
        if isinstance(inputs, predict_pb2.PredictRequest):
            return inputs
        req = predict_pb2.PredictRequest(model_spec=self.model.spec())
        for name, value in inputs.items():
            req.inputs[name].CopyFrom(to_tensor_proto(value))
        return req

    @staticmethod
    def _result(resp: predict_pb2.PredictResponse, parse: bool) -> PredictResult:
        version = resp.model_spec.version.value if resp.model_spec.HasField("version") else None
        outputs = {k: to_ndarray(v) for k, v in resp.outputs.items()} if parse else {}
        return PredictResult(outputs=outputs, model_version=version)

    def _timeout(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else float(timeout_s)

    def _metadata_request(self) -> get_model_metadata_pb2.GetModelMetadataRequest:
        return get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self.model.spec(), metadata_field=["signature_def"]
        )

    def _status_request(self) -> get_model_status_pb2.GetModelStatusRequest:
        spec = self.model.spec()
        spec.ClearField("signature_name")
        return get_model_status_pb2.GetModelStatusRequest(model_spec=spec)


class GrpcClient(_GrpcBase):
    """Blocking gRPC client of one TF Serving model (`target` is "host:port")."""

    def __init__(self, target: str, model: ModelRef, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(target, model, timeout_s)
        self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def predict(self, inputs, timeout_s: float | None = None, parse: bool = True) -> PredictResult:
        """Predict; `inputs` is name -> array or a prebuilt PredictRequest. Deadline in seconds."""
        try:
            resp = self._predict.Predict(self.build_request(inputs), timeout=self._timeout(timeout_s))
        except grpc.RpcError as err:
            raise _grpc_error(err, self.target) from None
        return self._result(resp, parse)

    def metadata(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The model's signatures: {"model_version", "signatures": {name: {"inputs", "outputs"}}}."""
        try:
            resp = self._predict.GetModelMetadata(self._metadata_request(), timeout=self._timeout(timeout_s))
        except grpc.RpcError as err:
            raise _grpc_error(err, self.target) from None
        return _metadata_from_proto(resp)

    def status(self, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """Each version's state, e.g. [{"version": 1, "state": "AVAILABLE", ...}]."""
        try:
            resp = self._models.GetModelStatus(self._status_request(), timeout=self._timeout(timeout_s))
        except grpc.RpcError as err:
            raise _grpc_error(err, self.target) from None
        return _status_from_proto(resp)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "GrpcClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncGrpcClient(_GrpcBase):
    """asyncio gRPC client (grpc.aio). Create and use it inside one running event loop."""

    def __init__(self, target: str, model: ModelRef, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(target, model, timeout_s)
        self._channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    async def predict(self, inputs, timeout_s: float | None = None, parse: bool = True) -> PredictResult:
        """Predict; `inputs` is name -> array or a prebuilt PredictRequest. Deadline in seconds."""
        try:
            resp = await self._predict.Predict(self.build_request(inputs), timeout=self._timeout(timeout_s))
        except grpc.RpcError as err:
            raise _grpc_error(err, self.target) from None
        return self._result(resp, parse)

    async def metadata(self, timeout_s: float | None = None) -> dict[str, Any]:
        try:
            resp = await self._predict.GetModelMetadata(self._metadata_request(), timeout=self._timeout(timeout_s))
        except grpc.RpcError as err:
            raise _grpc_error(err, self.target) from None
        return _metadata_from_proto(resp)

    async def status(self, timeout_s: float | None = None) -> list[dict[str, Any]]:
        try:
            resp = await self._models.GetModelStatus(self._status_request(), timeout=self._timeout(timeout_s))
        except grpc.RpcError as err:
            raise _grpc_error(err, self.target) from None
        return _status_from_proto(resp)

    async def close(self) -> None:
        await self._channel.close()


# --------------------------------------------------------------------------- REST


def _base_url(target: str) -> str:
    target = target.rstrip("/")
    if target.startswith(("http://", "https://")):
        return target
    return "http://" + target


def _rest_body(model: ModelRef, inputs: Mapping[str, Any], form: str) -> dict[str, Any]:
    arrays = {k: np.asarray(v) for k, v in inputs.items()}
    body: dict[str, Any] = {"signature_name": model.signature}
    if form == "instances":
        if len(arrays) == 1:
            (only,) = arrays.values()
            body["instances"] = only.tolist()
        else:
            n = {a.shape[0] for a in arrays.values()}
            if len(n) != 1:
                raise ValueError("row form needs every input to have the same first dimension")
            body["instances"] = [
                {k: a[i].tolist() for k, a in arrays.items()} for i in range(n.pop())
            ]
    else:
        if len(arrays) == 1:
            (only,) = arrays.values()
            body["inputs"] = only.tolist()
        else:
            body["inputs"] = {k: a.tolist() for k, a in arrays.items()}
    return body


def _rest_outputs(payload: Any) -> dict[str, np.ndarray]:
    if not isinstance(payload, dict):
        raise ServingError("INTERNAL", "predict answer is not a JSON object")
    if "predictions" in payload:
        rows = payload["predictions"]
        if rows and isinstance(rows[0], dict):
            return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
        # One output: TF Serving drops its name in row form.
        return {"predictions": np.asarray(rows)}
    if "outputs" in payload:
        out = payload["outputs"]
        if isinstance(out, dict):
            return {k: np.asarray(v) for k, v in out.items()}
        return {"outputs": np.asarray(out)}
    raise ServingError("INTERNAL", "predict answer has neither 'predictions' nor 'outputs'")


def _rest_error(status: int, text: str, target: str) -> ServingError:
    try:
        message = json.loads(text).get("error", text)
    except (ValueError, AttributeError):
        message = text
    return ServingError(http_to_code(status), str(message)[:500], target=target, http_status=status)


def _rest_metadata(payload: dict[str, Any]) -> dict[str, Any]:
    spec = payload.get("model_spec", {})
    sigs_raw = payload.get("metadata", {}).get("signature_def", {}).get("signature_def", {})

    def tensors(m: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in sorted(m.items()):
            shape = v.get("tensor_shape", {})
            dims = None if shape.get("unknown_rank") else [int(d.get("size", 0)) for d in shape.get("dim", [])]
            out[k] = {"dtype": v.get("dtype"), "shape": dims}
        return out

    sigs = {
        name: {
            "inputs": tensors(sd.get("inputs", {})),
            "outputs": tensors(sd.get("outputs", {})),
            "method_name": sd.get("method_name", ""),
        }
        for name, sd in sorted(sigs_raw.items())
    }
    version = spec.get("version")
    return {"model_version": int(version) if version not in (None, "") else None, "signatures": sigs}


def _rest_status(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "version": int(s.get("version", 0)),
            "state": s.get("state", "UNKNOWN"),
            "error_code": s.get("status", {}).get("error_code", "OK"),
            "error_message": s.get("status", {}).get("error_message", ""),
        }
        for s in payload.get("model_version_status", [])
    ]


class _RestBase:
    def __init__(self, target: str, model: ModelRef, timeout_s: float = DEFAULT_TIMEOUT_S,
                 form: str = "instances") -> None:
        if form not in ("instances", "inputs"):
            raise ValueError("form must be 'instances' (rows) or 'inputs' (columns)")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.target = _base_url(target)
        self.model = model
        self.timeout_s = float(timeout_s)
        self.form = form
        path = model.rest_path()
        self._predict_url = f"{self.target}{path}:predict"
        self._status_url = f"{self.target}{path}"
        self._metadata_url = f"{self.target}{path}/metadata"

    def _timeout(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else float(timeout_s)

    def build_body(self, inputs: Mapping[str, Any] | bytes) -> bytes:
        """The JSON body for `inputs` (build once, send many times on hot paths)."""
        if isinstance(inputs, bytes):
            return inputs
        return json.dumps(_rest_body(self.model, inputs, self.form)).encode()


class RestClient(_RestBase):
    """Blocking REST client of one TF Serving model (`target` is "host:port" or a URL)."""

    def __init__(self, target: str, model: ModelRef, timeout_s: float = DEFAULT_TIMEOUT_S,
                 form: str = "instances") -> None:
        super().__init__(target, model, timeout_s, form)
        self._http = requests.Session()

    def _call(self, method: str, url: str, timeout_s: float | None, data: bytes | None = None) -> Any:
        try:
            resp = self._http.request(
                method, url, data=data, timeout=self._timeout(timeout_s),
                headers={"Content-Type": "application/json"} if data is not None else None,
            )
        except requests.Timeout:
            raise ServingError("DEADLINE_EXCEEDED", f"no answer within {self._timeout(timeout_s):g} s",
                               target=self.target) from None
        except requests.ConnectionError as err:
            raise ServingError("UNAVAILABLE", f"cannot connect: {err.__class__.__name__}",
                               target=self.target) from None
        if resp.status_code != 200:
            raise _rest_error(resp.status_code, resp.text, self.target)
        try:
            return resp.json()
        except ValueError:
            raise ServingError("INTERNAL", "answer is not JSON", target=self.target,
                               http_status=resp.status_code) from None

    def predict(self, inputs, timeout_s: float | None = None, parse: bool = True) -> PredictResult:
        """Predict over REST (`:predict`), row or column form. Deadline in seconds."""
        payload = self._call("POST", self._predict_url, timeout_s, self.build_body(inputs))
        return PredictResult(outputs=_rest_outputs(payload) if parse else {}, model_version=None)

    def metadata(self, timeout_s: float | None = None) -> dict[str, Any]:
        return _rest_metadata(self._call("GET", self._metadata_url, timeout_s))

    def status(self, timeout_s: float | None = None) -> list[dict[str, Any]]:
        return _rest_status(self._call("GET", self._status_url, timeout_s))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RestClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncRestClient(_RestBase):
    """asyncio REST client (aiohttp). Create and use it inside one running event loop."""

    def __init__(self, target: str, model: ModelRef, timeout_s: float = DEFAULT_TIMEOUT_S,
                 form: str = "instances", max_connections: int = 256) -> None:
        super().__init__(target, model, timeout_s, form)
        self._max_connections = max_connections
        self._session = None

    def _http(self):
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                headers={"Content-Type": "application/json"},
            )
        return self._session

    async def _call(self, method: str, url: str, timeout_s: float | None, data: bytes | None = None) -> Any:
        import aiohttp

        timeout = self._timeout(timeout_s)
        try:
            async with self._http().request(
                method, url, data=data, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                text = await resp.text()
                status = resp.status
        except asyncio.TimeoutError:
            raise ServingError("DEADLINE_EXCEEDED", f"no answer within {timeout:g} s", target=self.target) from None
        except aiohttp.ClientError as err:
            raise ServingError("UNAVAILABLE", f"cannot connect: {err.__class__.__name__}",
                               target=self.target) from None
        if status != 200:
            raise _rest_error(status, text, self.target)
        try:
            return json.loads(text)
        except ValueError:
            raise ServingError("INTERNAL", "answer is not JSON", target=self.target, http_status=status) from None

    async def predict(self, inputs, timeout_s: float | None = None, parse: bool = True) -> PredictResult:
        payload = await self._call("POST", self._predict_url, timeout_s, self.build_body(inputs))
        return PredictResult(outputs=_rest_outputs(payload) if parse else {}, model_version=None)

    async def metadata(self, timeout_s: float | None = None) -> dict[str, Any]:
        return _rest_metadata(await self._call("GET", self._metadata_url, timeout_s))

    async def status(self, timeout_s: float | None = None) -> list[dict[str, Any]]:
        return _rest_status(await self._call("GET", self._status_url, timeout_s))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def make_client(protocol: str, target: str, model: ModelRef, timeout_s: float = DEFAULT_TIMEOUT_S,
                asynchronous: bool = False, form: str = "instances"):
    """A client for `protocol` ("tfserving-grpc" or "tfserving-rest")."""
    if protocol == "tfserving-grpc":
        return (AsyncGrpcClient if asynchronous else GrpcClient)(target, model, timeout_s)
    if protocol == "tfserving-rest":
        return (AsyncRestClient if asynchronous else RestClient)(target, model, timeout_s, form=form)
    raise ValueError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
