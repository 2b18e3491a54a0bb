"""Static checks of the Helm chart (helm itself is not available to the test run).

What can be checked without helm: the chart metadata, that values.yaml parses,
that every `.Values.x.y` a template reads is defined in values.yaml, that
template actions are balanced, and that the chart's container arguments name
real `shadowgate` subcommands.
"""

import re
from pathlib import Path

import yaml

from webhook.cli import SUBCOMMANDS

CHART = Path(__file__).resolve().parent.parent / "helm" / "shadowgate"


def _templates():
    return sorted((CHART / "templates").glob("*"))


def test_chart_metadata_and_values_parse():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "shadowgate"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["replicaCount"] == 1  # sessions live in one process
    assert values["analyses"]["server"]["store"].startswith("/var/lib/shadowgate/")


def test_the_config_the_chart_renders_is_valid_for_the_service():
    from webhook.config import Config

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    example = yaml.safe_load((CHART.parent.parent / "examples" / "analyses.yaml").read_text())
    rendered = dict(values["analyses"], analyses=example["analyses"])
    config = Config.model_validate(rendered)
    assert config.server.store == "/var/lib/shadowgate/runs.db"


def test_every_value_a_template_reads_is_defined():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []
    for path in _templates():
        for ref in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", path.read_text()):
            node = values
            for key in ref.strip(".").split("."):
                if not isinstance(node, dict) or key not in node:
                    missing.append(f"{path.name}: .Values{ref}")
                    break
                node = node[key]
    assert not missing, missing


def test_template_actions_are_balanced():
    for path in _templates():
        text = path.read_text()
        assert text.count("{{") == text.count("}}"), path.name
        opens = len(re.findall(r"{{-?\s*(?:if|range|with|define)\b", text))
        ends = len(re.findall(r"{{-?\s*end\b", text))
        assert opens == ends, f"{path.name}: {opens} blocks opened, {ends} closed"


def test_container_runs_a_real_subcommand():
    text = (CHART / "templates" / "deployment.yaml").read_text()
    args = re.search(r"args: \[(.*)\]", text).group(1)
    first = args.split(",")[0].strip().strip('"')
    assert first in SUBCOMMANDS
