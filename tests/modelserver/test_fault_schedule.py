"""The fault rules without a server: validation, targets, stall schedule."""

from __future__ import annotations

import asyncio

import pytest

from modelserver.faults import FaultError, FaultInjector, Faults
from modelserver.status import ServingStatus


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_defaults_inject_nothing():
    f = Faults.from_dict({})
    assert not f.active
    assert f.error_code == "UNAVAILABLE"


def test_error_code_is_case_insensitive_and_checked():
    assert Faults.from_dict({"error_code": "resource_exhausted"}).error_code == "RESOURCE_EXHAUSTED"
    with pytest.raises(FaultError, match="error_code"):
        Faults.from_dict({"error_code": "OK"})


@pytest.mark.parametrize("d,field", [
    ({"error_ratio": -0.1}, "error_ratio"),
    ({"latency_sigma": "wide"}, "latency_sigma"),
    ({"stall_every_s": 0.5, "stall_for_s": 0.5}, "stall_every_s"),
    ({"labels": [""]}, "labels"),
    ({"seed": 1.5}, "seed"),
    ({"latency_s": True}, "latency_s"),
])
def test_invalid_fields_are_named(d, field):
    with pytest.raises(FaultError, match=field):
        Faults.from_dict(d)


def test_not_an_object():
    with pytest.raises(FaultError, match="JSON object"):
        Faults.from_dict([1, 2])


def test_targets_by_model_version_and_label():
    labels = {"stable": 1, "canary": 2}
    inj = FaultInjector(Faults.from_dict({"latency_s": 1, "labels": ["canary"]}))
    assert inj.targets("digits", 2, labels) and not inj.targets("digits", 1, labels)
    inj.set(Faults.from_dict({"latency_s": 1, "versions": [1]}))
    assert inj.targets("digits", 1, labels) and not inj.targets("digits", 2, labels)
    inj.set(Faults.from_dict({"latency_s": 1, "models": ["other"]}))
    assert not inj.targets("digits", 1, labels)
    inj.set(Faults.from_dict({"latency_s": 1}))
    assert inj.targets("digits", 1, labels) and inj.targets("x", 9, {})


def test_one_shot_stall_starts_when_set_and_ends():
    clock = Clock()
    inj = FaultInjector(Faults.from_dict({"stall_for_s": 2.0}), clock=clock)
    assert inj.stall_remaining_s() == pytest.approx(2.0)
    clock.t += 1.5
    assert inj.stall_remaining_s() == pytest.approx(0.5)
    clock.t += 0.5
    assert inj.stall_remaining_s() == 0.0
    clock.t += 100
    assert inj.stall_remaining_s() == 0.0


def test_periodic_stall_repeats_every_period():
    clock = Clock()
    inj = FaultInjector(Faults.from_dict({"stall_for_s": 1.0, "stall_every_s": 10.0}), clock=clock)
    stalled = []
    for step in range(40):
        stalled.append(inj.stall_remaining_s(now=100.0 + step * 0.5) > 0)
    # 0.5 s steps: stalled at 0 and 0.5 s of every 10 s period.
    assert [i for i, s in enumerate(stalled) if s] == [0, 1, 20, 21]


def test_fixed_latency_and_lognormal_median():
    inj = FaultInjector(Faults.from_dict({"latency_s": 0.05}))
    assert inj.draw_latency_s() == 0.05
    inj.set(Faults.from_dict({"latency_s": 0.05, "latency_sigma": 0.8, "seed": 3}))
    draws = sorted(inj.draw_latency_s() for _ in range(4001))
    assert draws[2000] == pytest.approx(0.05, rel=0.1)  # median of a lognormal is exp(mu)
    assert draws[0] < 0.03 and draws[-1] > 0.1


def test_apply_raises_the_injected_status():
    inj = FaultInjector(Faults.from_dict({"error_ratio": 1.0, "error_code": "DATA_LOSS"}))
    with pytest.raises(ServingStatus) as info:
        asyncio.run(inj.apply("digits", 1, {}))
    assert info.value.code == "DATA_LOSS" and info.value.http_status == 500
    inj.set(Faults.from_dict({"error_ratio": 1.0, "versions": [2]}))
    asyncio.run(inj.apply("digits", 1, {}))  # not targeted: no error
