"""The TF Serving clients against the stand-in: both transports, both styles,
deadlines, and errors that keep their status."""

import asyncio

import numpy as np
import pytest

from loadtest.clients import (
    AsyncGrpcClient,
    AsyncRestClient,
    GrpcClient,
    ModelRef,
    RestClient,
    make_client,
)
from loadtest.errors import ServingError
from tests.servers import start_modelserver


@pytest.fixture(scope="module")
def golden(demo_assets):
    data = np.load(demo_assets.golden)
    return data["inputs"][:32].astype(np.float32), data["labels"][:32]


@pytest.fixture(scope="module")
def faulty(demo_assets, tmp_path_factory):
    """A stand-in whose canary label is slow (0.5 s) and whose version 1 is healthy."""
    with start_modelserver(tmp_path_factory.mktemp("faulty"), model_config=demo_assets.model_config,
                           faults={"latency_s": 0.5, "labels": ["canary"]}) as ms:
        yield ms


def test_grpc_label_resolves_to_its_version_and_outputs_decode(modelserver, golden):
    x, _ = golden
    with GrpcClient(modelserver.grpc_target, ModelRef("digits", label="stable")) as c:
        stable = c.predict({"x": x})
    with GrpcClient(modelserver.grpc_target, ModelRef("digits", label="canary")) as c:
        canary = c.predict({"x": x})
    assert (stable.model_version, canary.model_version) == (1, 2)
    assert stable.outputs["probabilities"].shape == (32, 10)
    np.testing.assert_allclose(stable.outputs["probabilities"].sum(axis=1), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(stable.outputs["classes"], stable.outputs["probabilities"].argmax(axis=1))


def test_grpc_and_rest_give_the_same_predictions_in_both_rest_forms(modelserver, golden):
    x, _ = golden
    ref = ModelRef("digits", version=1)
    with GrpcClient(modelserver.grpc_target, ref) as g:
        via_grpc = g.predict({"x": x}).outputs
    for form in ("instances", "inputs"):
        with RestClient(modelserver.rest_url, ref, form=form) as r:
            via_rest = r.predict({"x": x}).outputs
        np.testing.assert_allclose(via_rest["probabilities"], via_grpc["probabilities"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(via_rest["classes"], via_grpc["classes"])


def test_metadata_and_status_agree_across_transports(modelserver):
    ref = ModelRef("digits", label="canary")
    with GrpcClient(modelserver.grpc_target, ref) as g, RestClient(modelserver.rest_url, ref) as r:
        gm, rm = g.metadata(), r.metadata()
        assert gm["signatures"]["serving_default"]["inputs"]["x"] == {"dtype": "DT_FLOAT", "shape": [-1, 64]}
        assert gm["signatures"]["serving_default"] == rm["signatures"]["serving_default"]
        assert gm["model_version"] == rm["model_version"] == 2
        assert [s["state"] for s in g.status()] == ["AVAILABLE"]
        assert g.status() == r.status()


def test_async_clients_predict_concurrently(modelserver, golden):
    x, _ = golden

    async def main():
        ref = ModelRef("digits", label="stable")
        g = make_client("tfserving-grpc", modelserver.grpc_target, ref, asynchronous=True)
        r = make_client("tfserving-rest", modelserver.rest_url, ref, asynchronous=True)
        assert isinstance(g, AsyncGrpcClient) and isinstance(r, AsyncRestClient)
        try:
            outs = await asyncio.gather(*[g.predict({"x": x[i:i + 1]}) for i in range(8)],
                                        *[r.predict({"x": x[i:i + 1]}) for i in range(8)])
        finally:
            await g.close()
            await r.close()
        return outs

    outs = asyncio.run(main())
    classes = [int(o.outputs["classes"][0]) for o in outs]
    assert classes[:8] == classes[8:]
    assert all(o.model_version == 1 for o in outs[:8])


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_unknown_model_is_not_found_and_unknown_label_invalid_as_in_tf_serving(modelserver, transport):
    # TF Serving: unknown model -> NOT_FOUND (404); unknown label -> INVALID_ARGUMENT (400).
    for ref, code, http in ((ModelRef("nope"), "NOT_FOUND", 404),
                            (ModelRef("digits", label="nope"), "INVALID_ARGUMENT", 400)):
        client = (GrpcClient(modelserver.grpc_target, ref) if transport == "grpc"
                  else RestClient(modelserver.rest_url, ref))
        with client, pytest.raises(ServingError) as info:
            client.predict({"x": np.zeros((1, 64), np.float32)})
        assert info.value.code == code
        assert "nope" in info.value.message
        if transport == "rest":
            assert info.value.http_status == http
            assert info.value.label == str(http)


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_wrong_dtype_or_shape_is_invalid_argument(modelserver, transport):
    ref = ModelRef("digits", version=1)
    client = GrpcClient(modelserver.grpc_target, ref) if transport == "grpc" else RestClient(modelserver.rest_url, ref)
    with client:
        with pytest.raises(ServingError) as info:
            client.predict({"x": np.zeros((2, 63), np.float32)})
        assert info.value.code == "INVALID_ARGUMENT"
        if transport == "grpc":
            with pytest.raises(ServingError) as info:
                client.predict({"x": np.zeros((2, 64), np.int64)})
            assert info.value.code == "INVALID_ARGUMENT"


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_deadline_cuts_off_a_slow_version_and_the_fast_one_still_answers(faulty, transport):
    slow, fast = ModelRef("digits", label="canary"), ModelRef("digits", label="stable")
    make = (lambda ref, t: GrpcClient(faulty.grpc_target, ref, timeout_s=t)) if transport == "grpc" \
        else (lambda ref, t: RestClient(faulty.rest_url, ref, timeout_s=t))
    x = {"x": np.zeros((1, 64), np.float32)}
    with make(slow, 0.15) as c, pytest.raises(ServingError) as info:
        c.predict(x)
    assert info.value.code == "DEADLINE_EXCEEDED"
    with make(slow, 5.0) as c:
        assert c.predict(x).outputs["classes"].shape == (1,)
    with make(fast, 0.15) as c:
        assert c.predict(x).outputs["classes"].shape == (1,)


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_unreachable_target_is_unavailable_not_a_hang(transport):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    ref = ModelRef("digits")
    client = (GrpcClient(f"127.0.0.1:{port}", ref, timeout_s=1.0) if transport == "grpc"
              else RestClient(f"127.0.0.1:{port}", ref, timeout_s=1.0))
    with client, pytest.raises(ServingError) as info:
        client.predict({"x": np.zeros((1, 64), np.float32)})
    assert info.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def test_model_ref_and_factory_validate():
    with pytest.raises(ValueError, match="not both"):
        ModelRef("m", version=1, label="stable")
    with pytest.raises(ValueError, match="protocol"):
        make_client("http", "127.0.0.1:1", ModelRef("m"))
    assert ModelRef("m", label="canary").rest_path() == "/v1/models/m/labels/canary"
    assert ModelRef("m", version=3).rest_path() == "/v1/models/m/versions/3"
