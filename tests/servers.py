"""Start real servers for tests: `start_modelserver` runs the stand-in TF Serving.

Any suite can use it (or the session fixtures in tests/conftest.py):

    from tests.servers import start_modelserver

    def test_x(tmp_path, demo_assets):
        with start_modelserver(tmp_path, model_config=demo_assets.model_config,
                               faults={"latency_s": 0.2, "labels": ["canary"]}) as ms:
            ms.grpc_target          # "127.0.0.1:PORT"
            ms.rest_url             # "http://127.0.0.1:PORT"
            ms.set_faults({})       # change faults while it runs
        # stopped here

The process binds free ports on 127.0.0.1, logs to `<dir>/modelserver.log`,
and is ready when this returns (or ModelServerError says why not, with the
end of the log). Fault fields: see modelserver/faults.py.

`start_modelserver_group(dir, n, ...)` starts n stand-ins with `--reuse_port`
on one gRPC port (one address, the kernel spreads connections over them, as
pods behind one Service); each keeps a REST port of its own unless
share_rest=True.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from modelserver.process import ModelServerError, ModelServerProcess, start_process

__all__ = ["start_modelserver", "start_modelserver_group", "ModelServerProcess", "ModelServerError"]


def start_modelserver(tmp_path_or_dir: str | Path, model_config: str | Path | None = None,
                      model_name: str | None = None, base_path: str | Path | None = None,
                      faults: dict | None = None, extra_args=(),
                      ready_timeout_s: float = 60.0, name: str = "modelserver") -> ModelServerProcess:
    """Start `python -m modelserver` on free ports and wait until it serves.

    Give model_config (a models.config file), or model_name and base_path (a
    folder of numbered versions; every version is served). faults: initial
    faults as a dict (see modelserver/faults.py). extra_args: more CLI flags.
    ready_timeout_s: seconds to wait for the ready line.
    """
    args: list[str] = []
    if model_config is not None:
        args += ["--model_config_file", str(model_config)]
    elif base_path is not None:
        args += ["--model_name", model_name or "default", "--model_base_path", str(base_path),
                 "--serve_all_versions"]
    else:
        raise ValueError("start_modelserver needs model_config, or model_name and base_path")
    if faults:
        args += ["--faults", json.dumps(faults)]
    args += [str(a) for a in extra_args]
    return start_process(args, log_dir=tmp_path_or_dir, name=name,
                         ready_timeout_s=ready_timeout_s)


def start_modelserver_group(tmp_path_or_dir: str | Path, n: int, share_rest: bool = False,
                            extra_args=(), faults: list[dict | None] | None = None,
                            name: str = "modelserver", **kwargs) -> list[ModelServerProcess]:
    """Start n stand-ins with `--reuse_port` serving one gRPC address; returns them in start order.

    The first binds a free port, the others join it. share_rest: the REST port
    is shared too (else each process has its own, to reach one process's
    metrics and faults). faults: one initial fault dict (or None) per process.
    Other keyword arguments as start_modelserver. Stops the started ones if
    one fails.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    group: list[ModelServerProcess] = []
    try:
        for i in range(n):
            args = ["--reuse_port", *[str(a) for a in extra_args]]
            if group:
                args += ["--port", str(group[0].grpc_port)]
                if share_rest:
                    args += ["--rest_api_port", str(group[0].rest_port)]
            group.append(start_modelserver(tmp_path_or_dir, extra_args=args, name=f"{name}-{i + 1}",
                                           faults=faults[i] if faults else None, **kwargs))
    except BaseException:
        for ms in group:
            ms.stop()
        raise
    return group


@contextlib.contextmanager
def running_prometheus(work_dir: Path, scrape_configs: list[dict], scrape_interval: str = "1s",
                       ready_timeout_s: float = 30.0):
    """A real Prometheus (Debian `prometheus`) on 127.0.0.1 with these scrape jobs; yields its URL.

    Waits until /-/ready answers; stops the process (and waits for it) on exit.
    """
    import shutil
    import subprocess
    import time

    import requests
    import yaml

    from tests.webhook.service import free_port

    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    port = free_port()
    (work_dir / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": scrape_configs,
    }))
    log = open(work_dir / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={work_dir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work_dir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError((work_dir / "prometheus.log").read_text()[-2000:])
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
