"""The Helm chart, rendered by real Helm (helm-python-sdk: Helm's Go SDK, no binary).

Under several value sets: strict lint, every object valid for Kubernetes
(kubernetes-validate) or for its CRD's published schema (npm's
@kubernetes-models), the rendered analyses.yaml loaded by the service's own
loader with the golden set where the chart mounts it, and the service
started exactly as the container's args say, from the runtime venv (no
TensorFlow), answering /readyz and refusing a call without the token.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python")

from tests.deploy.conftest import runtime_python  # noqa: E402,F401  (fixture)
from tests.deploy.k8s import is_builtin, validate_builtin, validate_crds  # noqa: E402
from webhook.cli import SUBCOMMANDS  # noqa: E402
from webhook.config import load_settings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "shadowgate"

VALUE_SETS = {
    "defaults": {},
    "platform": {
        "fullnameOverride": "canary-judge",
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "prometheusRule": {"enabled": True},
        "golden": {"existingClaim": "golden-sets", "example": False},
        "auth": {"enabled": True, "existingSecret": "shadowgate-callers"},
        "allowedNamespaces": ["test", "prod"],
        "persistence": {"existingClaim": "shadowgate-runs"},
    },
    "minimal": {
        "nameOverride": "sg",
        "auth": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "persistence": {"enabled": False},
        "dashboard": {"enabled": False},
        "golden": {"existingConfigMap": "digits-golden", "example": False},
        "extraVolumes": [{"name": "ref", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "ref", "mountPath": "/ref", "readOnly": True}],
    },
    "inline-token": {"auth": {"token": "0123456789abcdef0123"}, "serviceAccount": {"create": False, "name": "sg"}},
    "postgresql": {"replicas": 3, "store": {"postgresql": {"url": "postgresql://sg:pw-in-secret@pg.db:5432/shadowgate"}}},
}


def render(values: dict, name: str = "shadowgate", namespace: str = "shadowgate") -> tuple[list[dict], str]:
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name=name, namespace=namespace, is_install=True)
    objects = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    notes = next(v for k, v in out.items() if k.endswith("NOTES.txt"))
    return objects, notes


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_is_clean_in_strict_mode(name):
    report = helm.lint(str(CHART), VALUE_SETS[name] or None, strict=True, namespace="shadowgate",
                       kube_version="v1.30.0")
    assert report["errors"] == [] and report["messages"] == [], report


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_is_valid(name):
    objects, _ = render(VALUE_SETS[name])
    crds = []
    for obj in objects:
        if is_builtin(obj):
            validate_builtin(obj)
        else:
            crds.append(obj)
    for result in validate_crds(crds) if crds else []:
        assert result["ok"], result


def test_names_follow_the_release_and_the_overrides():
    objects, notes = render({})
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    # `helm install shadowgate -n shadowgate`: the names every example uses.
    assert ("Service", "shadowgate") in names and ("ConfigMap", "shadowgate") in names
    assert ("Secret", "shadowgate-token") in names
    assert "http://shadowgate.shadowgate:8080" in notes
    objects, _ = render({}, name="prod")
    assert {o["metadata"]["name"] for o in by_kind(objects, "Service")} == {"prod-shadowgate"}
    objects, _ = render({"fullnameOverride": "judge"}, name="prod")
    assert {o["metadata"]["name"] for o in by_kind(objects, "Service")} == {"judge"}
    objects, _ = render({"nameOverride": "sg"}, name="prod")
    svc = by_kind(objects, "Service")[0]
    assert svc["metadata"]["name"] == "prod-sg" and svc["spec"]["selector"]["app.kubernetes.io/name"] == "sg"


def test_the_pod_meets_the_restricted_pod_security_level():
    objects, _ = render({})
    pod = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    c = pod["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "startupProbe" in c and c["args"][0] in SUBCOMMANDS
    sa = by_kind(objects, "ServiceAccount")[0]
    assert sa["automountServiceAccountToken"] is False


def test_platform_values_reach_the_objects():
    objects, _ = render(VALUE_SETS["platform"])
    pod = by_kind(objects, "Deployment")[0]["spec"]["template"]
    assert pod["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"} and spec["tolerations"] and spec["affinity"]
    golden = next(v for v in spec["volumes"] if v["name"] == "golden")
    assert golden["persistentVolumeClaim"] == {"claimName": "golden-sets", "readOnly": True}
    assert by_kind(objects, "ServiceMonitor")[0]["metadata"]["labels"]["release"] == "prom"
    assert by_kind(objects, "PrometheusRule")
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["SHADOWGATE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "shadowgate-callers"
    assert env["SHADOWGATE_ALLOWED_NAMESPACES"]["value"] == "test,prod"
    assert not by_kind(objects, "Secret")  # the existing Secret is used
    assert not by_kind(objects, "PersistentVolumeClaim")


def test_network_policy_admits_only_controllers_and_prometheus():
    objects, _ = render({})
    np_ = by_kind(objects, "NetworkPolicy")[0]["spec"]
    sources = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in np_["ingress"][0]["from"]}
    assert sources == {"flagger-system", "istio-system", "argo-rollouts", "monitoring"}
    ports = {p["port"] for rule in np_["egress"] for p in rule.get("ports", [])}
    assert {53, 8500, 8501, 9090} == ports


def test_the_generated_token_is_kept_across_upgrades():
    objects, _ = render({})
    token = base64.b64decode(by_kind(objects, "Secret")[0]["data"]["token"]).decode()
    assert len(token) >= 16
    secret = by_kind(objects, "Secret")[0]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The template reads the live Secret back (Helm's lookup) before generating one.
    text = (CHART / "templates" / "secret.yaml").read_text()
    assert 'lookup "v1" "Secret"' in text and "randAlphaNum" in text


@pytest.mark.parametrize("values, message", [
    ({"auth": {"enabled": True, "token": "short"}}, "token"),
    ({"replicaCount": 2}, "replicaCount"),
    ({"replicas": 2}, "store.postgresql"),  # several replicas need the shared store
    ({"store": {"postgresql": {"url": "mysql://x@y/z"}}}, "url"),
    ({"analyses": {"analyses": {"digits": None}}}, "analyses"),  # null removes the example
    ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"golden": {"mountPath": "data"}}, "mountPath"),
])
def test_the_values_schema_refuses_what_would_crash_the_pod(values, message):
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(helm.HelmError) as err:
        chart.render(values, name="shadowgate", namespace="shadowgate", is_install=True)
    assert message in str(err.value)


def _materialise(objects: list[dict], root: Path) -> Path:
    """Write the config and the golden ConfigMap where the pod would see them, under `root`."""
    cm = next(o for o in by_kind(objects, "ConfigMap") if "analyses.yaml" in o.get("data", {}))
    text = cm["data"]["analyses.yaml"]
    for mount in ("/data/", "/var/lib/shadowgate/"):
        text = text.replace(mount, f"{root}{mount}")
        (root / mount.strip("/")).mkdir(parents=True, exist_ok=True)
    for golden in by_kind(objects, "ConfigMap"):
        for name, b64 in (golden.get("binaryData") or {}).items():
            (root / "data" / name).write_bytes(base64.b64decode(b64))
    config = root / "etc" / "shadowgate" / "analyses.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(text)
    return config


def test_the_rendered_config_loads_with_the_golden_set_the_chart_mounts(tmp_path):
    objects, _ = render({})
    config = _materialise(objects, tmp_path)
    settings = load_settings(yaml.safe_load(config.read_text()), config.parent)
    assert settings.analyses["digits"].golden_inputs.shape == (360, 64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_service_starts_as_the_chart_runs_it(tmp_path, runtime_python):
    objects, _ = render({})
    config = _materialise(objects, tmp_path)
    container = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    args = list(container["args"])
    assert args[args.index("--config") + 1] == "/etc/shadowgate/analyses.yaml"
    args[args.index("--config") + 1] = str(config)
    port = _free_port()
    args[args.index("--bind") + 1] = f"127.0.0.1:{port}"  # the pod binds 0.0.0.0:8080
    token = base64.b64decode(by_kind(objects, "Secret")[0]["data"]["token"]).decode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHADOWGATE_")}
    env["SHADOWGATE_TOKEN"] = token
    shadowgate = Path(runtime_python).parent / "shadowgate"
    proc = subprocess.Popen([str(shadowgate), *args], env=env, cwd="/", stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "not ready within 60 s"
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/argo/v1/analyses/digits?rollout=r&revision=1"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=5)
        assert err.value.code == 401  # auth is on by default
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b"shadowgate_" in r.read()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_the_dashboard_queries_only_exported_metrics():
    objects, _ = render({})
    cm = next(o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["shadowgate.json"])
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    readme = (REPO / "README.md").read_text()
    import re
    for metric in set(re.findall(r"shadowgate_[a-z_0-9]+", exprs)):
        base = re.sub(r"_bucket$", "", metric)
        assert base in readme, f"{metric} is not a documented metric"


def test_replicas_share_postgresql_with_a_budget_and_spread_over_nodes():
    objects, _ = render(VALUE_SETS["postgresql"])
    deploy = by_kind(objects, "Deployment")[0]
    assert deploy["spec"]["replicas"] == 3 and deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = deploy["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    ref = env["SHADOWGATE_STORE"]["valueFrom"]["secretKeyRef"]
    secret = next(o for o in by_kind(objects, "Secret") if o["metadata"]["name"] == ref["name"])
    assert base64.b64decode(secret["data"][ref["key"]]).decode().startswith("postgresql://sg:pw-in-secret@")
    assert "pw-in-secret" not in json.dumps(by_kind(objects, "ConfigMap"))  # the password only in the Secret
    pdb = by_kind(objects, "PodDisruptionBudget")[0]["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert not by_kind(objects, "PersistentVolumeClaim") and all(v["name"] != "data" for v in pod["volumes"])
    egress = by_kind(objects, "NetworkPolicy")[0]["spec"]["egress"]
    assert {"port": 5432, "protocol": "TCP"} in [p for rule in egress for p in rule.get("ports", [])]
    # the same chart with SQLite: one replica, the volume, no budget
    objects, _ = render({})
    assert by_kind(objects, "Deployment")[0]["spec"]["replicas"] == 1
    assert by_kind(objects, "PersistentVolumeClaim") and not by_kind(objects, "PodDisruptionBudget")


@pytest.fixture(scope="module")
def postgres_for_chart():
    """A database of a throwaway PostgreSQL cluster (tests/store/postgres.py)."""
    pytest.importorskip("psycopg")
    from tests.store.postgres import running_postgres

    with running_postgres() as pg:
        yield pg.create_database("chart")


def test_the_postgresql_url_from_the_chart_reaches_the_service(tmp_path, postgres_for_chart):
    """The rendered config plus SHADOWGATE_STORE, as the pod gets them, load and open the shared store."""
    from webhook.store import open_store

    objects, _ = render({"replicas": 2, "store": {"postgresql": {"url": postgres_for_chart}}})
    config = _materialise(objects, tmp_path)
    secret = next(o for o in by_kind(objects, "Secret") if o["metadata"]["name"].endswith("-store"))
    url = base64.b64decode(secret["data"]["url"]).decode()
    old = os.environ.get("SHADOWGATE_STORE")
    os.environ["SHADOWGATE_STORE"] = url
    try:
        settings = load_settings(yaml.safe_load(config.read_text()), config.parent)
    finally:
        if old is None:
            del os.environ["SHADOWGATE_STORE"]
        else:
            os.environ["SHADOWGATE_STORE"] = old
    assert settings.store_path == url
    store = open_store(settings.store_path)
    try:
        assert store.shared and store.list_runs() == []
    finally:
        store.close()
