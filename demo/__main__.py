"""`make demo` (`shadowgate demo`, `python -m demo`): whole canary rollouts through the service.

On 127.0.0.1 it starts a stand-in TF Serving for the stable version, a real
Prometheus, the Shadowgate service and a small simulated user population
whose clicks are the analysis' CTR source, then drives rollouts exactly as
Flagger and Argo Rollouts call the service (demo.drivers), back to back:
the good canary promoted, the bad canary rolled back, the same bad canary
through Argo's web provider (Failed) and through `shadowgate judge` (exit
1). Each canary's stand-in starts when its controller scales it up.

Progress is printed live (tick, weight, the calls, the run's decision and
each check's estimate and verdict), then the outcomes and the report URLs;
the service then keeps running until Ctrl-C (`--exit` stops at once).
Children log to files in the run folder (`--run-dir`, default
.cache/demo-run), never to the terminal; every one of them is stopped when
the demo ends, however it ends (demo.procs).

Exit code: 0 when every scenario ended as expected, 1 otherwise or when a
process the demo needs died, 2 on a usage error, 130 on Ctrl-C before the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("good", "bad", "argo", "judge")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shadowgate demo",
        description="Whole canary rollouts of a digits model through Shadowgate, as Flagger and Argo Rollouts "
                    "drive it: a good canary promoted, a bad one rolled back (Flagger, Argo web, Argo job).",
        epilog="Logs, the service's analyses.yaml and its run store are in the run folder. "
               "Needs the Debian package `prometheus` (make demo installs it).")
    p.add_argument("--scenario", action="append", choices=SCENARIOS + ("all",), metavar="NAME",
                   help="good (Flagger, good canary), bad (Flagger, bad canary), argo (web provider, bad canary), "
                        "judge (job provider, bad canary), or all (default); repeat to pick several")
    p.add_argument("--interval", type=float, default=4.0, metavar="S",
                   help="Flagger's and Argo's analysis interval and Shadowgate's window, seconds (default 4)")
    p.add_argument("--port", type=int, default=None,
                   help="Shadowgate's port (default 8080, or any free port if 8080 is taken; 0: any free port)")
    p.add_argument("--prometheus-port", type=int, default=None, metavar="PORT",
                   help="Prometheus' port (default 9090, or any free port if taken; 0: any free port)")
    p.add_argument("--users", type=float, default=25.0, metavar="PAGES",
                   help="simulated users' page views per second, 20 digits each (default 25)")
    p.add_argument("--load-rate", type=float, default=None, metavar="RPS",
                   help="Shadowgate's load per version, requests/s (default: 300 requests per window, "
                        "enough for the P95, at least 50)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument("--exit", dest="keep_running", action="store_false",
                      help="stop everything at the end instead of keeping the service up for the reports")
    keep.add_argument("--keep-running", dest="keep_running", action="store_true",
                      help="keep the service up after the scenarios until Ctrl-C (the default)")
    p.set_defaults(keep_running=True)
    p.add_argument("--run-dir", default=str(REPO_ROOT / ".cache" / "demo-run"),
                   help="folder for logs, the service's configuration and store (emptied first; "
                        "default .cache/demo-run)")
    p.add_argument("--cache-dir", default=str(REPO_ROOT / ".cache"), help="where the demo models are cached")
    p.add_argument("--json", metavar="PATH", help="also write the outcomes as JSON to PATH")
    return p


def _quiet_native_stderr(log_path: Path) -> None:
    """Send what native code writes to file descriptor 2 (gRPC, absl) to a log; Python's stderr stays here."""
    terminal = os.dup(2)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = os.fdopen(terminal, "w", buffering=1)


MARKER = ".shadowgate-demo"


def _prepare_run_dir(run_dir: Path) -> str | None:
    """Empty `run_dir` for this run; refuse (returns why) a folder the demo did not make or one in use."""
    marker = run_dir / MARKER
    if run_dir.exists() and any(run_dir.iterdir()):
        if not marker.is_file():
            return f"{run_dir} is not empty and is not a demo run folder: give another --run-dir"
        try:
            pid = int(marker.read_text().strip() or 0)
        except ValueError:
            pid = 0
        if pid and pid != os.getpid() and Path(f"/proc/{pid}").exists():
            return f"another demo (pid {pid}) runs in {run_dir}: stop it, or give another --run-dir"
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{os.getpid()}\n")
    return None


def _raise_on(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    chosen = [s for s in SCENARIOS if not args.scenario or "all" in args.scenario or s in args.scenario]
    if args.interval < 1.0:
        print("shadowgate demo: --interval must be at least 1 s", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir).resolve()
    problem = _prepare_run_dir(run_dir)
    if problem:
        print(f"shadowgate demo: {problem}", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    _quiet_native_stderr(run_dir / "demo-native.log")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_on)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if started with SIGINT ignored

    from .procs import ChildDied, Supervisor
    from .stack import StartError

    sup = Supervisor(run_dir)
    demo = None
    try:
        from .runner import Demo

        demo = Demo(args, chosen, run_dir, sup)
        return demo.run()
    except KeyboardInterrupt:
        print("\nstopped (Ctrl-C)", flush=True)
        return demo.exit_code if demo is not None and demo.finished else 130
    except (ChildDied, StartError) as exc:
        print(f"\nshadowgate demo: {exc}", file=sys.stderr, flush=True)
        return 1
    except SystemExit as exc:  # SIGTERM or SIGHUP
        print("\nstopped", flush=True)
        return demo.exit_code if demo is not None and demo.finished else int(exc.code or 0)
    finally:
        if demo is not None:
            demo.close()
        t = time.monotonic()
        sup.stop_all()
        if demo is not None and demo.finished:
            print(f"every process the demo started is stopped ({time.monotonic() - t:.1f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
