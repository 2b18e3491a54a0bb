"""`shadowgate loadtest`: open-loop load on a TF Serving endpoint, ghz-like summary.

    shadowgate loadtest --target HOST:PORT --model NAME --rps N --duration 30s
        [--label canary | --version N] [--rest] [--concurrency 256]
        [--warmup 2s] [--timeout 5s] [--steps 0.05,0.25,0.5] [--workers N]
        [--data FILE.npz | --input-shape 64 --input-dtype float32]
        [--shadow HOST:PORT --golden FILE.npz [--shadow-label stable]]
        [--output text|json] [--no-progress] [--max-error-ratio R]
        [--plot FILE.png]

Exit codes: 0 run done, 1 the error ratio exceeded --max-error-ratio,
2 bad options or an unreachable / wrong target (one clear line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import numpy as np

from loadtest.errors import ServingError
from loadtest.load import LoadGenerator
from loadtest.report import Progress, format_summary
from loadtest.schedule import Schedule, parse_duration, parse_rate
from loadtest.wire import Target, build_payloads, make_sender
from loadtest.workers import LoadSpec, WorkerError, run_spec, run_workers

PROG = "shadowgate loadtest"


class UsageError(Exception):
    """Bad options or data (the message names the option)."""


class TargetError(Exception):
    """The target is unreachable or is not the model server we expected."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Open-loop load on a TF Serving endpoint, "
                                "latency measured from the intended send time.")
    p.add_argument("--target", required=True, help="HOST:PORT (gRPC), or HOST:PORT / URL with --rest")
    p.add_argument("--model", required=True, help="model name")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--label", help="version label, e.g. canary")
    which.add_argument("--version", type=int, help="model version number")
    p.add_argument("--signature", default="serving_default", help="signature name")
    p.add_argument("--rest", action="store_true", help="use TF Serving's REST API instead of gRPC")
    p.add_argument("--rps", required=True, help="requests per second (the peak with --steps)")
    p.add_argument("--duration", default="30s", help="how long, e.g. 30s, 2m (default 30s)")
    p.add_argument("--steps", help="fractions of --rps run one after another over --duration, "
                   "e.g. 0.05,0.25,0.5")
    p.add_argument("--warmup", default="0s", help="load before the measured run, excluded (e.g. 2s)")
    p.add_argument("--timeout", default="5s", help="deadline of each request (default 5s)")
    p.add_argument("--concurrency", type=int, default=256, help="most requests in flight (default 256)")
    p.add_argument("--connections", type=int, default=None,
                   help="gRPC connections per worker (default 1) or REST pool size")
    p.add_argument("--workers", type=int, default=1, help="load processes (default 1)")
    p.add_argument("--data", help=".npz (array 'inputs') or .npy of input rows; sent in turn")
    p.add_argument("--input", dest="input_name", default=None, help="input name (default: from the signature)")
    p.add_argument("--input-shape", help="shape of one row, e.g. 64 or 28,28 (random data; skips metadata)")
    p.add_argument("--input-dtype", default="float32", help="dtype with --input-shape (default float32)")
    p.add_argument("--batch", type=int, default=1, help="rows per request (default 1)")
    p.add_argument("--shadow", metavar="HOST:PORT", help="also send shadow probe pairs: this endpoint "
                   "is the baseline (stable), --target the candidate (canary)")
    p.add_argument("--shadow-label", default=None, help="label of the baseline at --shadow (e.g. stable)")
    p.add_argument("--shadow-version", type=int, default=None, help="version of the baseline at --shadow")
    p.add_argument("--golden", help=".npz with 'inputs' and 'labels' for shadow probes")
    p.add_argument("--probe-rate", default="5", help="shadow pairs per second (default 5)")
    p.add_argument("--scores-key", default="probabilities", help="output holding class scores")
    p.add_argument("--output", choices=("text", "json"), default="text", help="summary format")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    p.add_argument("--max-error-ratio", type=float, default=None,
                   help="exit 1 when errors / requests exceed this ratio (0..1)")
    p.add_argument("--plot", metavar="FILE.png", default=None,
                   help="also write a PNG of latency by percentile (corrected and service time)")
    return p


# ---------------------------------------------------------------- inputs
def _load_rows(path: str, key: str = "inputs", field: str = "--data") -> np.ndarray:
    f = Path(path)
    if not f.is_file():
        raise UsageError(f"{field}: no such file {path!r}")
    try:
        data = np.load(f, allow_pickle=False)
    except Exception as exc:
        raise UsageError(f"{field}: cannot read {path!r} as .npy/.npz: {exc}") from None
    if isinstance(data, np.ndarray):
        return data
    if key in data.files:
        return data[key]
    if len(data.files) == 1:
        return data[data.files[0]]
    raise UsageError(f"{field}: {path!r} has no array {key!r} (has {', '.join(data.files)})")


def _metadata_input(args, target: Target, timeout_s: float) -> tuple[str, tuple[int, ...], str]:
    """(input name, row shape, numpy dtype) from the model's signature."""
    from loadtest.clients import ModelRef, make_client

    ref = ModelRef(args.model, args.version, args.label, args.signature)
    proto = "tfserving-rest" if args.rest else "tfserving-grpc"
    client = make_client(proto, args.target, ref, timeout_s=timeout_s)
    try:
        meta = client.metadata()
    except ServingError as exc:
        raise TargetError(_explain(exc, target)) from None
    finally:
        client.close()
    sig = meta.get("signatures", {}).get(args.signature)
    if not sig or not sig.get("inputs"):
        raise TargetError(f"{target.describe()}: no signature {args.signature!r} with inputs "
                          f"(has {', '.join(meta.get('signatures', {})) or 'none'})")
    inputs = sig["inputs"]
    name = args.input_name or next(iter(inputs))
    if name not in inputs:
        raise UsageError(f"--input: signature has no input {name!r} (has {', '.join(inputs)})")
    spec = inputs[name]
    shape = tuple(1 if (d is None or d < 0) else int(d) for d in (spec.get("shape") or [1])[1:])
    dtype = {"DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_INT32": "int32", "DT_INT64": "int64",
             "DT_UINT8": "uint8", "DT_BOOL": "bool"}.get(str(spec.get("dtype")), "float32")
    return name, shape, dtype


def _random_rows(shape: tuple[int, ...], dtype: str, n: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.random((n,) + shape).astype(dt)
    if dt.kind == "b":
        return rng.random((n,) + shape) < 0.5
    return rng.integers(0, 10, (n,) + shape).astype(dt)


def _inputs(args, target: Target, timeout_s: float) -> tuple[str, np.ndarray]:
    if args.data:
        rows = _load_rows(args.data)
        return args.input_name or "x", rows
    if args.input_shape:
        try:
            shape = tuple(int(s) for s in args.input_shape.split(",") if s.strip())
            np.dtype(args.input_dtype)
        except (ValueError, TypeError):
            raise UsageError(f"--input-shape/--input-dtype: expected e.g. 64 and float32, got "
                             f"{args.input_shape!r} {args.input_dtype!r}") from None
        return args.input_name or "x", _random_rows(shape, args.input_dtype)
    if args.golden:
        return args.input_name or "x", _load_rows(args.golden, field="--golden")
    name, shape, dtype = _metadata_input(args, target, timeout_s)
    return name, _random_rows(shape, dtype)


def _fatal(exc: ServingError) -> bool:
    """Whether a failed test request means a wrong or unreachable target.

    Other failures (the server answered with an error status) are what the
    load is there to measure, so the run goes ahead.
    """
    if exc.code in ("NOT_FOUND", "UNIMPLEMENTED", "INVALID_ARGUMENT", "FAILED_PRECONDITION"):
        return True
    if exc.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        if exc.http_status is not None:
            return False  # an HTTP answer: the server is there
        if exc.code == "DEADLINE_EXCEEDED" or (exc.target or "").startswith("http"):
            return True  # REST without any HTTP answer, or no answer in time
        text = exc.message.lower()
        return "connect" in text or "http1" in text  # gRPC: the channel never came up
    return False


def _explain(exc: ServingError, target: Target) -> str:
    where = target.describe()
    if exc.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        hint = ""
        if target.protocol == "grpc" and "http1" in exc.message.lower():
            hint = " (this looks like a REST port: add --rest)"
        elif target.protocol == "rest" and "grpc port" in exc.message.lower():
            hint = " (drop --rest for a gRPC port)"
        return f"cannot reach {where}: {exc.code}: {exc.message}{hint}"
    if exc.code == "NOT_FOUND" or exc.http_status == 404:
        return f"{where}: model or version not found ({exc.message})"
    if exc.code == "UNIMPLEMENTED":
        return f"{where} is not a TF Serving PredictionService ({exc.message})"
    return f"{where} refused a test request: {exc}"


async def preflight(target: Target, payload: bytes, timeout_s: float) -> None:
    """One request with the load's own bytes; raises TargetError with a readable reason."""
    sender = make_sender(target, [payload], timeout_s=timeout_s, concurrency=1)
    try:
        await asyncio.wait_for(sender(), timeout_s + 1.0)
    except ServingError as exc:
        if _fatal(exc):
            raise TargetError(_explain(exc, target)) from None
        # The server answered, with an error: that is what load is there to measure.
        print(f"{PROG}: warning: test request failed: {exc}", file=sys.stderr)
    except (asyncio.TimeoutError, TimeoutError):
        raise TargetError(f"cannot reach {target.describe()}: no answer within {timeout_s:g} s") from None
    finally:
        await sender.close()


# ---------------------------------------------------------------- run
async def _probe_setup(args, timeout_s: float):
    from loadtest.clients import ModelRef, make_client
    from loadtest.shadow import ShadowProber

    if not args.golden:
        raise UsageError("--golden: shadow probes need a golden set (.npz with inputs and labels)")
    g = Path(args.golden)
    if not g.is_file():
        raise UsageError(f"--golden: no such file {args.golden!r}")
    with np.load(g, allow_pickle=False) as data:
        if "inputs" not in data.files or "labels" not in data.files:
            raise UsageError(f"--golden: {args.golden!r} needs arrays 'inputs' and 'labels'")
        inputs, labels = data["inputs"], data["labels"]
    proto = "tfserving-rest" if args.rest else "tfserving-grpc"
    stable = make_client(proto, args.shadow, ModelRef(args.model, args.shadow_version, args.shadow_label,
                                                      args.signature), timeout_s, asynchronous=True)
    canary = make_client(proto, args.target, ModelRef(args.model, args.version, args.label, args.signature),
                         timeout_s, asynchronous=True)
    rate = parse_rate(args.probe_rate, field="--probe-rate")
    prober = ShadowProber(stable, canary, inputs, labels, input_name=args.input_name or "x",
                          scores_key=args.scores_key, rate=rate, timeout_s=timeout_s)
    return prober, (stable, canary)


async def _run(args, spec: LoadSpec, progress: Progress):
    loop = asyncio.get_running_loop()
    total_s = spec.warmup_s + spec.schedule.duration_s
    started = loop.time()
    probe_task = probe_stop = clients = None
    if args.shadow:
        prober, clients = await _probe_setup(args, spec.timeout_s)
        probe_stop = asyncio.Event()
        probe_task = loop.create_task(prober.run(probe_stop))
    try:
        if args.workers > 1:
            counters: dict = {}

            def on_progress(c: dict) -> None:
                counters.update(c)

            fut = loop.run_in_executor(None, lambda: run_workers(spec, args.workers, progress=on_progress))
            first = None
            while not fut.done():
                if counters and first is None:
                    first = loop.time() - 0.5  # the first report comes one interval in
                if first is not None:
                    progress.update(loop.time() - first, counters)
                await asyncio.wait({fut}, timeout=0.5)
            stats = fut.result()
        else:
            box: list[LoadGenerator] = []
            task = loop.create_task(run_spec(spec, on_generator=box.append))
            while not task.done():
                if box:
                    progress.update(loop.time() - started, box[0].progress())
                await asyncio.wait({task}, timeout=0.5)
            stats = task.result()
        progress.update(total_s, stats.to_dict())
    finally:
        probes = None
        if probe_task is not None:
            probe_stop.set()
            probes = await probe_task
            for c in clients:
                await c.close()
    return stats, probes


def _check_plot_path(path: str) -> None:
    """Refuse a --plot path that cannot be written before the run, not after it."""
    f = Path(path)
    if f.suffix.lower() != ".png":
        raise UsageError(f"--plot: expected a .png file name, got {path!r}")
    if f.is_dir():
        raise UsageError(f"--plot: {path!r} is a directory")
    parent = f.parent if str(f.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"--plot: no such directory {str(parent)!r}")
    if not os.access(parent, os.W_OK) or (f.exists() and not os.access(f, os.W_OK)):
        raise UsageError(f"--plot: cannot write {path!r} (permission denied)")


def _write_plot(path: str, stats, target: Target, schedule: Schedule) -> None:
    from loadtest.plot import plot_latency

    name = target.label or (f"version {target.version}" if target.version is not None else target.model)
    title = (f"Latency by percentile: {target.describe()}\n{schedule.describe()}: "
             f"{stats.ok} OK of {stats.intended} intended, {stats.errors} errors, {stats.late} late")
    if stats.corrected.count == 0:
        raise UsageError(f"--plot: no successful requests, nothing to plot ({path!r} not written)")
    try:
        plot_latency({name: stats}, path, title=title)
    except OSError as exc:
        raise UsageError(f"--plot: cannot write {path!r}: {exc.strerror or exc}") from None
    print(f"{PROG}: latency plot written to {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `shadowgate loadtest`; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return _main(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except TargetError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except WorkerError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _main(args) -> int:
    try:
        duration = parse_duration(args.duration, field="--duration")
        warmup = parse_duration(args.warmup, field="--warmup")
        timeout = parse_duration(args.timeout, field="--timeout")
        rps = parse_rate(args.rps, field="--rps")
        if duration <= 0:
            raise ValueError("--duration: must be > 0")
        if timeout <= 0:
            raise ValueError("--timeout: must be > 0")
        if args.concurrency < 1:
            raise ValueError(f"--concurrency: must be >= 1, got {args.concurrency}")
        if args.workers < 1 or args.workers > (os.cpu_count() or 1) * 4:
            raise ValueError(f"--workers: must be between 1 and {(os.cpu_count() or 1) * 4}, got {args.workers}")
        if args.batch < 1:
            raise ValueError(f"--batch: must be >= 1, got {args.batch}")
        if args.max_error_ratio is not None and not 0 <= args.max_error_ratio <= 1:
            raise ValueError("--max-error-ratio: must be within 0..1")
        if args.steps:
            try:
                fractions = tuple(float(f) for f in args.steps.split(",") if f.strip())
            except ValueError:
                raise ValueError(f"--steps: expected fractions like 0.05,0.25,0.5, got {args.steps!r}") from None
            if not fractions or any(f < 0 for f in fractions):
                raise ValueError(f"--steps: fractions must be >= 0, got {args.steps!r}")
            schedule = Schedule.steps(rps, fractions, duration / len(fractions))
        else:
            schedule = Schedule.constant(rps, duration)
        target = Target(args.target, args.model, "rest" if args.rest else "grpc", args.version,
                        args.label, args.signature)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.shadow and not args.golden:
        raise UsageError("--golden: shadow probes need a golden set (.npz with inputs and labels)")
    if args.plot is not None:
        _check_plot_path(args.plot)

    name, rows = _inputs(args, target, timeout)
    try:
        payloads = build_payloads(target, rows, name, batch=args.batch)
    except ValueError as exc:
        raise UsageError(f"--data: {exc}") from None
    asyncio.run(preflight(target, payloads[0], timeout))

    spec = LoadSpec(target=target, payloads=tuple(payloads), schedule=schedule,
                    concurrency=args.concurrency, warmup_s=warmup, timeout_s=timeout,
                    connections=args.connections)
    show = not args.no_progress and sys.stderr.isatty()
    progress = Progress(warmup + schedule.duration_s, enabled=show)
    try:
        stats, probes = asyncio.run(_run(args, spec, progress))
    finally:
        progress.close()

    if args.output == "json":
        doc = {"target": target.describe(), "schedule": schedule.describe(), "warmup_s": warmup,
               "workers": args.workers, "concurrency": args.concurrency, "load": stats.to_dict()}
        if probes is not None:
            doc["shadow"] = probes.to_dict()
        print(json.dumps(doc, indent=2))
    else:
        print(format_summary(stats, target=target.describe(), schedule=schedule.describe(),
                             warmup_s=warmup, probes=probes), end="")
    if args.plot is not None:
        _write_plot(args.plot, stats, target, schedule)
    if args.max_error_ratio is not None and stats.error_ratio > args.max_error_ratio:
        print(f"{PROG}: error ratio {stats.error_ratio * 100:.2f} % is above "
              f"--max-error-ratio {args.max_error_ratio * 100:.2f} %", file=sys.stderr)
        return 1
    return 0


__all__ = ["main", "build_parser", "preflight"]


if __name__ == "__main__":
    sys.exit(main())
