"""numpy <-> TensorProto without TF ops must agree with TensorFlow's own conversion."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from loadtest.tensors import to_ndarray, to_tensor_proto

DTYPES = [np.float32, np.float64, np.int32, np.int64, np.uint8, np.int8, np.bool_, np.float16]


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_and_tensorflow_reads_the_same_values(dtype):
    rng = np.random.default_rng(1)
    arr = (rng.normal(size=(3, 4)) * 10).astype(dtype)
    proto = to_tensor_proto(arr)
    back = to_ndarray(proto)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    # TensorFlow itself decodes our proto to the same array.
    np.testing.assert_array_equal(tf.make_ndarray(proto), arr)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reads_protos_written_by_tensorflow(dtype):
    arr = np.arange(12).reshape(2, 6).astype(dtype)
    np.testing.assert_array_equal(to_ndarray(tf.make_tensor_proto(arr)), arr)


def test_scalar_and_empty_and_strings():
    assert to_ndarray(to_tensor_proto(np.float32(2.5))).shape == ()
    empty = to_ndarray(to_tensor_proto(np.zeros((0, 64), np.float32)))
    assert empty.shape == (0, 64)
    s = to_ndarray(to_tensor_proto(np.array(["a", "bé"])))
    assert list(s) == [b"a", "bé".encode()]
    assert tf.make_ndarray(to_tensor_proto(np.array(["x", "y"]))).tolist() == [b"x", b"y"]


def test_short_value_list_repeats_the_last_value_like_tensorflow():
    proto = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=4)]),
        float_val=[1.0, 2.0],
    )
    np.testing.assert_array_equal(to_ndarray(proto), tf.make_ndarray(proto))


def test_content_that_does_not_fit_the_shape_is_refused():
    proto = to_tensor_proto(np.zeros(4, np.float32))
    proto.tensor_shape.dim[0].size = 5
    with pytest.raises(ValueError, match="shape"):
        to_ndarray(proto)


def test_unsupported_dtype_is_named():
    with pytest.raises(ValueError, match="datetime64"):
        to_tensor_proto(np.array(["2020-01-01"], dtype="datetime64[D]"))
