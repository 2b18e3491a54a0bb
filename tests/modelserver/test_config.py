"""Model config: TF Serving's text format, version policies, labels, bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelserver.cli import main
from modelserver.config import ConfigError, load_config_file, parse_config_text, single_model

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def base(tmp_path, demo_assets):
    """A model folder with versions 1, 2 and 5 (5 is a copy of 2)."""
    root = tmp_path / "m"
    for v, src in ((1, 1), (2, 2), (5, 2)):
        shutil.copytree(demo_assets.model_base_path / str(src), root / str(v))
    (root / "notes").mkdir()  # not a version: ignored
    return root


def cfg(base: Path, policy: str = "", labels: str = "") -> str:
    return (f'model_config_list {{ config {{ name: "m" base_path: "{base}" '
            f'model_platform: "tensorflow" {policy} {labels} }} }}')


def test_default_policy_is_latest_version(base):
    (m,) = parse_config_text(cfg(base))
    assert m.versions == (5,)


def test_policies(base):
    assert parse_config_text(cfg(base, "model_version_policy { all {} }"))[0].versions == (1, 2, 5)
    assert parse_config_text(cfg(base, "model_version_policy { latest { num_versions: 2 } }"))[0] \
        .versions == (2, 5)
    (m,) = parse_config_text(cfg(base, "model_version_policy { specific { versions: 1 versions: 2 } }",
                                 'version_labels { key: "stable" value: 1 }'))
    assert m.versions == (1, 2) and m.labels == {"stable": 1}


def test_single_model_flags(base):
    assert single_model("m", base)[0].versions == (5,)
    assert single_model("m", base, all_versions=True)[0].versions == (1, 2, 5)


@pytest.mark.parametrize("text,needle", [
    ("model_config_list { config { name: ", "not a valid ModelServerConfig"),
    ("model_config_list { config { nam: \"m\" } }", "not a valid ModelServerConfig"),
    ("model_config_list { }", "no config entries"),
    ("", "model_config_list"),
])
def test_malformed_text(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_config_text(text, source="x.config")


def test_problems_name_the_model_and_field(base, tmp_path):
    with pytest.raises(ConfigError, match=r"model 'm'.*version\(s\) \[3\]"):
        parse_config_text(cfg(base, "model_version_policy { specific { versions: 3 } }"))
    with pytest.raises(ConfigError, match="label 'canary' points to version 2, which is not served"):
        parse_config_text(cfg(base, "", 'version_labels { key: "canary" value: 2 }'))
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config_text(cfg(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no numbered version folders"):
        parse_config_text(cfg(tmp_path / "empty"))
    (tmp_path / "bad" / "1").mkdir(parents=True)
    with pytest.raises(ConfigError, match="not a SavedModel"):
        parse_config_text(cfg(tmp_path / "bad"))
    with pytest.raises(ConfigError, match="model_platform"):
        parse_config_text(cfg(base).replace('"tensorflow"', '"onnx"'))


def test_relative_base_path_is_relative_to_the_config_file(base):
    path = base.parent / "models.config"
    path.write_text(cfg(Path("m")))
    assert load_config_file(path)[0].base_path == base.resolve()


@pytest.mark.parametrize("argv,needle", [
    (["--model_config_file", "/nonexistent/models.config"], "no such file"),
    (["--model_name", "m", "--model_base_path", "/nonexistent/m"], "does not exist"),
    ([], "no model"),
    (["--model_base_path", ".", "--error-ratio", "2"], "error_ratio"),
    (["--model_base_path", ".", "--faults", "{oops"], "--faults"),
    (["--model_base_path", ".", "--port", "70000"], "--port"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1 and err.startswith("modelserver: error:")


def test_cli_malformed_config_file_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "models.config"
    bad.write_text('model_config_list {\n  config {\n    name: "digits"\n    base_path: /x\n  }\n}\n')
    proc = subprocess.run([sys.executable, "-m", "modelserver", "--model_config_file", str(bad),
                           "--port", "0", "--rest_api_port", "0"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("modelserver: error:")]
    assert len(lines) == 1
    assert str(bad) in lines[0] and "not a valid ModelServerConfig" in lines[0] and "4:" in lines[0]
    assert "ready" not in proc.stdout
