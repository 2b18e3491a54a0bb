"""`make demo` end to end, as CI runs it: `python -m demo --exit`, real processes on 127.0.0.1.

The demo must end with the good canary promoted and the bad one rolled back
(Flagger), Failed (Argo web) and exit 1 (Argo job); both Flagger runs must
have a report (the page, or the runs API while the page is not there yet);
its terminal must be free of TensorFlow and absl lines; and every process
it started must be gone afterwards, after a clean end and after a crash of
the service in the middle of a rollout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
NOISE = re.compile(r"oneDNN|absl|TF_CPP|I0000|W0000|E0000|tensorflow/core|Traceback")


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time in clock ticks) of a live process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has exited
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of `root`."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
                starts[int(entry)] = st[1]
    out, todo = {}, [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out[c] = starts[c]
            todo.append(c)
    return out


def still_running(seen: dict[int, int]) -> list[str]:
    """The processes of `seen` that still run (same pid and start time), with their command lines."""
    alive = []
    for pid, start in seen.items():
        st = _stat(pid)
        if st is not None and st[1] == start:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmd = "?"
            alive.append(f"{pid}: {cmd[:160]}")
    return alive


class DemoProcess:
    """`python -m demo ...` with its output read line by line and its descendants watched."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.json_path = tmp_path / "outcomes.json"
        argv = [sys.executable, "-m", "demo", "--exit", "--port", "0", "--prometheus-port", "0",
                "--run-dir", str(tmp_path / "run"), "--json", str(self.json_path), *args]
        self.proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self.lines: list[str] = []
        self.seen: dict[int, int] = {}
        self.on_line = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if self.on_line is not None:
                self.on_line(line.rstrip("\n"))

    def _watch(self) -> None:
        while not self._stop.is_set() and self.proc.poll() is None:
            self.seen.update(descendants(self.proc.pid))
            time.sleep(0.3)

    def wait_for(self, pattern: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if rx.search(line):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines[-40:]))

    def wait(self, timeout_s: float) -> int:
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)  # the demo stops its children on SIGTERM too
            code = self.proc.wait(30)
            raise AssertionError(f"demo still running after {timeout_s:g} s:\n" + "\n".join(self.lines[-40:]))
        finally:
            self._stop.set()
            self._watcher.join(5)
            self._reader.join(5)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def test_the_demo_promotes_the_good_canary_and_stops_the_bad_one_everywhere(tmp_path):
    demo = DemoProcess(tmp_path)
    reports: dict[str, dict] = {}

    def check_report(line: str) -> None:
        # A report URL is printed while the service still runs (later scenarios follow):
        # the page, or while report pages are not there yet, the run in the runs API.
        m = re.search(r"report: (http://\S+/reports/(run-[0-9a-f]{16}))", line)
        if not m:
            return
        url, run = m.groups()
        base = url.split("/reports/")[0]
        page = requests.get(url, timeout=5)
        api = requests.get(f"{base}/api/v1/runs/{run}", timeout=5)
        reports[run] = {"page": page.status_code, "api": api.status_code,
                        "status": api.json().get("status") if api.status_code == 200 else None}

    demo.on_line = check_report
    code = demo.wait(240)
    out = demo.output
    assert code == 0, out
    result = json.loads(demo.json_path.read_text())
    by = {o["scenario"]: o for o in result["outcomes"]}
    assert by["flagger-good"]["outcome"] == "promoted", out
    assert by["flagger-bad"]["outcome"] == "rolled_back", out
    assert by["argo-bad"]["outcome"] == "Failed", out
    assert by["judge-bad"]["outcome"] == "exit 1", out
    assert "accuracy" in by["flagger-bad"]["reason"] and "fail" in by["flagger-bad"]["reason"]
    # Flagger's calls for the bad canary: it never got past weight 0 and was rolled back.
    calls = by["flagger-bad"]["details"]["calls"]
    assert ["rollback", 200] in calls and calls[-1] == ["post-rollout", 200]
    # Both Flagger runs have a report (the page, or the run in the API), with their final status.
    for scenario, status in (("flagger-good", "succeeded"), ("flagger-bad", "failed")):
        run = by[scenario]["run"]
        assert run in reports, (scenario, reports, out)
        assert reports[run]["page"] == 200 or (reports[run]["api"] == 200 and reports[run]["status"] == status), \
            reports[run]
    # The live progress shows the weights and the checks against their thresholds.
    assert "25 %" in out and "50 %" in out and "acc " in out and "P95 " in out and "CTR " in out
    assert "P95 = P95 canary/stable (1.5x / 2x)" in re.sub(r"\n {12}", " ", out)  # the legend, unwrapped
    assert not NOISE.search(out), [ln for ln in demo.lines if NOISE.search(ln)]
    assert result["seconds"] < 200
    assert demo.seen, "no child process was ever seen"
    assert still_running(demo.seen) == []


def test_every_process_is_gone_when_the_service_dies_in_the_middle_of_a_rollout(tmp_path):
    demo = DemoProcess(tmp_path, "--scenario", "good")
    demo.wait_for(r"confirm-rollout 200", 120)
    service = [pid for pid in descendants(demo.proc.pid)
               if b"webhook.serve" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert service, demo.output
    os.kill(service[0], signal.SIGKILL)
    code = demo.wait(60)
    assert code == 1, demo.output
    assert "shadowgate exited" in demo.output or "call to Shadowgate failed" in demo.output, demo.output
    assert len(demo.seen) >= 4, demo.seen  # stable, Prometheus, the service, the canary
    assert still_running(demo.seen) == []


def test_ctrl_c_stops_every_process(tmp_path):
    demo = DemoProcess(tmp_path, "--scenario", "judge")
    demo.wait_for(r"^started ", 120)
    time.sleep(1.0)
    demo.proc.send_signal(signal.SIGINT)
    code = demo.wait(60)
    assert code == 130, demo.output
    assert still_running(demo.seen) == []
