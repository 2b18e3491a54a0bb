"""TensorFlow's protobuf modules without TensorFlow, for tensorflow-serving-api's stubs.

`tensorflow_serving.apis.*_pb2` import `tensorflow.core.framework.tensor_pb2`
and a few other generated modules that normally come with the whole
TensorFlow wheel (about 600 MB installed, and 700 MB of RSS once imported).
The runtime image installs instead:

- `tensorflow-serving-api` (the official messages and stubs), with --no-deps;
- `tensorflow-protobuf` (TensorFlow's .proto files compiled for Python, no
  TensorFlow code), with --no-deps, installed before it (see
  requirements-runtime-nodeps.txt).

`tensorflow-protobuf` was compiled from TensorFlow 2.11, whose error codes
live in `tensorflow/tsl/protobuf/error_codes.proto`, a file it does not ship;
and the 2.21 stubs reach that enum through an attribute named after its
newer home (xla/tsl). `install()` fills both gaps, only when TensorFlow
itself is not installed: it registers the enum `tensorflow.error.Code` from
the descriptor of `google.rpc.Code` (googleapis-common-protos), which is the
same enum number for number (TensorFlow's codes are the canonical gRPC/absl
status codes; TensorFlow adds one reserved sentinel, 20, that no status
carries), under TensorFlow's file name and package. Nothing is generated
into the source tree. tests/deploy/test_runtime.py proves, in a runtime
environment, that the bytes on the wire equal TensorFlow's.

With TensorFlow installed (the development venv, the stand-in model server,
the demo) `install()` does nothing.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import sys
import types

_TSL_FILE = "tensorflow/tsl/protobuf/error_codes.proto"
_TSL_MODULE = "tensorflow.tsl.protobuf.error_codes_pb2"
# What tensorflow-serving-api 2.21's status_pb2 reads off tensorflow.core.protobuf.error_codes_pb2.
_NEW_ALIAS = "xla_dot_tsl_dot_protobuf_dot_error__codes__pb2"
_OLD_ALIAS = "tensorflow_dot_tsl_dot_protobuf_dot_error__codes__pb2"

_installed: bool | None = None


def tensorflow_installed() -> bool:
    """True when a real TensorFlow distribution is installed (checked without importing it)."""
    for dist in ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tf-nightly"):
        try:
            importlib.metadata.distribution(dist)
            return True
        except importlib.metadata.PackageNotFoundError:
            continue
    return False


def protos_only() -> bool:
    """True when `tensorflow` is the proto-only package (tensorflow-protobuf), not TensorFlow."""
    if tensorflow_installed():
        return False
    try:
        importlib.metadata.distribution("tensorflow-protobuf")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def install() -> bool:
    """Make tensorflow-serving-api importable on tensorflow-protobuf. True when it patched anything.

    Idempotent and cheap; a no-op when TensorFlow is installed or the
    proto-only package is absent (then the import fails as it would anyway,
    naming the missing module).
    """
    global _installed
    if _installed is not None:
        return _installed
    if not protos_only():
        _installed = False
        return False
    _register_tsl_error_codes()
    import tensorflow.core.protobuf.error_codes_pb2 as core_codes

    if not hasattr(core_codes, _NEW_ALIAS):
        setattr(core_codes, _NEW_ALIAS, getattr(core_codes, _OLD_ALIAS))
    _installed = True
    return True


def _register_tsl_error_codes() -> None:
    if _TSL_MODULE in sys.modules:
        return
    from google.protobuf import descriptor_pb2, descriptor_pool
    from google.protobuf.internal import builder
    from google.rpc import code_pb2

    pool = descriptor_pool.Default()
    try:
        file_desc = pool.FindFileByName(_TSL_FILE)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto()
        code_pb2.DESCRIPTOR.CopyToProto(proto)
        proto.name = _TSL_FILE
        proto.package = "tensorflow.error"
        proto.ClearField("options")
        pool.Add(proto)
        file_desc = pool.FindFileByName(_TSL_FILE)

    import tensorflow  # the proto-only package: an empty __init__

    parent = tensorflow
    for name in ("tensorflow.tsl", "tensorflow.tsl.protobuf"):
        pkg = sys.modules.get(name)
        if pkg is None:
            pkg = types.ModuleType(name)
            pkg.__path__ = []
            pkg.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
            sys.modules[name] = pkg
            setattr(parent, name.rpartition(".")[2], pkg)
        parent = pkg
    module = types.ModuleType(_TSL_MODULE)
    module.__spec__ = importlib.machinery.ModuleSpec(_TSL_MODULE, None)
    namespace = module.__dict__
    namespace["DESCRIPTOR"] = file_desc
    builder.BuildMessageAndEnumDescriptors(file_desc, namespace)
    builder.BuildTopDescriptorsAndMessages(file_desc, _TSL_MODULE, namespace)
    sys.modules[_TSL_MODULE] = module
    parent.error_codes_pb2 = module
