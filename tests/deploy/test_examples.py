"""Every example validates, and every analyses.yaml in them loads with the service's own loader.

Kubernetes kinds: kubernetes-validate (strict). Argo Rollouts, Istio and
prometheus-operator kinds: npm's @kubernetes-models schemas. Flagger kinds:
the fields shared/contracts.md describes (no package publishes a schema);
KServe's InferenceService: its required fields.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.deploy.k8s import CRD_GROUPS, check_flagger, is_builtin, validate_builtin, validate_crds
from webhook.config import load_settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
CHART_VALUES = REPO / "helm" / "shadowgate" / "values.yaml"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _k8s_examples() -> list[Path]:
    return [p for p in EXAMPLES if p.name != "analyses.yaml"]


@pytest.mark.parametrize("path", _k8s_examples(), ids=lambda p: p.name)
def test_every_example_object_is_valid(path):
    crds = []
    for obj in _docs(path):
        group = obj["apiVersion"].split("/")[0]
        if is_builtin(obj):
            validate_builtin(obj)
        elif group == "flagger.app":
            check_flagger(obj)
        elif group == "serving.kserve.io":
            assert obj["kind"] == "InferenceService" and obj["spec"]["predictor"]
        else:
            assert group in CRD_GROUPS, f"{path.name}: no check for {obj['apiVersion']}"
            crds.append(obj)
    for result in validate_crds(crds) if crds else []:
        assert result["ok"], (path.name, result)


def _analyses_files() -> list[tuple[str, dict]]:
    out = [("examples/analyses.yaml", yaml.safe_load((REPO / "examples" / "analyses.yaml").read_text())),
           ("helm values", yaml.safe_load(CHART_VALUES.read_text())["analyses"])]
    for path in _k8s_examples():
        for obj in _docs(path):
            if obj["kind"] == "ConfigMap" and "analyses.yaml" in obj.get("data", {}):
                out.append((f"{path.name}:{obj['metadata']['name']}", yaml.safe_load(obj["data"]["analyses.yaml"])))
    return out


@pytest.mark.parametrize("name, data", _analyses_files(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_analyses_yaml_loads_with_the_services_loader(name, data, tmp_path):
    """Mounted paths (/data, /var/lib/shadowgate, /tmp) are mapped under a temporary root."""
    text = re.sub(r"(?<![\w/.])/(data|var/lib/shadowgate|tmp)/", lambda m: f"{tmp_path}{m.group(0)}",
                  yaml.safe_dump(data))
    for mount in ("data", "var/lib/shadowgate", "tmp"):
        (tmp_path / mount).mkdir(parents=True, exist_ok=True)
    chart_set = REPO / "helm" / "shadowgate" / "files" / "digits-golden.npz"
    (tmp_path / "data" / "golden.npz").write_bytes(chart_set.read_bytes())
    with np.load(chart_set) as z:
        np.savez(tmp_path / "data" / "reference.npz", inputs=z["inputs"])
    settings = load_settings(yaml.safe_load(text), tmp_path)
    assert settings.analyses
    for analysis in settings.analyses.values():
        assert analysis.golden_inputs.shape == (360, 64)
