"""Fault injection seen from clients: latency, deadlines, stalls, injected errors.

One server for the module (the shared session server stays fault-free);
every test sets the faults it needs and the fixture clears them after.
Timings are only lower bounds the faults guarantee (an injected delay of
D seconds cannot answer sooner than D) and deadlines that must cut a wait.
"""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from loadtest.tensors import to_tensor_proto
from tests.servers import start_modelserver

TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def server(demo_assets, tmp_path_factory):
    ms = start_modelserver(tmp_path_factory.mktemp("faults"), model_config=demo_assets.model_config)
    yield ms
    ms.stop()


@pytest.fixture
def ms(server):
    server.clear_faults()
    yield server
    server.clear_faults()


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.grpc_target)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


X = np.full((1, 64), 0.25, np.float32)


def req(label: str = "canary") -> predict_pb2.PredictRequest:
    r = predict_pb2.PredictRequest()
    r.model_spec.name = "digits"
    r.model_spec.version_label = label
    r.inputs["x"].CopyFrom(to_tensor_proto(X))
    return r


def rest_predict(ms, label="canary", timeout=TIMEOUT_S):
    return requests.post(f"{ms.rest_url}/v1/models/digits/labels/{label}:predict",
                         json={"instances": X.tolist()}, timeout=timeout)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def test_latency_is_seen_on_the_targeted_label_only(ms, stub):
    ms.set_faults({"latency_s": 0.4, "labels": ["canary"]})
    resp, took = timed(lambda: stub.Predict(req("canary"), timeout=TIMEOUT_S))
    assert resp.model_spec.version.value == 2
    assert took >= 0.4
    _, took_rest = timed(lambda: rest_predict(ms, "canary"))
    assert took_rest >= 0.4
    # The label is resolved to its version: asking for version 2 directly is hit too.
    r = req("canary")
    r.model_spec.ClearField("version_label")
    r.model_spec.version.value = 2
    _, took_v2 = timed(lambda: stub.Predict(r, timeout=TIMEOUT_S))
    assert took_v2 >= 0.4


def test_a_deadline_cuts_injected_latency(ms, stub):
    ms.set_faults({"latency_s": 3.0})
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(req(), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(requests.Timeout):
        rest_predict(ms, timeout=0.3)


def test_delayed_requests_do_not_block_others(ms, stub):
    ms.set_faults({"latency_s": 2.0, "labels": ["canary"]})
    slow = stub.Predict.future(req("canary"), timeout=TIMEOUT_S)
    # While the canary request sleeps, stable requests are answered.
    for _ in range(5):
        assert stub.Predict(req("stable"), timeout=1.5).model_spec.version.value == 1
    assert not slow.done()
    assert slow.result().model_spec.version.value == 2


def test_lognormal_latency_varies_around_the_median(ms, stub):
    ms.set_faults({"latency_s": 0.02, "latency_sigma": 0.5, "seed": 7})
    took = []
    for _ in range(12):
        _, t = timed(lambda: stub.Predict(req(), timeout=TIMEOUT_S))
        took.append(t)
    # exp(N(0, 0.5)) over 12 draws cannot be all equal; every draw is > 0.
    assert min(took) > 0 and max(took) > min(took)


@pytest.mark.parametrize("code,http_status", [("UNAVAILABLE", 503), ("RESOURCE_EXHAUSTED", 429),
                                              ("INTERNAL", 500)])
def test_injected_errors_carry_the_chosen_status(ms, stub, code, http_status):
    ms.set_faults({"error_ratio": 1.0, "error_code": code, "labels": ["canary"]})
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(req("canary"), timeout=TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode[code]
    assert "injected" in info.value.details()
    r = rest_predict(ms, "canary")
    assert r.status_code == http_status
    assert "injected" in r.json()["error"]
    # The stable label is not targeted.
    assert stub.Predict(req("stable"), timeout=TIMEOUT_S).model_spec.version.value == 1


def test_error_ratio_fails_about_that_share(ms, stub):
    ms.set_faults({"error_ratio": 0.5, "seed": 1})
    failed = 0
    for _ in range(200):
        try:
            stub.Predict(req(), timeout=TIMEOUT_S)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE
            failed += 1
    # Binomial(200, 0.5): 60..140 holds with probability 1 - 1e-8.
    assert 60 <= failed <= 140


def test_a_stall_holds_requests_until_it_ends_and_deadlines_cut_it(ms, stub):
    state = ms.set_faults({"stall_for_s": 1.5})
    assert state["stalled"] is True
    set_at = time.perf_counter()
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(req("stable"), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    resp = stub.Predict(req("stable"), timeout=TIMEOUT_S)
    assert time.perf_counter() - set_at >= 1.5
    assert resp.model_spec.version.value == 1
    # One-shot: after the stall the server answers at once again.
    assert ms.get_faults()["stalled"] is False
    stub.Predict(req("stable"), timeout=2.0)


def test_requests_arriving_during_a_stall_all_wait_for_its_end(ms, stub):
    ms.set_faults({"stall_for_s": 1.0})
    set_at = time.perf_counter()
    finished = []

    def call():
        stub.Predict(req(), timeout=TIMEOUT_S)
        finished.append(time.perf_counter() - set_at)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT_S)
    assert len(finished) == 4 and min(finished) >= 1.0


def test_periodic_stalls_recur(ms, stub):
    ms.set_faults({"stall_for_s": 0.5, "stall_every_s": 1.5})
    set_at = time.perf_counter()
    stub.Predict(req(), timeout=TIMEOUT_S)          # in the first stall
    assert time.perf_counter() - set_at >= 0.5
    while time.perf_counter() - set_at < 1.55:      # into the second stall
        time.sleep(0.05)
    stub.Predict(req(), timeout=TIMEOUT_S)
    assert time.perf_counter() - set_at >= 2.0


def test_faults_changed_while_running_take_effect(ms, stub):
    ms.set_faults({"error_ratio": 1.0, "error_code": "ABORTED"})
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(req(), timeout=TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.ABORTED
    ms.set_faults({})
    assert stub.Predict(req(), timeout=TIMEOUT_S).model_spec.version.value == 2
    r = requests.delete(f"{ms.rest_url}/v1/_faults", timeout=TIMEOUT_S)
    assert r.status_code == 200 and r.json()["error_ratio"] == 0


@pytest.mark.parametrize("body,field", [
    ({"error_ratio": 1.5}, "error_ratio"),
    ({"error_code": "OOPS"}, "error_code"),
    ({"latency_s": -1}, "latency_s"),
    ({"stall_for_s": 2, "stall_every_s": 1}, "stall_every_s"),
    ({"versions": ["two"]}, "versions"),
    ({"latencyy": 1}, "latencyy"),
])
def test_invalid_faults_are_400_naming_the_field(ms, body, field):
    r = requests.put(f"{ms.rest_url}/v1/_faults", json=body, timeout=TIMEOUT_S)
    assert r.status_code == 400
    assert field in r.json()["error"]
    assert ms.get_faults()["error_ratio"] == 0  # unchanged


def test_metrics_count_injected_errors_by_status(ms, stub):
    def count(text, status):
        key = f':tensorflow:serving:request_count{{model_name="digits",status="{status}"}} '
        return sum(int(line.split(" ")[-1]) for line in text.splitlines() if line.startswith(key))

    before = count(ms.metrics_text(), "UNAVAILABLE")
    ms.set_faults({"error_ratio": 1.0})
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            stub.Predict(req(), timeout=TIMEOUT_S)
    assert rest_predict(ms).status_code == 503
    assert count(ms.metrics_text(), "UNAVAILABLE") - before == 4


def test_faults_given_at_start(tmp_path, demo_assets):
    with start_modelserver(tmp_path, model_config=demo_assets.model_config,
                           faults={"error_ratio": 1.0, "error_code": "UNAVAILABLE",
                                   "versions": [2]}) as ms:
        assert ms.get_faults()["versions"] == [2]
        assert rest_predict(ms, "canary").status_code == 503
        assert rest_predict(ms, "stable").status_code == 200
