"""`shadowgate serve --config analyses.yaml`: the webhook service, one command.

Runs gunicorn in-process (gunicorn.app.base.BaseApplication) with ONE worker
process and `server.threads` threads (gthread). One worker because the gate
state of a run (its windows, verdicts and the background load) lives in the
process that runs its session: with several workers each would hold part of
a run and give its own answers, as Flagger's load tester does with several
replicas. Threads keep hooks answering while others wait on a live check.
The store (SQLite) makes a restart lose nothing: a run found there with no
live session resumes on its next hook call.

`--dev` uses Flask's own server instead (no gunicorn; for local trials).
Exit codes: 0 clean stop, 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .config import ConfigError, Settings, load_config

log = logging.getLogger("shadowgate")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="shadowgate serve",
                                 description="Serve the Flagger and Argo Rollouts webhooks from analyses.yaml.")
    ap.add_argument("--config", required=True, help="path to analyses.yaml")
    ap.add_argument("--bind", help="host:port to listen on (default: server.bind in the config)")
    ap.add_argument("--threads", type=int, help="request threads (default: server.threads)")
    ap.add_argument("--dev", action="store_true", help="Flask's development server instead of gunicorn")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return ap


def _build(settings: Settings):
    from .app import create_app

    # Import the load and probe machinery now (it pulls in the TF Serving
    # stubs, seconds of work) so the first hook call does not pay for it.
    from . import measure  # noqa: F401
    import loadtest.clients  # noqa: F401

    return create_app(settings)


def _gunicorn(settings: Settings, bind: str, threads: int, level: str) -> int:
    from gunicorn.app.base import BaseApplication

    holder: dict = {}

    def worker_exit(server, worker) -> None:
        app = holder.get("app")
        if app is not None:
            # Stops load and closes each run's open window; runs stay
            # "running" in the store and resume after the restart.
            app.extensions["shadowgate"].close()

    class Application(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": bind,
                "workers": 1,
                "worker_class": "gthread",
                "threads": threads,
                "timeout": int(max(settings.server.timeout_s, 10)),
                "graceful_timeout": 15,
                # Controllers call every interval (10 s and more) on kept-alive
                # connections; closing them sooner makes a caller race the close.
                "keepalive": 75,
                "loglevel": level,
                "errorlog": "-",
                "proc_name": "shadowgate",
                "worker_exit": worker_exit,
            }
            for k, v in options.items():
                self.cfg.set(k, v)

        def load(self):
            # Called in the worker, after the fork: threads and the database
            # connection belong to the process that uses them.
            holder["app"] = _build(settings)
            return holder["app"]

    Application().run()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_config(args.config)
    except ConfigError as err:
        print(f"shadowgate serve: configuration error: {err}", file=sys.stderr)
        return 2
    bind = args.bind or settings.server.bind
    threads = args.threads or settings.server.threads
    if args.dev:
        host, _, port = bind.rpartition(":")
        app = _build(settings)
        try:
            app.run(host=host or "127.0.0.1", port=int(port), threaded=True, use_reloader=False)
        finally:
            app.extensions["shadowgate"].close()
        return 0
    return _gunicorn(settings, bind, threads, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
