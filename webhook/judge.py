"""`shadowgate judge`: one bounded analysis, for Argo Rollouts' job provider.

The canary is checked (loaded, same signature as stable), the whole golden
set is probed on both versions, then load and shadow probes run, a window
every `--interval`, each one an update of the same sequential gate the
service uses (analyses.gate). The job stops as soon as the gate decides, or
at `--duration`. The gate's guarantees hold whenever it stops, so a longer
`--duration` can only add evidence: a canary that fails at 6 s also fails
at 2 min.

Argo reads only the Job's exit code, so the code is the whole answer:
0 the canary passed, 1 it failed (an unreachable canary fails), 2 no
decision (bad configuration or arguments, or not enough evidence by
`--duration`: the report says what is missing). The readable report goes to stdout (the Job's log), a
progress bar to stderr, and `--json` writes the verdict for other tools.

    shadowgate judge --config analyses.yaml --analysis digits --duration 2m
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, TextIO

from .config import Analysis, ConfigError, load_config
from .verdicts import json_safe

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def _duration(text: str) -> float:
    from loadtest.schedule import parse_duration

    try:
        value = parse_duration(text, field="--duration")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("--duration: must be > 0")
    return value


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="shadowgate judge",
                                 description="Run one bounded canary analysis; exit 0 pass, 1 fail, 2 error.")
    ap.add_argument("--config", required=True, help="path to analyses.yaml")
    ap.add_argument("--analysis", required=True, help="name of the analysis in the config")
    ap.add_argument("--duration", type=_duration, default=120.0, help="how long to measure, e.g. 90s, 2m (default 2m)")
    ap.add_argument("--interval", type=_duration, help="window length (default: the analysis' interval)")
    ap.add_argument("--json", dest="json_path", help="also write the verdict as JSON to this file")
    bar = ap.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", help="progress bar on stderr even when it is not a terminal")
    bar.add_argument("--no-progress", action="store_true", help="no progress bar (default when stderr is not a terminal)")
    return ap


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if unit in ("s", "seconds"):
        return f"{v * 1000:.1f} ms"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def report(verdict: Any, analysis: str, windows: int, duration_s: float, out: TextIO) -> None:
    """A readable report: the decision line, then each check's figures and reason."""
    print(f"analysis {analysis}: {verdict.outcome.upper()} (phase {verdict.phase}) over {windows} window(s), "
          f"{duration_s:.0f} s", file=out)
    print(f"reason: {verdict.reason}", file=out)
    for w in verdict.warnings:
        print(f"warning: {w}", file=out)
    if not verdict.checks:
        return
    rows = [("check", "verdict", "estimate", "alert", "rollback", "evidence", "fails at", "passes at")]
    for c in verdict.checks:
        if c.verdict == "info":
            continue
        rows.append((c.name + (" (critical)" if c.critical else ""), c.verdict, _fmt(c.estimate),
                     _fmt(c.alert), _fmt(c.rollback), f"{c.fail_evidence:.1f}", _fmt(c.fail_at), _fmt(c.pass_at)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip(), file=out)
    for c in verdict.checks:
        if c.reason:
            print(f"  - {c.name}: {c.reason}", file=out)


async def _measure(analysis: Analysis, duration_s: float, interval_s: float, progress: bool):
    """Golden check, then load and probes until the gate decides or `duration_s` passes.

    Returns (gate state, windows, canary check)."""
    from .ctr import CtrSource
    from .measure import LiveMeasurement

    m = LiveMeasurement(analysis)
    ok, reason, culprit = await m.check_canary()
    gate = analysis.gate
    state = gate.new_state()
    if not ok:
        return state, 0, (ok, reason, culprit)
    ctr = None
    if analysis.config.ctr is not None:
        ctr = CtrSource(analysis.config.ctr, analysis.config.stable, analysis.config.canary)
    prom = None
    if analysis.config.prometheus is not None and analysis.prometheus:
        from .promchecks import source_for

        prom = source_for(analysis)  # no rollout here: a check using {namespace} or {name} gets no data
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(round(duration_s)), unit="s", file=sys.stderr, desc=f"judge {analysis.name}",
                   bar_format="{desc}: {bar} {n_fmt}/{total_fmt} s {postfix}")
    windows = 0
    loop = asyncio.get_running_loop()
    # The whole golden set first, before any load (as pre-rollout does).
    golden = await m.golden_check()
    golden.reference_inputs = analysis.reference_inputs
    gate.update(state, golden)
    windows += 1
    if state.outcome != "continue":
        return state, windows, (True, reason, None)
    await m.start()
    t0 = loop.time()
    w_start = t0
    probes = len(golden.probes)
    try:
        while True:
            now = loop.time()
            if now - t0 >= duration_s:
                break
            await asyncio.sleep(min(1.0, duration_s - (now - t0)))
            now = loop.time()
            if now - w_start >= interval_s or now - t0 >= duration_s:
                w = m.take_window()
                if ctr is not None:
                    w.ctr = await loop.run_in_executor(None, ctr.fetch, now - w_start)
                if prom is not None:
                    w.prometheus = await loop.run_in_executor(None, prom.fetch, now - w_start, time.time())
                w.reference_inputs = analysis.reference_inputs
                gate.update(state, w)  # constant cost: the state holds sums, not windows
                windows += 1
                probes += len(w.probes)
                w_start = now
                if state.outcome != "continue":
                    break
            if bar is not None:
                bar.n = min(int(now - t0), bar.total)
                bar.set_postfix_str(f"windows {windows}, {state.outcome}, probes {probes + m.pending_probes()}")
    finally:
        await m.stop()
        if ctr is not None:
            ctr.close()
        if prom is not None:
            prom.close()
        if bar is not None:
            bar.n = bar.total
            bar.close()
    return state, windows, (True, reason, None)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    try:
        settings = load_config(args.config)
    except ConfigError as err:
        from .redact import scrub

        print(f"shadowgate judge: configuration error: {scrub(err, limit=None)}", file=sys.stderr)
        return EXIT_ERROR
    analysis = settings.analyses.get(args.analysis)
    if analysis is None:
        print(f"shadowgate judge: unknown analysis {args.analysis!r}; configured: "
              f"{', '.join(sorted(settings.analyses))}", file=sys.stderr)
        return EXIT_ERROR
    interval = args.interval or min(analysis.interval_s, args.duration)

    started = time.monotonic()
    state, windows, (ok, reason, culprit) = asyncio.run(
        _measure(analysis, args.duration, interval,
                 progress=args.progress or (not args.no_progress and sys.stderr.isatty())))
    if not ok:
        print(f"analysis {analysis.name}: {'FAIL' if culprit == 'canary' else 'NO VERDICT'}", file=sys.stdout)
        print(f"reason: {reason}", file=sys.stdout)
        _write_json(args.json_path, {"outcome": "fail" if culprit == "canary" else "nodata", "passed": False,
                                     "reason": reason})
        return EXIT_FAIL if culprit == "canary" else EXIT_ERROR
    verdict = analysis.gate.verdict(state)
    report(verdict, analysis.name, windows, time.monotonic() - started, sys.stdout)
    _write_json(args.json_path, verdict.to_dict())
    return {"pass": EXIT_PASS, "fail": EXIT_FAIL}.get(verdict.outcome, EXIT_ERROR)


def _write_json(path: str | None, data: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(json_safe(data), f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
