"""The demo's data and configuration: what the gate needs, loaded by the service's own loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from demo.models import build_rollout_assets
from demo.stack import DemoSettings, Ports, analyses_yaml, prometheus_yaml
from demo.users import ClickModel
from webhook.config import load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def assets():
    return build_rollout_assets(REPO_ROOT / ".cache")


@pytest.fixture()
def ports():
    return Ports(service=18080, prometheus=19090, users=19100, stable_grpc=18500, stable_rest=18501,
                 canary_grpc=18600, canary_rest=18601)


def test_the_golden_set_is_held_out_and_as_large_as_the_gate_needs(assets, ports, tmp_path):
    gold = np.load(assets.golden)
    ref = np.load(assets.reference)["inputs"]
    assert gold["inputs"].shape == (1550, 64) and len(ref) == 1797 - 1550
    train = {r.tobytes() for r in ref}
    assert not any(r.tobytes() in train for r in gold["inputs"])
    settings = load_settings(analyses_yaml(ports, assets, tmp_path, DemoSettings()), tmp_path)
    analysis = settings.analyses["digits"]
    rows, acc = analysis.plan()
    assert acc.separable and acc.rows_needed <= acc.rows == 1550, acc.message
    assert analysis.gate.active == ["accuracy", "latency", "errors", "errors_increase", "ctr"]
    assert analysis.gate.warnings() == []


def test_the_canaries_are_what_the_demo_says(assets):
    v = assets.versions
    acc, agree = assets.accuracy, assets.agreement
    assert v == {"stable": 1, "good": 2, "bad": 3}
    # The good canary: as accurate as stable and answering like it (well inside the 2-point alert).
    assert abs(acc[2] - acc[1]) < 0.01 and agree[2] > 0.96
    # The bad canary: far beyond the 5-point rollback.
    assert acc[1] - acc[3] > 0.10


def test_the_load_gives_a_latency_quantile_in_every_window_and_ctr_comes_from_the_users(assets, ports, tmp_path):
    from analyses.stats import min_samples_for_quantile

    s = DemoSettings(interval_s=4.0, load_rate=75.0)
    cfg = analyses_yaml(ports, assets, tmp_path, s)["analyses"]["digits"]
    latency = cfg["checks"]["latency"]
    assert latency["quantile"] == 0.95
    assert cfg["load"]["rate"] * s.interval_s >= latency["min_samples"] >= min_samples_for_quantile(0.95)
    assert cfg["canary"]["address"] == "127.0.0.1:18600" and cfg["canary"]["label"] == "canary"
    assert cfg["ctr"]["prometheus"] == "http://127.0.0.1:19090"
    assert 'clicks_total{app="digits",version="{version}"}[{window}]' in cfg["ctr"]["clicks"]
    jobs = {j["job_name"]: j["static_configs"][0]["targets"][0] for j in prometheus_yaml(ports)["scrape_configs"]}
    assert jobs == {"users": "127.0.0.1:19100", "shadowgate": "127.0.0.1:18080",
                    "digits-primary": "127.0.0.1:18501", "digits-canary": "127.0.0.1:18601"}


def test_clicks_follow_correctness():
    m = ClickModel()
    rng = np.random.default_rng(0)
    right = np.ones(200_000, dtype=bool)
    assert m.clicks(right, rng) / right.size == pytest.approx(m.p_right, abs=0.005)
    assert m.clicks(~right, rng) / right.size == pytest.approx(m.p_wrong, abs=0.002)
    # A canary right on 76 % of digits against 93.5 % earns about a sixth fewer clicks per impression.
    assert 1 - m.expected_ctr(0.763) / m.expected_ctr(0.935) == pytest.approx(0.166, abs=0.01)
