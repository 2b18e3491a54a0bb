"""TF Serving's REST API (aiohttp), plus metrics and the fault admin endpoint.

Routes (TF Serving's, https://www.tensorflow.org/tfx/serving/api_rest):

    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict
         {"instances": [...]}  row form -> {"predictions": [...]}
         {"inputs": ...}       column form -> {"outputs": ...}
         optional "signature_name"
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]           model status
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata  signature defs
    GET  /monitoring/prometheus/metrics                         Prometheus text
    GET|PUT|DELETE /v1/_faults                                  fault injection
                                                                (see faults.py)

Errors carry TF Serving's HTTP code for the status (loadtest.errors.
GRPC_TO_HTTP) and the body `{"error": "message"}`.

Row form: with one input the instances may be bare values (one per row);
otherwise each instance is an object {input_name: value}. With one output
each prediction is that output's row; with several it is an object
{output_name: row}. Column form: `inputs` is a value (one input) or an
object of values; `outputs` is a value (one output) or an object.
"""

from __future__ import annotations

import json
import re

import numpy as np
from aiohttp import web
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from modelserver.core import ServingCore
from modelserver.faults import FaultError, Faults
from modelserver.metrics import CONTENT_TYPE
from modelserver.models import Signature, TensorSpec
from modelserver.status import ServingStatus, invalid

_PREDICT_RE = re.compile(
    r"^/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(predict|classify|regress)$")
_STATUS_RE = re.compile(
    r"^/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?(/metadata)?/?$")

CORE_KEY = web.AppKey("core", ServingCore)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _dumps(obj) -> str:
    # allow_nan=False would turn a NaN score into a 500; TF Serving writes NaN.
    return json.dumps(obj, separators=(",", ":"))


def json_array(name: str, value, spec: TensorSpec) -> np.ndarray:
    """A JSON value as an array of the input's dtype; INVALID_ARGUMENT naming the input."""
    try:
        arr = np.array(value)
    except ValueError:
        raise invalid(f"input {name!r}: lists of different lengths (ragged); every row "
                      "must have the same shape") from None
    kind = arr.dtype.kind
    want = spec.np_dtype.kind
    if kind in "OUS" or (kind == "f" and want in "iub") or (kind in "iu" and want == "b"):
        got = {"O": "mixed values", "U": "strings", "S": "strings", "f": "non-integer numbers",
               "i": "integers", "u": "integers"}[kind]
        raise invalid(f"input {name!r}: expects {spec.dtype_name} values but got {got}")
    if want not in "biufc":
        raise invalid(f"input {name!r}: dtype {spec.dtype_name} is not supported over REST "
                      "by this server")
    try:
        return arr.astype(spec.np_dtype)
    except (ValueError, OverflowError) as e:
        raise invalid(f"input {name!r}: cannot convert to {spec.dtype_name}: {e}") from None


def _rows_to_arrays(instances, sig: Signature) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise invalid("'instances' must be a non-empty list")
    dict_rows = [isinstance(r, dict) for r in instances]
    if all(dict_rows):
        keys = set(instances[0])
        for i, row in enumerate(instances):
            if set(row) != keys:
                raise invalid(f"instance {i} has inputs {sorted(row)} but instance 0 has "
                              f"{sorted(keys)}; every instance needs the same named inputs")
        sig.check_names(keys)
        return {k: json_array(k, [row[k] for row in instances], sig.inputs[k]) for k in keys}
    if any(dict_rows):
        raise invalid("'instances' mixes objects and plain values; use one form")
    if len(sig.inputs) != 1:
        raise invalid(f"signature {sig.name!r} has {len(sig.inputs)} inputs "
                      f"({', '.join(sig.inputs)}); send each instance as an object "
                      "{input_name: value}")
    (name, spec), = sig.inputs.items()
    return {name: json_array(name, instances, spec)}


def _columns_to_arrays(inputs, sig: Signature) -> dict[str, np.ndarray]:
    if isinstance(inputs, dict):
        sig.check_names(inputs)
        return {k: json_array(k, v, sig.inputs[k]) for k, v in inputs.items()}
    if len(sig.inputs) != 1:
        raise invalid(f"signature {sig.name!r} has {len(sig.inputs)} inputs "
                      f"({', '.join(sig.inputs)}); send 'inputs' as an object {{input_name: value}}")
    (name, spec), = sig.inputs.items()
    return {name: json_array(name, inputs, spec)}


def _rows_out(outputs: dict[str, np.ndarray]):
    if len(outputs) == 1:
        return next(iter(outputs.values())).tolist()
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise invalid(f"outputs have different 0th-dimension sizes {sizes}; "
                      "use the column form ('inputs') for this signature")
    lists = {k: v.tolist() for k, v in outputs.items()}
    n = next(iter(sizes.values()))
    return [{k: lists[k][i] for k in lists} for i in range(n)]


def _columns_out(outputs: dict[str, np.ndarray]):
    if len(outputs) == 1:
        return next(iter(outputs.values())).tolist()
    return {k: v.tolist() for k, v in outputs.items()}


def _version_label(match) -> tuple[int | None, str | None]:
    version = int(match.group(2)) if match.group(2) else None
    return version, match.group(3) or None


async def _predict(request: web.Request, match) -> web.Response:
    core = request.app[CORE_KEY]
    name = match.group(1)
    version, label = _version_label(match)
    method = match.group(4)
    if method != "predict":
        raise ServingStatus("UNIMPLEMENTED", f"{method} is not implemented by this server; "
                            "use :predict")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise invalid(f"JSON Parse error: {e}") from None
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object with 'instances' or 'inputs'")
    signature_name = body.get("signature_name")
    if signature_name is not None and not isinstance(signature_name, str):
        raise invalid("'signature_name' key must be a string value.")
    has_rows, has_cols = "instances" in body, "inputs" in body
    if has_rows == has_cols:
        raise invalid("Missing 'inputs' or 'instances' key" if not has_rows else
                      "Not formatted correctly expecting only one of 'inputs' or "
                      "'instances' keys exists")

    def convert(sig: Signature):
        if has_rows:
            return _rows_to_arrays(body["instances"], sig)
        return _columns_to_arrays(body["inputs"], sig)

    _, _, outputs = await core.predict(name, version, label, signature_name, convert,
                                       entrypoint="REST")
    payload = {"predictions": _rows_out(outputs)} if has_rows else {"outputs": _columns_out(outputs)}
    return web.Response(text=_dumps(payload), content_type="application/json")


def _status(core: ServingCore, match) -> web.Response:
    version, label = _version_label(match)
    versions = core.registry.status_versions(match.group(1), version, label)
    return web.json_response({"model_version_status": [
        {"version": str(mv.version), "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}} for mv in versions]})


def _metadata(core: ServingCore, match) -> web.Response:
    version, label = _version_label(match)
    mv = core.registry.resolve(match.group(1), version, label)
    sdm = get_model_metadata_pb2.SignatureDefMap()
    for key, sdef in mv.signature_defs.items():
        sdm.signature_def[key].CopyFrom(sdef)
    return web.json_response({
        "model_spec": {"name": mv.name, "signature_name": "", "version": str(mv.version)},
        "metadata": {"signature_def": json_format.MessageToDict(
            sdm, preserving_proto_field_name=True)},
    })


async def models_route(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    path = request.path
    try:
        m = _PREDICT_RE.match(path)
        if m:
            if request.method != "POST":
                return _error(405, f"{request.method} not allowed on {path}; use POST")
            return await _predict(request, m)
        m = _STATUS_RE.match(path)
        if m:
            if request.method != "GET":
                return _error(405, f"{request.method} not allowed on {path}; use GET")
            return _metadata(core, m) if m.group(4) else _status(core, m)
        return _error(404, f"Malformed request: {request.method} {path}")
    except ServingStatus as e:
        return _error(e.http_status, e.message)


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[CORE_KEY].faults.to_dict())


async def put_faults(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, UnicodeDecodeError) as e:
        return _error(400, f"JSON Parse error: {e}")
    try:
        faults = Faults.from_dict(body)
    except FaultError as e:
        return _error(400, f"invalid faults: {e}")
    core.faults.set(faults)
    return web.json_response(core.faults.to_dict())


async def delete_faults(request: web.Request) -> web.Response:
    core = request.app[CORE_KEY]
    core.faults.set(Faults())
    return web.json_response(core.faults.to_dict())


async def metrics_route(request: web.Request) -> web.Response:
    text = request.app[CORE_KEY].metrics.exposition()
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status >= 400:
            return _error(e.status, f"{e.reason}: {request.method} {request.path}")
        raise
    except ServingStatus as e:
        return _error(e.http_status, e.message)
    except Exception as e:  # noqa: BLE001 - one JSON error line, never a traceback page
        return _error(500, f"internal error: {type(e).__name__}: {e}")


def create_app(core: ServingCore) -> web.Application:
    """The REST application for one server core."""
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024 * 1024)
    app[CORE_KEY] = core
    app.router.add_get("/monitoring/prometheus/metrics", metrics_route)
    app.router.add_get("/v1/_faults", get_faults)
    app.router.add_put("/v1/_faults", put_faults)
    app.router.add_post("/v1/_faults", put_faults)
    app.router.add_delete("/v1/_faults", delete_faults)
    app.router.add_route("*", "/v1/models/{tail:.*}", models_route)
    return app
