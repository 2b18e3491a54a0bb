"""numpy arrays to and from TensorProto, built directly.

`tf.make_tensor_proto` costs tens of microseconds and drags TF ops onto the
hot path of every request; here a numeric array becomes one `tensor_content`
byte copy, which is also what TF Serving itself sends back.
"""

from __future__ import annotations

import numpy as np

from . import tfprotos

tfprotos.install()  # the runtime has TensorFlow's protos without TensorFlow (see tfprotos)

from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402

_NP_TO_DT: dict[np.dtype, int] = {
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.float64): types_pb2.DT_DOUBLE,
    np.dtype(np.float16): types_pb2.DT_HALF,
    np.dtype(np.int8): types_pb2.DT_INT8,
    np.dtype(np.int16): types_pb2.DT_INT16,
    np.dtype(np.int32): types_pb2.DT_INT32,
    np.dtype(np.int64): types_pb2.DT_INT64,
    np.dtype(np.uint8): types_pb2.DT_UINT8,
    np.dtype(np.uint16): types_pb2.DT_UINT16,
    np.dtype(np.uint32): types_pb2.DT_UINT32,
    np.dtype(np.uint64): types_pb2.DT_UINT64,
    np.dtype(np.bool_): types_pb2.DT_BOOL,
    np.dtype(np.complex64): types_pb2.DT_COMPLEX64,
    np.dtype(np.complex128): types_pb2.DT_COMPLEX128,
}
_DT_TO_NP: dict[int, np.dtype] = {v: k for k, v in _NP_TO_DT.items()}

# The typed repeated field TF uses when `tensor_content` is empty
# (small tensors, or tensors written by hand).
_VAL_FIELD: dict[int, str] = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_COMPLEX64: "scomplex_val",
    types_pb2.DT_COMPLEX128: "dcomplex_val",
}


def dtype_name(dt: int) -> str:
    """`DT_FLOAT` for 1, and so on; the names TF Serving's metadata uses.

    A type newer than the compiled protos (e.g. a float8 from a newer TF
    Serving) is named by its number rather than raising.
    """
    try:
        return types_pb2.DataType.Name(dt)
    except ValueError:
        return f"DT_{int(dt)}"


def numpy_dtype(dt: int) -> np.dtype:
    """The numpy dtype for a TF DataType enum value (ValueError when unsupported)."""
    if dt == types_pb2.DT_STRING:
        return np.dtype(object)
    try:
        return _DT_TO_NP[dt]
    except KeyError:
        raise ValueError(f"unsupported tensor dtype {dtype_name(dt)}") from None


def to_tensor_proto(array) -> tensor_pb2.TensorProto:
    """A TensorProto holding `array` (any array-like; strings become DT_STRING)."""
    arr = np.asarray(array)
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in arr.shape]
    )
    if arr.dtype.kind in ("U", "S", "O"):
        values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in arr.reshape(-1)]
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=values)
    try:
        dt = _NP_TO_DT[arr.dtype]
    except KeyError:
        raise ValueError(f"unsupported numpy dtype {arr.dtype}") from None
    # TF reads tensor_content as little-endian, C order.
    content = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return tensor_pb2.TensorProto(dtype=dt, tensor_shape=shape, tensor_content=content)


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The numpy array a TensorProto holds (from tensor_content or the typed value list)."""
    if proto.tensor_shape.unknown_rank:
        raise ValueError("tensor of unknown rank")
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    size = int(np.prod(shape)) if shape else 1
    if proto.dtype == types_pb2.DT_STRING:
        values = list(proto.string_val)
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return _fill(out, shape, size)
    np_dtype = numpy_dtype(proto.dtype)
    if proto.tensor_content:
        arr = np.frombuffer(proto.tensor_content, dtype=np_dtype.newbyteorder("<"))
        if arr.size != size:
            raise ValueError(f"tensor_content holds {arr.size} values for shape {list(shape)}")
        return arr.astype(np_dtype, copy=False).reshape(shape)
    field = _VAL_FIELD[proto.dtype]
    values = getattr(proto, field)
    if proto.dtype == types_pb2.DT_HALF:
        arr = np.asarray(values, dtype=np.uint16).view(np.float16)
    elif proto.dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
        flat = np.asarray(values, dtype=np.float64)
        arr = (flat[0::2] + 1j * flat[1::2]).astype(np_dtype)
    else:
        arr = np.asarray(values, dtype=np_dtype)
    return _fill(arr, shape, size)


def _fill(arr: np.ndarray, shape: tuple[int, ...], size: int) -> np.ndarray:
    # TF allows a shorter value list: the last value repeats to fill the shape.
    if arr.size == size:
        return arr.reshape(shape)
    if arr.size == 0:
        if size == 0:
            return arr.reshape(shape)
        raise ValueError(f"tensor has no values for shape {list(shape)}")
    if arr.size > size:
        raise ValueError(f"tensor holds {arr.size} values for shape {list(shape)}")
    pad = np.full(size - arr.size, arr[-1], dtype=arr.dtype)
    return np.concatenate([arr, pad]).reshape(shape)
