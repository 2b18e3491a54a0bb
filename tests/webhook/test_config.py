"""A bad configuration stops start-up with the field named."""

from __future__ import annotations

import pytest

from webhook.config import ConfigError, load_config, load_settings
from webhook.ctr import render
from tests.webhook.conftest import base_config


def _error(cfg, tmp_path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, tmp_path)
    return info.value


def test_valid_config_loads_data_and_defaults(tmp_path):
    s = load_settings(base_config(tmp_path), tmp_path)
    a = s.analyses["digits"]
    assert a.golden_inputs.shape == (64, 8) and a.golden_labels.dtype.kind == "i"
    assert a.config.load.max_rate == 200 and s.server.hook_deadline_s == 8
    assert s.server.idle_timeout() >= 120
    # No CTR source: the CTR check is off rather than forever "no data".
    assert a.judge_config.ctr.enabled is False
    # The one-off golden-set pass judges correctness only.
    assert a.gate.active == ["accuracy", "latency", "errors", "errors_increase"]  # no CTR source: no CTR check


@pytest.mark.parametrize("mutate,field", [
    (lambda c: c.pop("analyses"), "analyses"),
    (lambda c: c["analyses"]["digits"]["canary"].update(protocol="http"), "analyses.digits.canary.protocol"),
    (lambda c: c["analyses"]["digits"]["stable"].pop("address"), "analyses.digits.stable.address"),
    (lambda c: c["analyses"]["digits"]["stable"].update(version=1), "analyses.digits.stable"),
    (lambda c: c["analyses"]["digits"].update(golden="missing.npz"), "analyses.digits.golden.path"),
    (lambda c: c["analyses"]["digits"].update(golden={"path": "golden.npz", "labels_key": "y"}),
     "analyses.digits.golden.labels_key"),
    (lambda c: c["analyses"]["digits"].update(load={"rate": 500, "max_rate": 100}), "analyses.digits.load"),
    (lambda c: c["analyses"]["digits"].update(load={"schedule": [{"rate": 500, "duration_s": 1}]}),
     "analyses.digits.load.schedule.0.rate"),
    (lambda c: c["analyses"]["digits"].update(load={"connections": 0}), "analyses.digits.load.connections"),
    (lambda c: c["analyses"]["digits"].update(load={"connections": 17}), "analyses.digits.load.connections"),
    (lambda c: c["analyses"]["digits"].update(load={"connections": "four"}), "analyses.digits.load.connections"),
    (lambda c: c["analyses"]["digits"]["checks"].update(latency={"alert": 2.0, "rollback": 1.5}),
     "analyses.digits.checks.latency.rollback"),
    (lambda c: c["analyses"]["digits"]["checks"].update(acuracy={}), "analyses.digits.checks.acuracy"),
    (lambda c: c["analyses"]["digits"].update(ctr={"prometheus": "localhost:9090", "clicks": "x{version}",
                                                    "impressions": "y{version}"}),
     "analyses.digits.ctr.prometheus"),
    (lambda c: c["analyses"]["digits"].update(ctr={"prometheus": "http://p:9090", "clicks": "sum(clicks)",
                                                    "impressions": "y{version}"}),
     "analyses.digits.ctr.clicks"),
    (lambda c: c["server"].update(hook_deadline_s=12), "server.hook_deadline_s"),
    (lambda c: c["analyses"]["digits"]["checks"].update(ctr={"enabled": True}), "analyses.digits.ctr"),
    (lambda c: c["server"].update(namespaces=["Bad_NS"]), "server.namespaces.0"),
    (lambda c: c["server"].update(auth={"token_env": "SHADOWGATE_TEST_UNSET_TOKEN"}), "server.auth.token_env"),
    (lambda c: c["analyses"].update({"bad name!": c["analyses"]["digits"]}), "analyses"),
    (lambda c: c["server"].update(bogus=1), "server.bogus"),
])
def test_errors_name_the_field(tmp_path, mutate, field):
    cfg = base_config(tmp_path)
    mutate(cfg)
    err = _error(cfg, tmp_path)
    assert err.field == field, str(err)


@pytest.mark.parametrize("protocol,load,want", [
    # per version: the prober's connection (gRPC 1, REST 16) + the load sender's
    ("tfserving-grpc", {}, 2 * (1 + 1)),                                     # load.connections defaults to 1
    ("tfserving-grpc", {"connections": 8}, 2 * (1 + 8)),
    ("tfserving-grpc", {"connections": 8, "targets": "canary"}, 1 + (1 + 8)),  # stable is not loaded
    ("tfserving-grpc", {"connections": 8, "rate": 0}, 2 * 1),                  # no load: probes only
    ("tfserving-rest", {"connections": 8, "concurrency": 32}, 2 * (16 + 32)),  # REST: its pool, not connections
])
def test_planned_connections_count_the_load_connections(tmp_path, protocol, load, want):
    from webhook.admission import planned_connections

    cfg = base_config(tmp_path)
    a = cfg["analyses"]["digits"]
    for version in ("stable", "canary"):
        a[version].update(protocol=protocol, address="http://127.0.0.1:1" if "rest" in protocol else "127.0.0.1:1")
    a["load"] = load
    config = load_settings(cfg, tmp_path).analyses["digits"].config
    assert config.load.connections == load.get("connections", 1)
    assert planned_connections(config) == want


def test_the_load_sender_opens_load_connections_to_each_grpc_version(tmp_path, monkeypatch):
    import asyncio

    import loadtest.wire
    from webhook.measure import LiveMeasurement

    made = []
    real = loadtest.wire.make_sender

    def spy(target, payloads, **kw):
        made.append((target.protocol, kw.get("connections")))
        return real(target, payloads, **kw)

    monkeypatch.setattr(loadtest.wire, "make_sender", spy)
    cfg = base_config(tmp_path)
    cfg["analyses"]["digits"]["load"] = {"rate": 1, "connections": 3, "timeout_s": 0.5}
    m = LiveMeasurement(load_settings(cfg, tmp_path).analyses["digits"])  # nothing listens there: no answer

    async def go():  # the load alone (start() adds the probes, whose clients import TensorFlow)
        stop = asyncio.Event()
        m._start_load(stop)
        stop.set()
        await m.stop()

    asyncio.run(go())
    assert made == [("grpc", 3), ("grpc", 3)]  # stable and canary


def test_yaml_file_errors(tmp_path):
    p = tmp_path / "analyses.yaml"
    p.write_text("analyses: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_relative_paths_follow_the_config_file(tmp_path):
    import yaml

    cfg = base_config(tmp_path)
    cfg["server"]["store"] = "state/runs.db"
    (tmp_path / "state").mkdir()
    (tmp_path / "analyses.yaml").write_text(yaml.safe_dump(cfg))
    s = load_config(tmp_path / "analyses.yaml")
    assert s.store_path == str(tmp_path / "state" / "runs.db")


def test_ctr_templates_substitute_only_version_and_window():
    q = 'sum(increase(clicks_total{version="{version}",app=~"a{1,2}"}[{window}])) + {other}'
    assert render(q, "canary", 30.4) == 'sum(increase(clicks_total{version="canary",app=~"a{1,2}"}[30s])) + {other}'
