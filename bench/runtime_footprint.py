"""The runtime image's footprint: installed size of its wheels and the idle service's memory.

    .venv/bin/python -m bench.runtime_footprint [--python .cache/runtime-venv/bin/python]

No Docker engine is needed: the runtime venv (`make runtime-venv`) holds
exactly the wheels the Dockerfile installs (both run
deploy/install-runtime.sh). Installed size is the sum of the file sizes in
every installed distribution's RECORD (pip itself left out: the base image
brings it), beside the same sum for the development venv. Idle memory: the
service started as the chart starts it (`shadowgate serve --config ...`),
one analysis loaded, no run; RSS and PSS of the gunicorn master and its
worker after it has been ready for a few seconds. Goals: under 500 MB
installed, under 200 MB RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNTIME_PYTHON = REPO / ".cache" / "runtime-venv" / "bin" / "python"
DEV_PYTHON = REPO / ".venv" / "bin" / "python"

_SIZES = r"""
import json, importlib.metadata as md
out = {}
for d in md.distributions():
    name = d.metadata["Name"]
    total = 0
    for f in d.files or []:
        if f.size:
            total += int(f.size)
        else:
            try:
                total += f.locate().stat().st_size
            except OSError:
                pass
    out[name] = out.get(name, 0) + total
print(json.dumps(out))
"""


def installed_sizes(python: str | os.PathLike) -> dict[str, int]:
    """Bytes installed per distribution in the environment of `python` (from the RECORD files)."""
    res = subprocess.run([str(python), "-c", _SIZES], capture_output=True, text=True, timeout=60, check=True)
    sizes = json.loads(res.stdout)
    sizes.pop("pip", None)
    return sizes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            kids.append(int(entry.name))
    return kids


def _memory_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def write_demo_config(directory: Path) -> Path:
    """analyses.yaml with one analysis and a small golden set, as the chart's example."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(directory / "golden.npz", inputs=rng.random((360, 64)).astype(np.float32),
             labels=rng.integers(0, 10, 360))
    cfg = directory / "analyses.yaml"
    cfg.write_text(
        "server:\n  store: runs.db\n  interval_s: 30\n"
        "analyses:\n  digits:\n"
        "    stable: {protocol: tfserving-grpc, address: '127.0.0.1:9', model: digits, label: stable}\n"
        "    canary: {protocol: tfserving-grpc, address: '127.0.0.1:9', model: digits, label: canary}\n"
        "    golden: golden.npz\n")
    return cfg


def idle_memory(python: str | os.PathLike, config: Path, settle_s: float = 3.0,
                timeout_s: float = 60.0) -> dict[str, float]:
    """Start `shadowgate serve` with `python`'s environment; RSS/PSS in MB of master and worker once idle."""
    port = _free_port()
    shadowgate = Path(python).parent / "shadowgate"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHADOWGATE_")}
    proc = subprocess.Popen([str(shadowgate), "serve", "--config", str(config), "--bind", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=config.parent)
    started = time.monotonic()
    try:
        ready_s = None
        while time.monotonic() - started < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"shadowgate serve exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        ready_s = time.monotonic() - started
                        break
            except OSError:
                time.sleep(0.1)
        if ready_s is None:
            raise RuntimeError(f"shadowgate serve not ready within {timeout_s:g} s")
        time.sleep(settle_s)
        master = _memory_kb(proc.pid)
        workers = [_memory_kb(k) for k in _children(proc.pid)]
        w_rss = sum(w[0] for w in workers)
        w_pss = sum(w[1] for w in workers)
        return {
            "ready_s": ready_s,
            "master_rss_mb": master[0] / 1024, "worker_rss_mb": w_rss / 1024,
            "total_rss_mb": (master[0] + w_rss) / 1024, "total_pss_mb": (master[1] + w_pss) / 1024,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=str(RUNTIME_PYTHON), help="the runtime venv's python")
    ap.add_argument("--dev-python", default=str(DEV_PYTHON), help="the development venv's python")
    a = ap.parse_args(argv)
    if not Path(a.python).exists():
        print(f"{a.python} missing: run `make runtime-venv` first", file=sys.stderr)
        return {"error": "no runtime venv"}
    runtime = installed_sizes(a.python)
    total = sum(runtime.values()) / 1e6
    print("| environment | installed (MB, sum of RECORD sizes) |\n|---|---|")
    print(f"| runtime (requirements-runtime*.txt) | **{total:.0f}** |")
    if Path(a.dev_python).exists():
        dev = sum(installed_sizes(a.dev_python).values()) / 1e6
        print(f"| development (requirements.txt, with TensorFlow) | {dev:.0f} |")
    print("\nlargest runtime distributions: " + ", ".join(
        f"{k} {v / 1e6:.0f}" for k, v in sorted(runtime.items(), key=lambda kv: -kv[1])[:6]) + " (MB)")
    with tempfile.TemporaryDirectory() as tmp:
        mem = idle_memory(a.python, write_demo_config(Path(tmp)))
    print("\n| idle `shadowgate serve` | MB |\n|---|---|")
    for key in ("master_rss_mb", "worker_rss_mb", "total_rss_mb", "total_pss_mb"):
        print(f"| {key.replace('_mb', '').replace('_', ' ')} | {mem[key]:.0f} |")
    print(f"\nready {mem['ready_s']:.1f} s after start")
    return {"installed_mb": total, **mem}


if __name__ == "__main__":
    main()
