"""Prebuilt requests and lean senders for load: the bytes on the wire, built once.

Load needs to send the same few requests many thousands of times and only
learn whether each one succeeded. So the PredictRequest is encoded once, by
hand, straight from numpy (protobuf wire format: a handful of varints and
length-prefixed fields), and sent as raw bytes over a grpc.aio channel with
no per-call serialisation; the response is not parsed. For REST the JSON
body is encoded once too.

This module imports neither TensorFlow nor the TF Serving stubs (importing
those costs seconds and hundreds of MB), so load worker processes start in
a fraction of a second. Requests built here are checked against the real
`PredictRequest` message in the tests.

Shadow probes need the predictions, so they use the full clients in
loadtest.clients instead.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import numpy as np

from loadtest.errors import ServingError, http_to_code

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"

# As loadtest.clients.ISOLATED_CHANNEL_OPTIONS (a test checks they agree).
ISOLATED_CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

# tensorflow/core/framework/types.proto
_DTYPES: dict[np.dtype, int] = {
    np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3,
    np.dtype(np.uint8): 4, np.dtype(np.int16): 5, np.dtype(np.int8): 6,
    np.dtype(np.int64): 9, np.dtype(np.bool_): 10, np.dtype(np.uint16): 17,
    np.dtype(np.float16): 19, np.dtype(np.uint32): 22, np.dtype(np.uint64): 23,
}
_DT_STRING = 7


# ---------------------------------------------------------------- protobuf encoding
def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _int_field(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(int(value))


def encode_tensor(array) -> bytes:
    """A serialized tensorflow.TensorProto for a numpy array (numbers, bools or strings)."""
    arr = np.asarray(array)
    shape = b"".join(_len_field(2, _int_field(1, d) if d else b"") for d in arr.shape)
    if arr.dtype.kind in ("U", "S", "O"):
        out = _int_field(1, _DT_STRING) + _len_field(2, shape)
        for item in arr.reshape(-1):
            data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            out += _len_field(8, data)
        return out
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    code = _DTYPES.get(np.dtype(dtype.type))
    if code is None:
        raise ValueError(f"inputs: unsupported dtype {arr.dtype}")
    content = np.ascontiguousarray(arr, dtype=np.dtype(dtype.type).newbyteorder("<")).tobytes()
    return _int_field(1, code) + _len_field(2, shape) + _len_field(4, content)


def encode_model_spec(name: str, version: int | None = None, label: str | None = None,
                      signature: str | None = "serving_default") -> bytes:
    """A serialized tensorflow.serving.ModelSpec."""
    if not name:
        raise ValueError("model: a model name is required")
    if version is not None and label is not None:
        raise ValueError("model: give a version or a label, not both")
    out = _len_field(1, name.encode())
    if version is not None:
        out += _len_field(2, _int_field(1, int(version)))  # google.protobuf.Int64Value
    if signature:
        out += _len_field(3, signature.encode())
    if label is not None:
        out += _len_field(4, label.encode())
    return out


def encode_predict_request(inputs: dict[str, np.ndarray], name: str, version: int | None = None,
                           label: str | None = None, signature: str | None = "serving_default") -> bytes:
    """A serialized tensorflow.serving.PredictRequest."""
    if not inputs:
        raise ValueError("inputs: at least one named input is required")
    out = _len_field(1, encode_model_spec(name, version, label, signature))
    for key in sorted(inputs):
        entry = _len_field(1, key.encode()) + _len_field(2, encode_tensor(inputs[key]))
        out += _len_field(2, entry)
    return out


def encode_predict_response(outputs: dict[str, np.ndarray], name: str, version: int | None = None) -> bytes:
    """A serialized tensorflow.serving.PredictResponse (for fixed-answer test servers)."""
    out = b""
    for key in sorted(outputs):
        entry = _len_field(1, key.encode()) + _len_field(2, encode_tensor(outputs[key]))
        out += _len_field(1, entry)
    return out + _len_field(2, encode_model_spec(name, version, None, None))


def rest_predict_url(base: str, name: str, version: int | None = None, label: str | None = None) -> str:
    """TF Serving's REST predict URL for a model (base: 'host:port' or 'http://host:port')."""
    base = base if base.startswith(("http://", "https://")) else f"http://{base}"
    base = base.rstrip("/")
    path = f"/v1/models/{name}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += f"/labels/{label}"
    return f"{base}{path}:predict"


def rest_predict_body(inputs: dict[str, np.ndarray]) -> bytes:
    """A TF Serving REST body in the columnar form: {"inputs": {name: nested lists}}."""
    if not inputs:
        raise ValueError("inputs: at least one named input is required")
    cols = {k: np.asarray(v).tolist() for k, v in inputs.items()}
    return json.dumps({"inputs": cols}, separators=(",", ":")).encode()


# ---------------------------------------------------------------- request sets
@dataclass(frozen=True)
class Target:
    """Where load goes: protocol 'grpc' or 'rest', address 'host:port' (or URL for REST), model."""

    address: str
    model: str
    protocol: str = "grpc"
    version: int | None = None
    label: str | None = None
    signature: str = "serving_default"

    def __post_init__(self) -> None:
        if self.protocol not in ("grpc", "rest"):
            raise ValueError(f"protocol: expected grpc or rest, got {self.protocol!r}")
        if not self.address:
            raise ValueError("target: an address HOST:PORT is required")
        if self.protocol == "grpc" and ":" not in self.address:
            raise ValueError(f"target: expected HOST:PORT, got {self.address!r}")
        if self.version is not None and self.label is not None:
            raise ValueError("target: give a version or a label, not both")

    def describe(self) -> str:
        which = f" version {self.version}" if self.version is not None else (
            f" label {self.label}" if self.label else "")
        from webhook.redact import redact_url  # a REST URL's credentials and query are never shown

        return f"{self.protocol} {redact_url(self.address)} model {self.model}{which}"


def build_payloads(target: Target, rows: np.ndarray, input_name: str, *, batch: int = 1,
                   limit: int = 64) -> list[bytes]:
    """Encoded request bodies for `target`, one per batch of `rows` (at most `limit`).

    rows: (n, ...) array; each request carries `batch` consecutive rows
    under `input_name`. The load cycles through the returned bodies.
    """
    rows = np.asarray(rows)
    if rows.ndim == 0 or rows.shape[0] == 0:
        raise ValueError("inputs: need at least one row")
    if batch < 1:
        raise ValueError("batch: must be >= 1")
    out = []
    n = rows.shape[0]
    for start in range(0, max(min(n, limit * batch), batch), batch):
        idx = np.arange(start, start + batch) % n
        inputs = {input_name: rows[idx]}
        if target.protocol == "grpc":
            out.append(encode_predict_request(inputs, target.model, target.version, target.label,
                                              target.signature))
        else:
            out.append(rest_predict_body(inputs))
        if len(out) >= limit:
            break
    return out


# ---------------------------------------------------------------- senders
class GrpcSender:
    """`send` for LoadGenerator: raw prebuilt PredictRequest bytes over grpc.aio.

    Create inside the running event loop (grpc.aio binds a channel to it).
    payloads: serialized PredictRequests, sent in turn.
    timeout_s: the gRPC deadline of every call, seconds.
    connections: separate HTTP/2 connections to spread streams over.
    """

    has_deadline = True  # every call carries the gRPC deadline

    def __init__(self, address: str, payloads: list[bytes], timeout_s: float = 5.0,
                 connections: int = 1) -> None:
        import grpc

        if not payloads:
            raise ValueError("payloads: at least one request is required")
        self.address = address
        self._grpc = grpc
        self._timeout = float(timeout_s)
        # Channels of their own (no subchannel shared with another run's; see
        # loadtest.clients.ISOLATED_CHANNEL_OPTIONS, repeated here so this module
        # does not import the TF Serving stubs).
        opts = [("grpc.max_receive_message_length", 64 * 1024 * 1024), *ISOLATED_CHANNEL_OPTIONS]
        self._channels = []
        calls = []
        for i in range(max(1, int(connections))):
            # A distinct channel arg keeps channels from sharing one subchannel (connection).
            ch = grpc.aio.insecure_channel(address, options=opts + [("shadowgate.conn", i)])
            self._channels.append(ch)
            calls.append(ch.unary_unary(PREDICT_METHOD))
        self._cycle = itertools.cycle([(c, p) for p in payloads for c in calls])
        self._single = (calls[0], payloads[0]) if len(calls) == 1 and len(payloads) == 1 else None

    async def __call__(self) -> bytes:
        call, payload = self._single or next(self._cycle)
        try:
            return await call(payload, timeout=self._timeout)
        except self._grpc.aio.AioRpcError as exc:
            raise ServingError(exc.code().name, exc.details() or "", target=self.address) from None

    async def close(self) -> None:
        """Close the channels."""
        for ch in self._channels:
            await ch.close()


class RestSender:
    """`send` for LoadGenerator: prebuilt JSON bodies POSTed with aiohttp.

    Create inside the running event loop. url: the predict URL
    (`rest_predict_url`); timeout_s: total time allowed per request, seconds;
    connections: size of the connection pool (match the concurrency cap).
    """

    has_deadline = True  # every request carries the aiohttp total timeout

    def __init__(self, url: str, payloads: list[bytes], timeout_s: float = 5.0,
                 connections: int = 256) -> None:
        import aiohttp

        if not payloads:
            raise ValueError("payloads: at least one request is required")
        self.url = url
        self._aiohttp = aiohttp
        self._timeout = aiohttp.ClientTimeout(total=float(timeout_s))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(1, int(connections)), force_close=False),
            headers={"Content-Type": "application/json"},
            skip_auto_headers=("User-Agent",),
        )
        self._cycle = itertools.cycle(payloads)

    async def __call__(self) -> bytes:
        aiohttp = self._aiohttp
        try:
            async with self._session.post(self.url, data=next(self._cycle), timeout=self._timeout) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise ServingError(http_to_code(resp.status), _error_text(body), target=self.url,
                                       http_status=resp.status)
                return body
        except ServingError:
            raise
        except TimeoutError:
            raise ServingError("DEADLINE_EXCEEDED", "no response in time", target=self.url) from None
        except aiohttp.ClientConnectionError as exc:
            raise ServingError("UNAVAILABLE", str(exc) or type(exc).__name__, target=self.url) from None
        except aiohttp.ClientResponseError as exc:
            if "status line" in str(exc).lower():
                raise ServingError("UNAVAILABLE", "the server does not answer HTTP/1.1 (a gRPC port?)",
                                   target=self.url) from None
            raise ServingError("UNKNOWN", str(exc), target=self.url) from None
        except aiohttp.ClientError as exc:
            raise ServingError("UNKNOWN", str(exc) or type(exc).__name__, target=self.url) from None

    async def close(self) -> None:
        """Close the connection pool."""
        await self._session.close()


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and "error" in doc:
            return str(doc["error"])[:300]
    except ValueError:
        pass
    return body[:300].decode("utf-8", "replace")


def make_sender(target: Target, payloads: list[bytes], *, timeout_s: float = 5.0,
                connections: int | None = None, concurrency: int = 256):
    """A `send` callable for `target` (call inside the running loop); close it with `await s.close()`."""
    if target.protocol == "grpc":
        return GrpcSender(target.address, payloads, timeout_s, connections or 1)
    url = rest_predict_url(target.address, target.model, target.version, target.label)
    return RestSender(url, payloads, timeout_s, connections or concurrency)
