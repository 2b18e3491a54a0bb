"""`shadowgate serve --config analyses.yaml`: the webhook service, one command.

ONE process: the gate state of a run (its windows, verdicts and the
background load) lives in the process that runs its session; with several
worker processes each would hold part of a run and give its own answers, as
Flagger's load tester does with several replicas. The store (SQLite) makes a
restart lose nothing: a run found there with no live session resumes on its
next hook call.

The HTTP front (webhook/front.py) reads whole requests on an asyncio loop
and only then hands them to `server.threads` app threads, so clients that
never finish their headers or body cannot starve the hooks (they did with
gunicorn's gthread workers: 16 slow connections stopped every answer).
SIGTERM or SIGINT stops it gracefully: requests in flight finish, then the
sessions stop (their runs resume after the restart).

`--dev` uses Flask's own server instead (for local trials only).
Exit codes: 0 clean stop, 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .config import ConfigError, Settings, load_config
from .redact import install_log_filter, scrub
from .store import StoreUnavailable

log = logging.getLogger("shadowgate")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="shadowgate serve",
                                 description="Serve the Flagger and Argo Rollouts webhooks from analyses.yaml.")
    ap.add_argument("--config", required=True, help="path to analyses.yaml")
    ap.add_argument("--bind", help="host:port to listen on (default: server.bind in the config)")
    ap.add_argument("--threads", type=int, help="request threads (default: server.threads)")
    ap.add_argument("--dev", action="store_true", help="Flask's development server instead of the front")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return ap


def _build(settings: Settings):
    from .app import create_app

    # Import the load and probe machinery now (it pulls in the TF Serving
    # stubs, seconds of work) so the first hook call does not pay for it.
    from . import measure  # noqa: F401
    import loadtest.clients  # noqa: F401

    return create_app(settings)


def limits(settings: Settings, threads: int):
    """The front's limits from `server:` in analyses.yaml."""
    from .front import FrontLimits

    srv = settings.server
    return FrontLimits(threads=threads, read_timeout_s=srv.read_timeout_s, keepalive_s=srv.keepalive_s,
                       max_connections=srv.max_connections, max_queue=srv.max_queue,
                       queue_timeout_s=srv.queue_timeout_s, max_body_bytes=srv.max_body_bytes,
                       graceful_timeout_s=srv.timeout_s, max_hook_queue=srv.max_hook_queue,
                       hook_queue_timeout_s=srv.hook_queue_timeout(),
                       hook_answer_s=min(srv.hook_deadline_s + 0.5, 9.5))


def _front(settings: Settings, bind: str, threads: int) -> int:
    from .front import Front

    app = _build(settings)
    svc = app.extensions["shadowgate"]
    try:
        from .busy import BusyAnswers

        Front(app, limits(settings, threads), registry=svc.metrics.registry, busy=BusyAnswers(svc)).run(bind)
    finally:
        # Stops load and closes each run's open window; runs stay
        # "running" in the store and resume after the restart.
        svc.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Configured URLs' credentials and queries never reach the log, not even in a library's DEBUG line.
    install_log_filter()
    try:
        settings = load_config(args.config)
    except ConfigError as err:
        print(f"shadowgate serve: configuration error: {scrub(err, limit=None)}", file=sys.stderr)
        return 2
    from .plan import lines as plan_lines

    for analysis in settings.analyses.values():  # what each gate can promise, said once at start
        for line in plan_lines(analysis):
            (log.warning if "WARNING" in line else log.info)("plan: %s", line.strip())
    bind = args.bind or settings.server.bind
    threads = args.threads or settings.server.threads
    try:
        return _serve(args, settings, bind, threads)
    except StoreUnavailable as err:  # e.g. PostgreSQL not reachable yet: one line, the pod restarts
        print(f"shadowgate serve: {scrub(err, limit=None)}", file=sys.stderr)
        return 3


def _serve(args: argparse.Namespace, settings: Settings, bind: str, threads: int) -> int:
    if args.dev:
        host, _, port = bind.rpartition(":")
        app = _build(settings)
        try:
            app.run(host=host or "127.0.0.1", port=int(port), threaded=True, use_reloader=False)
        finally:
            app.extensions["shadowgate"].close()
        return 0
    try:
        return _front(settings, bind, threads)
    except OSError as exc:  # e.g. the port is taken
        print(f"shadowgate serve: cannot listen on {bind}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
