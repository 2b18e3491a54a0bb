"""Validation helpers shared by the chart and example tests.

- `validate_builtin`: kubernetes-validate (the Kubernetes OpenAPI schemas), strict.
- `validate_crds`: custom resources against npm's @kubernetes-models schemas
  (Argo Rollouts, Istio, prometheus-operator), through node and
  tests/deploy/crd/validate.mjs; `make k8s-schemas` installs them.
- Flagger's Canary and MetricTemplate, KServe's InferenceService: no package
  ships their schemas; `check_flagger` checks the fields that
  shared/contracts.md describes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import kubernetes_validate

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / ".cache" / "k8s-models"
KUBE_VERSION = "1.30.0"
CRD_GROUPS = ("argoproj.io", "networking.istio.io", "security.istio.io", "monitoring.coreos.com")


def is_builtin(obj: dict) -> bool:
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    return group in ("", "apps", "batch", "networking.k8s.io", "policy", "rbac.authorization.k8s.io",
                     "autoscaling")


def validate_builtin(obj: dict) -> None:
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def ensure_models() -> None:
    if not (MODELS_DIR / ".installed-stamp").exists():
        subprocess.run(["make", "-s", "k8s-schemas"], cwd=REPO, check=True, timeout=600)


def validate_crds(objects: list[dict]) -> list[dict]:
    """One result per object: {kind, name, ok, error}; ok is None when no schema is published."""
    ensure_models()
    res = subprocess.run(["node", str(REPO / "tests" / "deploy" / "crd" / "validate.mjs")],
                         input=json.dumps(objects), capture_output=True, text=True, timeout=120,
                         env={"MODELS_DIR": str(MODELS_DIR), "PATH": "/usr/bin:/bin:/usr/local/bin"})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


FLAGGER_HOOK_TYPES = {"confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
                      "confirm-promotion", "rollback", "post-rollout", "event"}


def check_flagger(obj: dict) -> None:
    """The Canary / MetricTemplate fields Flagger reads (shared/contracts.md)."""
    assert obj["apiVersion"] == "flagger.app/v1beta1", obj["apiVersion"]
    spec = obj["spec"]
    if obj["kind"] == "MetricTemplate":
        assert spec["provider"]["type"] in ("prometheus", "datadog", "cloudwatch", "newrelic", "graphite",
                                            "influxdb", "stackdriver", "dynatrace", "keptn", "splunk")
        assert spec["query"].strip()
        return
    assert obj["kind"] == "Canary"
    assert {"apiVersion", "kind", "name"} <= set(spec["targetRef"])
    assert isinstance(spec["service"]["port"], int)
    analysis = spec["analysis"]
    assert isinstance(analysis.get("interval"), str)
    for hook in analysis.get("webhooks", []):
        assert hook["type"] in FLAGGER_HOOK_TYPES, hook["type"]
        assert hook["url"].startswith("http"), hook["url"]
        assert set(hook) <= {"name", "type", "url", "timeout", "metadata", "muteAlert", "retries"}, hook
        for value in (hook.get("metadata") or {}).values():
            assert isinstance(value, str), f"webhook metadata values are strings: {hook}"
    for metric in analysis.get("metrics", []):
        assert "name" in metric and ("templateRef" in metric or "thresholdRange" in metric)
