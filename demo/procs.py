"""Every process the demo starts, and the guarantee that none outlives it.

Each child:

- runs in a session (process group) of its own, so Ctrl-C on the terminal
  reaches only the demo, which then stops the children in order, and
  anything a child starts goes with it (the whole group is signalled);
- is started through `python -m demo.procs PARENT_PID -- argv...`, which
  asks Linux to SIGKILL it when the demo dies (PR_SET_PDEATHSIG) and then
  execs the real command: even a demo killed with SIGKILL takes its
  children along;
- writes stdout and stderr to a log file in the run folder, never to the
  terminal (no TensorFlow or absl lines there).

`Supervisor.stop_all()` is called from the demo's `finally`, from atexit
and (through SystemExit) from its SIGTERM / SIGHUP handlers: SIGTERM to
each group in reverse order of start, SIGKILL to what is left after a grace
period. Children must be started from the main thread: the death signal is
tied to the thread that started them.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Child:
    """One started process: its name (for messages), Popen and log file."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


class ChildDied(RuntimeError):
    """A child the demo needs exited; the message names it, its exit code and its log."""


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # each child leads its own group: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass


class Supervisor:
    """Starts children (own group, death signal, log file) and stops them all, once."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[Child] = []
        self._terminating: list[Child] = []  # asked to stop, not reaped yet: their exit is no failure
        self._lock = threading.Lock()
        self._env = dict(os.environ if env is None else env)
        # No TensorFlow or absl lines from any child (they go to the logs anyway).
        self._env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        self._env["PYTHONUNBUFFERED"] = "1"
        self._env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + ([self._env["PYTHONPATH"]] if self._env.get("PYTHONPATH") else []))
        atexit.register(self.stop_all)

    def spawn(self, name: str, argv: list[str], log_name: str | None = None) -> Child:
        """Start `argv` with its output in `<log_dir>/<log_name or name>.log`; returns at once."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("children are started from the main thread (their death signal follows it)")
        log_path = self.log_dir / f"{log_name or name}.log"
        wrapped = [sys.executable, "-m", "demo.procs", str(os.getpid()), "--", *map(str, argv)]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(wrapped, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=str(REPO_ROOT), env=self._env, start_new_session=True)
        child = Child(name, proc, log_path)
        with self._lock:
            self.children.append(child)
        return child

    def terminate(self, child: Child) -> None:
        """SIGTERM the child's group and return at once (stop() or stop_all() reaps it)."""
        with self._lock:
            self._terminating.append(child)
        if child.alive():
            _signal_group(child.pid, signal.SIGTERM)

    def stop(self, child: Child, grace_s: float = 10.0) -> int | None:
        """SIGTERM the child's group, SIGKILL after `grace_s` seconds; returns its exit code."""
        if child.alive():
            _signal_group(child.pid, signal.SIGTERM)
            try:
                child.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(child.pid, signal.SIGKILL)  # whatever else is left in its group
        try:
            child.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            pass
        with self._lock:
            if child in self.children:
                self.children.remove(child)
            if child in self._terminating:
                self._terminating.remove(child)
        return child.proc.returncode

    def stop_all(self, grace_s: float = 10.0) -> None:
        """Stop every child still known, newest first; safe to call more than once."""
        with self._lock:
            children = list(reversed(self.children))
        for c in children:
            if c.alive():
                _signal_group(c.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for c in children:
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for c in children:
            self.stop(c, grace_s=0.0)

    def check(self, *children: Child, ignore: tuple[Child, ...] = ()) -> None:
        """Raise ChildDied if one of `children` (default: all but those asked to stop and `ignore`) has exited."""
        with self._lock:
            watched = list(children or [c for c in self.children if c not in self._terminating and c not in ignore])
        for c in watched:
            code = c.proc.poll()
            if code is not None:
                raise ChildDied(f"{c.name} exited with code {code} (log {c.log_path})")


def _exec_with_death_signal(argv: list[str]) -> int:
    """`python -m demo.procs PARENT -- cmd...`: die with PARENT, then become cmd."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m demo.procs PARENT_PID -- command [args...]", file=sys.stderr)
        return 2
    parent = int(argv[0])
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the demo's own clean-up still applies
        pass
    if os.getppid() != parent:  # the demo died before the death signal was armed
        return 1
    os.execvp(argv[2], argv[2:])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(_exec_with_death_signal(sys.argv[1:]))
