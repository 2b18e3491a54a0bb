"""Golden and reference sets: file, ConfigMap-style symlinks, http(s) URL, sha256, re-reading.

What a URL may reach (schemes, redirects, addresses) and that its secrets are never shown:
tests/webhook/test_redaction.py.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from webhook import datasets
from webhook.config import ConfigError, load_settings


def _npz(path: Path, rows: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        np.savez(fh, inputs=rng.random((rows, 8)).astype(np.float32), labels=rng.integers(0, 3, rows))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _config(golden, reference=None) -> dict:
    target = {"protocol": "tfserving-grpc", "address": "127.0.0.1:9", "model": "m"}
    a = {"stable": dict(target, label="stable"), "canary": dict(target, label="canary"), "golden": golden}
    if reference is not None:
        a["reference"] = reference
    return {"server": {"store": ":memory:"}, "analyses": {"d": a}}


def test_a_file_with_its_sha256(tmp_path):
    digest = _npz(tmp_path / "g.npz", 30)
    s = load_settings(_config({"path": "g.npz", "sha256": digest}), tmp_path)
    assert s.analyses["d"].golden_inputs.shape == (30, 8)
    with pytest.raises(ConfigError) as err:
        load_settings(_config({"path": "g.npz", "sha256": "0" * 64}), tmp_path)
    assert err.value.field == "analyses.d.golden.sha256" and digest in err.value.message


@pytest.mark.parametrize("golden, field", [
    ({"path": "missing.npz"}, "analyses.d.golden.path"),
    ({"inputs_key": "x"}, "analyses.d.golden"),
    ({"path": "g.npz", "url": "https://x/g.npz"}, "analyses.d.golden"),
    ({"path": "g.npz", "sha256": "abc"}, "analyses.d.golden.sha256"),
    ({"path": "g.npz", "inputs_key": "nope"}, "analyses.d.golden.inputs_key"),
    ({"url": "s3://bucket/g.npz"}, "analyses.d.golden.url"),
])
def test_errors_name_the_field(tmp_path, golden, field):
    _npz(tmp_path / "g.npz", 10)
    with pytest.raises(ConfigError) as err:
        load_settings(_config(golden), tmp_path)
    assert err.value.field == field, err.value
    if "s3://" in str(golden):
        assert "s3" in err.value.message  # names the missing extra


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    handler = lambda *a, **kw: _Handler(*a, directory=str(served), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# A test server on 127.0.0.1 over plain http: both must be allowed (the defaults refuse them).
LOCAL = {"allow_http": True, "allow_private": True}


def test_an_http_url_where_allowed(tmp_path, http_dir):
    served, base_url = http_dir
    digest = _npz(served / "golden.npz", 40)
    _npz(served / "ref.npz", 50, seed=3)
    cfg = _config({"url": f"{base_url}/golden.npz", "sha256": digest, "timeout_s": 5, **LOCAL},
                  reference={"path": f"{base_url}/ref.npz", **LOCAL})  # a URL given as the path
    s = load_settings(cfg, tmp_path)
    assert s.analyses["d"].golden_inputs.shape == (40, 8)
    assert s.analyses["d"].reference_inputs.shape == (50, 8)
    with pytest.raises(ConfigError) as err:
        load_settings(_config({"url": f"{base_url}/nothing.npz", "timeout_s": 5, **LOCAL}), tmp_path)
    assert err.value.field == "analyses.d.golden.url" and "HTTP 404" in err.value.message


def test_an_unreachable_url_fails_within_its_deadline(tmp_path):
    import socket

    with socket.socket() as sock:  # a port that accepts nothing: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_settings(_config({"url": f"http://127.0.0.1:{port}/g.npz", "timeout_s": 3, **LOCAL}), tmp_path)
    assert err.value.field == "analyses.d.golden.url"
    assert time.monotonic() - started < 10


def _configmap_swap(mount: Path, rows: int, seed: int) -> str:
    """Write the set the way the kubelet updates a ConfigMap volume: a new dir, then swap ..data."""
    version = mount / f"..{time.monotonic_ns()}"
    version.mkdir()
    digest = _npz(version / "golden.npz", rows, seed)
    tmp_link = mount / "..data_tmp"
    tmp_link.symlink_to(version.name)
    os.replace(tmp_link, mount / "..data")
    if not (mount / "golden.npz").is_symlink():
        (mount / "golden.npz").symlink_to("..data/golden.npz")
    return digest


def test_a_changed_set_is_read_again_and_a_bad_one_refused(tmp_path):
    mount = tmp_path / "golden"
    mount.mkdir()
    _configmap_swap(mount, 20, 1)
    s = load_settings(_config({"path": str(mount / "golden.npz"), "reload_s": 0.1}), tmp_path)
    watcher = datasets.DataSetWatcher(s)
    assert watcher.check(force=True) == []  # unchanged
    _configmap_swap(mount, 35, 2)
    assert watcher.check(force=True) == ["analyses.d.golden"]
    assert s.analyses["d"].golden_inputs.shape == (35, 8)
    assert s.analyses["d"].golden_labels.shape == (35,)
    # A corrupt replacement is refused; the previous set stays.
    version = mount / "..broken"
    version.mkdir()
    (version / "golden.npz").write_bytes(b"not an npz")
    os.replace(_tmp_symlink(mount, version.name), mount / "..data")
    assert watcher.check(force=True) == []
    assert s.analyses["d"].golden_inputs.shape == (35, 8)


def _tmp_symlink(mount: Path, target: str) -> Path:
    link = mount / "..data_tmp"
    link.symlink_to(target)
    return link


def test_a_pinned_set_that_changes_to_other_content_is_refused(tmp_path):
    digest = _npz(tmp_path / "g.npz", 20)
    s = load_settings(_config({"path": "g.npz", "sha256": digest, "reload_s": 1}), tmp_path)
    watcher = datasets.DataSetWatcher(s)
    time.sleep(0.01)
    _npz(tmp_path / "g.npz", 25, seed=9)
    assert watcher.check(force=True) == []
    assert s.analyses["d"].golden_inputs.shape == (20, 8)


def test_the_watcher_starts_with_the_app_and_swaps_in_the_background(tmp_path):
    from prometheus_client import CollectorRegistry

    from webhook.app import create_app

    _npz(tmp_path / "g.npz", 20)
    cfg = _config({"path": "g.npz", "reload_s": 0.1})
    cfg.setdefault("server", {})["store"] = str(tmp_path / "runs.db")
    s = load_settings(cfg, tmp_path)
    app = create_app(s, registry=CollectorRegistry())
    svc = app.extensions["shadowgate"]
    try:
        watcher = svc.datasets
        assert watcher._thread is not None and watcher._thread.is_alive()
        time.sleep(0.02)
        _npz(tmp_path / "g.npz", 44, seed=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and s.analyses["d"].golden_inputs.shape[0] != 44:
            time.sleep(0.05)
        assert s.analyses["d"].golden_inputs.shape == (44, 8)
    finally:
        svc.close()
    assert not watcher._thread.is_alive()  # stopped with the service
