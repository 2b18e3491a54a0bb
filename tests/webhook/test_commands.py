"""`shadowgate serve` and `shadowgate judge` refuse bad input with exit code 2 and a named field."""

from __future__ import annotations

import yaml

from tests.webhook.conftest import base_config
from webhook import judge, serve


def _write(tmp_path, cfg) -> str:
    p = tmp_path / "analyses.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def test_serve_stops_on_a_bad_config_naming_the_field(tmp_path, capsys):
    cfg = base_config(tmp_path)
    cfg["analyses"]["digits"]["canary"]["protocol"] = "grpc"
    assert serve.main(["--config", _write(tmp_path, cfg)]) == 2
    assert "analyses.digits.canary.protocol" in capsys.readouterr().err


def test_serve_stops_with_one_clean_line_when_its_store_cannot_be_opened(tmp_path, capsys):
    """PostgreSQL refusing (nothing listens on a just-closed port): exit 3, no traceback, no password."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = base_config(tmp_path)
    cfg["server"]["store"] = f"postgresql://shadowgate:hunter2secret@127.0.0.1:{port}/runs?sslmode=disable"
    assert serve.main(["--config", _write(tmp_path, cfg), "--bind", "127.0.0.1:0"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("shadowgate serve: cannot open the store postgresql://") and f":{port}/runs" in err, err
    assert "hunter2secret" not in err and "Traceback" not in err and "refused" in err.lower(), err
    # a SQLite file that cannot be created says so the same way
    cfg["server"]["store"] = str(tmp_path / "no-such-dir" / "runs.db")
    assert serve.main(["--config", _write(tmp_path, cfg), "--bind", "127.0.0.1:0"]) == 3
    assert "cannot open the store" in capsys.readouterr().err


def test_judge_exit_2_on_bad_config_unknown_analysis_or_arguments(tmp_path, capsys):
    cfg = base_config(tmp_path)
    good = _write(tmp_path, cfg)
    assert judge.main(["--config", good, "--analysis", "nope", "--duration", "1s"]) == 2
    assert "unknown analysis 'nope'" in capsys.readouterr().err
    assert judge.main(["--config", good, "--analysis", "digits", "--duration", "soon"]) == 2
    cfg["analyses"]["digits"]["checks"] = {"alpha": 2}
    assert judge.main(["--config", _write(tmp_path, cfg), "--analysis", "digits"]) == 2
    assert "analyses.digits.checks.alpha" in capsys.readouterr().err


import pytest  # noqa: E402

from webhook import plan  # noqa: E402


@pytest.mark.parametrize("checks, field", [
    ({"latency": {"alert": 2.0, "rollback": 1.5}}, "analyses.digits.checks.latency.rollback"),
    ({"beta": 0.5}, "analyses.digits.checks.beta"),
    ({"alpha": 0}, "analyses.digits.checks.alpha"),
    ({"max_windows": 4, "stages": [{"from_window": 6, "errors": {"alert": 0.001, "rollback": 0.002}}]},
     "analyses.digits.checks.stages.0.from_window"),
])
def test_gate_config_errors_stop_serve_judge_and_plan_with_exit_2(tmp_path, capsys, checks, field):
    cfg = base_config(tmp_path)
    cfg["analyses"]["digits"]["checks"] = checks
    path = _write(tmp_path, cfg)
    assert serve.main(["--config", path]) == 2
    assert field in capsys.readouterr().err
    assert judge.main(["--config", path, "--analysis", "digits", "--duration", "1s"]) == 2
    assert field in capsys.readouterr().err
    assert plan.main(["--config", path]) == 2
    assert field in capsys.readouterr().err


def test_plan_says_what_the_golden_set_can_promise(tmp_path, capsys):
    path = _write(tmp_path, base_config(tmp_path))  # a 64-row golden set
    assert plan.main(["--config", path, "--analysis", "digits"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: golden set of 64 rows cannot separate" in out
    for check in ("accuracy", "latency", "errors", "errors_increase"):
        assert f"  {check} " in out
    assert plan.main(["--config", path, "--json"]) == 0
    import json
    data = json.loads(capsys.readouterr().out)
    assert {d["analysis"] for d in data} == {"digits", "podinfo"}
    assert data[0]["golden"]["separable"] is False
