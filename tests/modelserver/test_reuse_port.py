"""`--reuse_port`: several stand-in processes serve one address, as pods behind one Service.

Two processes start with `--reuse_port` on one gRPC port and one REST port;
each carries a marker of its own in its faults (a fault seed, and an error
code injected on version 1 only), so an answer tells which process gave it.
Fresh connections (a new channel, or a new HTTP connection, every time) are
spread by the kernel: both processes must answer. Without the flag, binding
a taken port still fails, with exit code 2 and one line naming the port.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from loadtest.tensors import to_tensor_proto
from tests.servers import ModelServerError, start_modelserver, start_modelserver_group

TIMEOUT_S = 10.0
FRESH_CONNECTIONS = 24  # both processes missed by chance: 2 * 2**-24
MARKERS = {"FAILED_PRECONDITION": 11, "RESOURCE_EXHAUSTED": 22}  # error code on version 1 -> fault seed


@pytest.fixture(scope="module")
def pair(demo_assets, tmp_path_factory):
    faults = [{"error_ratio": 1.0, "error_code": code, "versions": [1], "seed": seed}
              for code, seed in MARKERS.items()]
    group = start_modelserver_group(tmp_path_factory.mktemp("reuse_port"), 2, share_rest=True,
                                    model_config=demo_assets.model_config, faults=faults)
    yield group
    for ms in group:
        ms.stop()


def _request(x: np.ndarray, version: int) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "digits"
    req.model_spec.version.value = version
    req.inputs["x"].CopyFrom(to_tensor_proto(x))
    return req


def test_the_processes_share_both_ports(pair):
    a, b = pair
    assert a.alive() and b.alive()
    assert (a.grpc_port, a.rest_port) == (b.grpc_port, b.rest_port)


def test_fresh_grpc_connections_reach_both_processes(pair, demo_assets):
    x = np.load(demo_assets.golden)["inputs"][:2]
    seen = []
    for _ in range(FRESH_CONNECTIONS):
        # A local subchannel pool: a new TCP connection, never one shared with an earlier channel.
        with grpc.insecure_channel(pair[0].grpc_target,
                                   options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            with pytest.raises(grpc.RpcError) as info:  # version 1: the process's marker
                stub.Predict(_request(x, 1), timeout=TIMEOUT_S)
            seen.append(info.value.code().name)
            # version 2 on the same connection (same process): a real answer
            resp = stub.Predict(_request(x, 2), timeout=TIMEOUT_S)
            assert resp.model_spec.version.value == 2 and "probabilities" in resp.outputs
    assert set(seen) == set(MARKERS), seen


def test_fresh_rest_connections_reach_both_processes(pair):
    seeds = []
    for _ in range(FRESH_CONNECTIONS):
        # requests.get: a session (and connection) of its own each time
        r = requests.get(f"{pair[0].rest_url}/v1/_faults", timeout=TIMEOUT_S,
                         headers={"Connection": "close"})
        r.raise_for_status()
        seeds.append(r.json()["seed"])
    assert set(seeds) == set(MARKERS.values()), seeds


@pytest.mark.parametrize("holder", ["default", "reuse_port"])
def test_without_the_flag_a_taken_port_still_fails(holder, pair, modelserver, demo_assets, tmp_path):
    """The port is held by a server without the flag (the session's), or by the --reuse_port pair:
    a process without the flag cannot bind it either way."""
    port = modelserver.grpc_port if holder == "default" else pair[0].grpc_port
    with pytest.raises(ModelServerError) as info:
        start_modelserver(tmp_path, model_config=demo_assets.model_config, extra_args=["--port", port])
    text = str(info.value)
    assert "exited with code 2" in text and f"cannot bind gRPC port 127.0.0.1:{port}" in text, text
