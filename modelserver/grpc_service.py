"""TF Serving's gRPC API on the official stubs (grpc.aio).

`tensorflow.serving.PredictionService` (Predict, GetModelMetadata; Classify,
Regress and MultiInference answer UNIMPLEMENTED: the stand-in serves
SavedModels through their Predict signatures only) and
`tensorflow.serving.ModelService` (GetModelStatus; HandleReloadConfigRequest
is UNIMPLEMENTED) on one port.
"""

from __future__ import annotations

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from loadtest.tensors import to_ndarray, to_tensor_proto
from modelserver.core import ServingCore
from modelserver.models import Signature
from modelserver.status import ServingStatus, invalid


def _version_of(spec) -> tuple[int | None, str | None]:
    which = spec.WhichOneof("version_choice")
    if which == "version":
        return int(spec.version.value), None
    if which == "version_label":
        return None, spec.version_label or None
    return None, None


async def _abort(context: grpc.aio.ServicerContext, e: ServingStatus):
    await context.abort(e.grpc_code, e.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore) -> None:
        self.core = core

    async def Predict(self, request, context):
        spec = request.model_spec
        version, label = _version_of(spec)

        def convert(sig: Signature):
            sig.check_names(request.inputs.keys())
            arrays = {}
            for key, proto in request.inputs.items():
                sig.check_dtype(key, proto.dtype)
                try:
                    arrays[key] = to_ndarray(proto)
                except (ValueError, KeyError) as e:
                    raise invalid(f"input {key!r}: malformed TensorProto: {e}") from None
            return arrays

        try:
            mv, sig, outputs = await self.core.predict(
                spec.name, version, label, spec.signature_name, convert, entrypoint="GRPC")
            wanted = list(request.output_filter) or list(outputs)
            unknown = [k for k in wanted if k not in outputs]
            if unknown:
                raise invalid(f"output tensor alias not found in signature: {unknown[0]} "
                              f"Outputs expected to be in the set {{{', '.join(sorted(outputs))}}}.")
            response = predict_pb2.PredictResponse()
            response.model_spec.name = mv.name
            response.model_spec.version.value = mv.version
            response.model_spec.signature_name = sig.name
            for key in wanted:
                response.outputs[key].CopyFrom(to_tensor_proto(outputs[key]))
            return response
        except ServingStatus as e:
            await _abort(context, e)

    async def GetModelMetadata(self, request, context):
        try:
            version, label = _version_of(request.model_spec)
            mv = self.core.registry.resolve(request.model_spec.name, version, label)
            fields = list(request.metadata_field)
            if not fields:
                raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
            for f in fields:
                if f != "signature_def":
                    raise invalid(f"Metadata field {f} is not supported")
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = mv.name
            response.model_spec.version.value = mv.version
            sdm = get_model_metadata_pb2.SignatureDefMap()
            for key, sdef in mv.signature_defs.items():
                sdm.signature_def[key].CopyFrom(sdef)
            response.metadata["signature_def"].Pack(sdm)
            return response
        except ServingStatus as e:
            await _abort(context, e)

    async def Classify(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "Classify is not implemented by this server; use Predict")

    async def Regress(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "Regress is not implemented by this server; use Predict")

    async def MultiInference(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "MultiInference is not implemented by this server; use Predict")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore) -> None:
        self.core = core

    async def GetModelStatus(self, request, context):
        try:
            version, label = _version_of(request.model_spec)
            versions = self.core.registry.status_versions(request.model_spec.name, version, label)
            response = get_model_status_pb2.GetModelStatusResponse()
            for mv in versions:
                s = response.model_version_status.add()
                s.version = mv.version
                s.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            return response
        except ServingStatus as e:
            await _abort(context, e)

    async def HandleReloadConfigRequest(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "config reload is not supported: restart the server with the new config")


def add_services(server: grpc.aio.Server, core: ServingCore) -> None:
    """Register both services on an aio server."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
