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


def test_judge_exit_2_on_bad_config_unknown_analysis_or_arguments(tmp_path, capsys):
    cfg = base_config(tmp_path)
    good = _write(tmp_path, cfg)
    assert judge.main(["--config", good, "--analysis", "nope", "--duration", "1s"]) == 2
    assert "unknown analysis 'nope'" in capsys.readouterr().err
    assert judge.main(["--config", good, "--analysis", "digits", "--duration", "soon"]) == 2
    cfg["analyses"]["digits"]["checks"] = {"alpha": 2}
    assert judge.main(["--config", _write(tmp_path, cfg), "--analysis", "digits"]) == 2
    assert "analyses.digits.checks.alpha" in capsys.readouterr().err
