"""`shadowgate modelserver`: a stand-in TF Serving with fault injection.

Flags follow TF Serving's where they exist (`--port`, `--rest_api_port`,
`--model_name`, `--model_base_path`, `--model_config_file`); the stand-in's
own flags use dashes. Differences from TF Serving:

- port 0 means "any free port" (TF Serving: 0 disables REST); the ready
  line prints the ports actually bound;
- `--host` (default 127.0.0.1) chooses the address to bind;
- `--reuse_port` binds both ports with SO_REUSEPORT: several processes
  started with it on one `--port` serve one address, and the kernel spreads
  new connections over them (as pods behind one Service). Without it a
  taken port fails, as in TF Serving;
- `--model_base_path` serves the latest version, as TF Serving does, or all
  numbered versions with `--serve_all_versions`;
- problems in the flags or the config file end the process at once with
  one line on stderr and exit code 2 (TF Serving would keep retrying).

When both ports are bound it prints one line to stdout, which tests and
scripts wait for:

    modelserver ready grpc=127.0.0.1:8500 rest=127.0.0.1:8501

Fault injection (see modelserver/faults.py) is set with the flags below and
changed while running with `GET|PUT|DELETE /v1/_faults` on the REST port,
e.g. `curl -X PUT -d '{"latency_s": 0.05, "labels": ["canary"]}'
http://127.0.0.1:8501/v1/_faults`.

SIGTERM or SIGINT stops the server (requests in flight get 1 s to finish).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shadowgate modelserver",
        description="Stand-in TF Serving: serve SavedModels over TF Serving's gRPC and REST "
                    "APIs, with fault injection (latency, errors, stalls).",
        epilog="Faults can be changed while running: GET/PUT/DELETE /v1/_faults on the REST "
               "port with a JSON object of the fields latency_s, latency_sigma, error_ratio, "
               "error_code, stall_for_s, stall_every_s, models, versions, labels, seed.",
    )
    g = p.add_argument_group("serving (as TF Serving)")
    g.add_argument("--port", type=int, default=8500, help="gRPC port (0: any free port; default 8500)")
    g.add_argument("--rest_api_port", type=int, default=8501,
                   help="REST port (0: any free port; default 8501)")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    g.add_argument("--reuse_port", "--reuse-port", action="store_true",
                   help="bind both ports with SO_REUSEPORT: several processes started with it "
                        "share one port and the kernel spreads new connections over them "
                        "(default off: a taken port fails)")
    g.add_argument("--model_name", help="name of the single model to serve")
    g.add_argument("--model_base_path", help="folder with numbered SavedModel versions")
    g.add_argument("--model_config_file", help="ModelServerConfig in protobuf text format")
    g.add_argument("--serve_all_versions", action="store_true",
                   help="with --model_base_path: serve every numbered version, not only the latest")
    g.add_argument("--workers", type=int, default=4,
                   help="threads running the models (default 4)")

    f = p.add_argument_group("fault injection (Predict only; seconds, ratios 0..1)")
    f.add_argument("--faults", metavar="JSON", help="all faults as one JSON object "
                   "(the flags below override its fields)")
    f.add_argument("--latency", type=float, metavar="S",
                   help="extra delay per request in seconds (median when --latency-sigma > 0)")
    f.add_argument("--latency-sigma", type=float, metavar="SIGMA",
                   help="lognormal shape of the delay (0: fixed delay)")
    f.add_argument("--error-ratio", type=float, metavar="R", help="share of requests to fail (0..1)")
    f.add_argument("--error-code", metavar="CODE",
                   help="gRPC status name of injected errors (default UNAVAILABLE; REST gets "
                        "TF Serving's HTTP code for it)")
    f.add_argument("--stall-for", type=float, metavar="S",
                   help="stall: no answers for S seconds from start (and from the start of "
                        "each --stall-every period); requests arriving meanwhile wait for its end")
    f.add_argument("--stall-every", type=float, metavar="P",
                   help="repeat the stall every P seconds (P > --stall-for)")
    f.add_argument("--fault-models", metavar="NAMES", help="comma-separated models faults apply to")
    f.add_argument("--fault-versions", metavar="N,N", help="comma-separated versions faults apply to")
    f.add_argument("--fault-labels", metavar="L,L", help="comma-separated labels faults apply to")
    f.add_argument("--fault-seed", type=int, metavar="SEED", help="seed of the random draws")
    return p


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def faults_from_args(args: argparse.Namespace) -> dict:
    """The fault fields given on the command line, as a dict for Faults.from_dict."""
    from modelserver.faults import FaultError

    d: dict = {}
    if args.faults:
        try:
            d = json.loads(args.faults)
        except ValueError as e:
            raise FaultError(f"--faults is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise FaultError("--faults must be a JSON object")
    flags = {
        "latency_s": args.latency, "latency_sigma": args.latency_sigma,
        "error_ratio": args.error_ratio, "error_code": args.error_code,
        "stall_for_s": args.stall_for, "stall_every_s": args.stall_every,
        "seed": args.fault_seed,
        "models": _csv(args.fault_models) if args.fault_models else None,
        "versions": _csv(args.fault_versions) if args.fault_versions else None,
        "labels": _csv(args.fault_labels) if args.fault_labels else None,
    }
    d.update({k: v for k, v in flags.items() if v is not None})
    return d


def _fail(message: str) -> int:
    print(f"modelserver: error: {message}", file=sys.stderr, flush=True)
    return EXIT_CONFIG


async def _serve(server, stop: asyncio.Event) -> None:
    await server.start()
    print(f"modelserver ready grpc={server.grpc_target} rest={server.host}:{server.rest_port}",
          flush=True)
    await stop.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in until SIGTERM/SIGINT. Returns 0, or 2 for bad flags or config."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from modelserver.config import ConfigError, load_config_file, single_model
    from modelserver.faults import FaultError, FaultInjector, Faults

    try:
        faults = Faults.from_dict(faults_from_args(args))
    except FaultError as e:
        return _fail(f"fault flags: {e}")
    for flag, port in (("--port", args.port), ("--rest_api_port", args.rest_api_port)):
        if not 0 <= port <= 65535:
            return _fail(f"{flag} must be 0..65535, got {port}")
    if args.workers < 1:
        return _fail(f"--workers must be >= 1, got {args.workers}")
    try:
        if args.model_config_file:
            if args.model_name or args.model_base_path:
                return _fail("give --model_config_file or --model_name/--model_base_path, not both")
            configs = load_config_file(args.model_config_file)
        elif args.model_base_path:
            configs = single_model(args.model_name or "default", args.model_base_path,
                                   all_versions=args.serve_all_versions)
        else:
            return _fail("no model: give --model_config_file, or --model_name and --model_base_path")
    except ConfigError as e:
        return _fail(str(e))

    from modelserver.core import ServingCore
    from modelserver.metrics import Metrics
    from modelserver.models import LoadError, ModelRegistry
    from modelserver.server import BindError, ModelServer

    try:
        registry = ModelRegistry.load(configs)
    except LoadError as e:
        return _fail(str(e))
    for m in registry.models.values():
        print(f"modelserver: model {m.name!r} versions {sorted(m.versions)} "
              f"labels {m.labels or {}} from {m.config.base_path}", file=sys.stderr, flush=True)

    core = ServingCore(registry, FaultInjector(faults), Metrics(), workers=args.workers)
    server = ModelServer(core, host=args.host, grpc_port=args.port, rest_port=args.rest_api_port,
                         reuse_port=args.reuse_port)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await _serve(server, stop)

    try:
        asyncio.run(run())
    except BindError as e:
        return _fail(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
