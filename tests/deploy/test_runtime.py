"""The runtime without TensorFlow: what it imports, what it sends, what it weighs.

The runtime venv holds exactly the wheels the Dockerfile installs
(deploy/install-runtime.sh builds both). TensorFlow's protobuf modules come
from tensorflow-protobuf there, with loadtest/tfprotos.py filling the one
module it lacks; these tests prove the result speaks TF Serving's wire
format byte for byte as TensorFlow does, that nothing imports TensorFlow,
and measure size and idle memory against the goals (500 MB, 200 MB).
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.runtime_footprint import idle_memory, installed_sizes, write_demo_config

REPO = Path(__file__).resolve().parents[2]

_IMPORT_ALL = r"""
import importlib, importlib.metadata as md, json, pkgutil, sys
mods = []
for pkg in ("webhook", "analyses", "loadtest"):
    p = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(p.__path__, pkg + "."):
        importlib.import_module(info.name)
        mods.append(info.name)
import tensorflow
dists = {d.metadata["Name"].lower() for d in md.distributions()}
print(json.dumps({
    "modules": mods,
    "tf_modules": sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")),
    "tensorflow_file": tensorflow.__file__,
    "heavy": sorted(m for m in ("keras", "tensorflow.python", "pandas", "matplotlib", "sklearn", "evidently",
                                "gunicorn") if m in sys.modules),
    "dists": sorted(dists),
}))
"""


def _run(python, *args, timeout=120, **kw):
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw)


def test_every_runtime_module_imports_without_tensorflow(runtime_python):
    res = _run(runtime_python, "-c", _IMPORT_ALL)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert "webhook.serve" in out["modules"] and "loadtest.cli" in out["modules"]
    assert not {"tensorflow", "tensorflow-cpu", "keras", "tensorboard"} & set(out["dists"])
    assert "tensorflow-protobuf" in out["dists"] and "tensorflow-serving-api" in out["dists"]
    assert out["heavy"] == []
    # Only generated protobuf modules live under `tensorflow` here.
    assert all(m.endswith("_pb2") or m.count(".") <= 2 for m in out["tf_modules"]), out["tf_modules"]
    assert out["tensorflow_file"].endswith("site-packages/tensorflow/__init__.py")


def test_the_commands_start(runtime_python):
    shadowgate = Path(runtime_python).parent / "shadowgate"
    for cmd in ("serve", "judge", "loadtest"):
        res = subprocess.run([str(shadowgate), cmd, "--help"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, (cmd, res.stderr[-2000:])


def test_the_official_stubs_are_the_ones_installed(runtime_python):
    """tensorflow-protobuf carries an old tensorflow_serving/; the official wheel's files must win."""
    code = ("import importlib.metadata as md, json; d = md.distribution('tensorflow-serving-api');"
            "print(json.dumps([[str(f), f.hash.value if f.hash else None, str(f.locate())] for f in d.files]))")
    res = _run(runtime_python, "-c", code)
    assert res.returncode == 0, res.stderr
    checked = 0
    for name, digest, path in json.loads(res.stdout):
        if digest is None or not name.endswith(".py"):
            continue
        data = Path(path).read_bytes()
        got = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert got == digest, f"{name} is not tensorflow-serving-api's file"
        checked += 1
    assert checked >= 20


def test_wire_bytes_equal_tensorflows(runtime_python):
    tf = pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import get_model_status_pb2, predict_pb2

    from tests.deploy.wire_sample import samples

    res = _run(runtime_python, "tests/deploy/wire_sample.py")
    assert res.returncode == 0, res.stderr[-3000:]
    runtime = json.loads(res.stdout)
    with_tf = samples()
    assert runtime.keys() == with_tf.keys()
    for key in with_tf:
        assert runtime[key] == with_tf[key], f"{key}: the runtime's bytes differ from TensorFlow's"
    # The hand-encoded load request is the stubs' request, byte for byte.
    assert runtime["predict_request.wire"] == runtime["predict_request.version"]
    # TensorFlow reads the runtime's request to the same array.
    req = predict_pb2.PredictRequest.FromString(bytes.fromhex(runtime["predict_request"]))
    x = tf.make_ndarray(req.inputs["x"])
    assert x.shape == (2, 64) and x.dtype == np.float32
    status = get_model_status_pb2.GetModelStatusResponse.FromString(bytes.fromhex(runtime["status_response"]))
    assert status.model_version_status[0].status.error_code == 5  # NOT_FOUND


def test_the_runtime_loads_and_probes_a_tf_serving(runtime_python, modelserver, demo_assets):
    """`shadowgate loadtest` from the runtime against the stand-in: gRPC load and shadow probes."""
    shadowgate = Path(runtime_python).parent / "shadowgate"
    res = subprocess.run(
        [str(shadowgate), "loadtest", "--target", modelserver.grpc_target, "--model", "digits",
         "--label", "canary", "--rps", "40", "--duration", "2s", "--shadow", modelserver.grpc_target,
         "--shadow-label", "stable", "--golden", str(demo_assets.golden), "--probe-rate", "20",
         "--output", "json", "--no-progress", "--max-error-ratio", "0"],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-2000:]
    report = json.loads(res.stdout)
    text = json.dumps(report)
    assert '"count"' in text or '"requests"' in text, text[:500]


def test_installed_size_and_idle_memory_meet_the_goals(runtime_python, tmp_path):
    sizes = installed_sizes(runtime_python)
    total_mb = sum(sizes.values()) / 1e6
    mem = idle_memory(runtime_python, write_demo_config(tmp_path))
    print(f"\nruntime installed: {total_mb:.0f} MB; idle serve RSS {mem['total_rss_mb']:.0f} MB "
          f"(PSS {mem['total_pss_mb']:.0f} MB), ready in {mem['ready_s']:.1f} s", file=sys.stderr)
    assert total_mb < 500
    assert mem["total_rss_mb"] < 200


def _pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            out[name.lower().replace("_", "-")] = version
    return out


def test_runtime_pins_are_the_development_pins():
    """One version of each package across the image and the tests (requirements.txt adds TensorFlow)."""
    dev = _pins(REPO / "requirements.txt")
    runtime = _pins(REPO / "requirements-runtime.txt")
    assert {k: v for k, v in runtime.items() if dev.get(k) != v} == {}
    assert not {"tensorflow", "tensorflow-cpu", "keras", "pytest", "evidently", "pyarrow"} & set(runtime)


def test_the_dockerfile_builds_the_runtime_only():
    text = (REPO / "Dockerfile").read_text()
    assert "deploy/install-runtime.sh" in text
    assert "requirements.txt " not in text and "COPY requirements.txt" not in text
    for package in ("webhook", "analyses", "loadtest"):
        assert f"COPY {package} ./{package}" in text
    assert "modelserver" not in text.split("FROM", 1)[1].split("USER")[0].replace("model server", "")
