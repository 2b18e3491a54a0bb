"""`shadowgate loadtest`: summary, JSON, and clear errors for bad options or targets."""

import json

import numpy as np
import pytest

from loadtest.cli import main
from webhook.cli import main as shadowgate


def test_json_output_against_a_grpc_endpoint(echo, capsys):
    rc = main(["--target", echo.grpc_target, "--model", "digits", "--rps", "100", "--duration", "1s",
               "--warmup", "200ms", "--input-shape", "64", "--output", "json", "--no-progress"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    load = doc["load"]
    assert load["intended"] == load["sent"] == load["ok"] == 100
    assert load["achieved_rps"] == pytest.approx(100, rel=0.01)
    assert load["latency_corrected"]["count"] == 100
    assert doc["warmup_s"] == 0.2


def test_text_summary_with_errors_by_code_over_rest(echo_with, capsys):
    server = echo_with(error_ratio=1.0, error_code="UNAVAILABLE")
    rc = shadowgate(["loadtest", "--target", server.rest_url, "--rest", "--model", "digits", "--rps", "50",
                     "--duration", "0.4s", "--input-shape", "64", "--max-error-ratio", "0.5"])
    out = capsys.readouterr()
    assert rc == 1  # the error ratio is above --max-error-ratio
    assert "Summary:" in out.out and "p99.9" in out.out and "Requests/sec:" in out.out
    # The preflight request is not counted; every scheduled one is.
    assert "[503]  20" in out.out
    assert "--max-error-ratio" in out.err


def test_steps_and_data_file(echo, tmp_path, capsys):
    data = tmp_path / "rows.npz"
    np.savez(data, inputs=np.random.default_rng(0).random((5, 64)).astype(np.float32))
    rc = main(["--target", echo.grpc_target, "--model", "digits", "--rps", "200", "--duration", "1s",
               "--steps", "0.1,0.5", "--data", str(data), "--output", "json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["load"]["intended"] == 10 + 50


def test_unreachable_target_is_one_clear_line(capsys):
    rc = main(["--target", "127.0.0.1:1", "--model", "digits", "--rps", "10", "--duration", "1s",
               "--input-shape", "64", "--timeout", "2s"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "cannot reach grpc 127.0.0.1:1" in err and "Traceback" not in err


def test_rest_port_given_as_grpc_says_so(echo, capsys):
    rc = main(["--target", echo.rest_url.removeprefix("http://"), "--model", "digits", "--rps", "10",
               "--duration", "1s", "--input-shape", "64", "--timeout", "2s"])
    assert rc == 2
    assert "--rest" in capsys.readouterr().err


def test_wrong_model_is_named(modelserver, capsys):
    rc = main(["--target", modelserver.grpc_target, "--model", "nosuchmodel", "--rps", "10",
               "--duration", "1s", "--input-shape", "64"])
    err = capsys.readouterr().err
    assert rc == 2 and "not found" in err and "nosuchmodel" in err


@pytest.mark.parametrize("args,field", [
    (["--rps", "fast"], "--rps"),
    (["--rps", "10", "--duration", "soon"], "--duration"),
    (["--rps", "10", "--concurrency", "0"], "--concurrency"),
    (["--rps", "10", "--steps", "a,b"], "--steps"),
    (["--rps", "10", "--data", "/nonexistent.npz"], "--data"),
    (["--rps", "10", "--shadow", "127.0.0.1:1"], "--golden"),
])
def test_bad_options_name_the_option(args, field, capsys):
    rc = main(["--target", "127.0.0.1:1", "--model", "m", "--input-shape", "64"] + args)
    err = capsys.readouterr().err
    assert rc == 2 and field in err and "Traceback" not in err


def test_inputs_from_the_signature_and_shadow_probes(modelserver, demo_assets, capsys):
    rc = main(["--target", modelserver.grpc_target, "--model", "digits", "--label", "canary",
               "--rps", "50", "--duration", "1s", "--output", "json",
               "--shadow", modelserver.grpc_target, "--shadow-label", "stable",
               "--golden", str(demo_assets.golden), "--probe-rate", "20"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["load"]["ok"] == 50
    shadow = doc["shadow"]
    assert shadow["sent"] >= 15 and shadow["pairs_seen"] == shadow["sent"]
    assert shadow["canary_versions"] == {"2": shadow["sent"]}
    assert 0.5 <= shadow["agreement"] <= 1.0
