"""End to end against the stand-in TF Serving with a periodic stall."""

import json

import pytest

from loadtest.cli import main
from tests.servers import start_modelserver


@pytest.mark.slow
def test_periodic_stall_shows_in_corrected_p99_not_in_service_p99(demo_assets, tmp_path, capsys):
    # The stand-in pauses 1 s every 3 s. A cap of 2 in flight behaves like a
    # closed-loop tool: the pause holds at most 2 requests (service time), while
    # ~100 requests due during each pause wait; their latency counts from when
    # they were due, so the pause is in the corrected p99.
    faults = {"stall_every_s": 3.0, "stall_for_s": 1.0}
    with start_modelserver(tmp_path, model_config=demo_assets.model_config, faults=faults) as ms:
        rc = main(["--target", ms.grpc_target, "--model", "digits", "--label", "canary", "--rps", "100",
                   "--duration", "6s", "--warmup", "0.5s", "--concurrency", "2", "--input-shape", "64",
                   "--output", "json"])
    assert rc == 0
    load = json.loads(capsys.readouterr().out)["load"]
    assert load["intended"] == 600
    assert load["errors"] == 0
    assert load["late"] >= 100
    assert load["latency_corrected"]["p99_s"] >= 0.6
    assert load["latency_service"]["p99_s"] < 0.3
