"""`shadowgate plan`: what each analysis' gate can promise, before any rollout.

    shadowgate plan --config analyses.yaml [--analysis NAME] [--json]

For each analysis, with its load and probe rates, interval, golden-set size
and thresholds: the expected number of windows to a decision for a canary
exactly at `alert` and exactly at `rollback` (analyses.plan says how), and
whether the golden set can ever separate accuracy's alert from its rollback
at (alpha, beta). Exit 0, or 2 on a configuration error. The service logs
the same lines at start-up.
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import Analysis, ConfigError, load_config


def lines(analysis: Analysis) -> list[str]:
    """The plan of one analysis as readable lines (also logged by `shadowgate serve`)."""
    rows, acc = analysis.plan()
    cfg = analysis.judge_config
    out = [f"analysis {analysis.name}: alpha {cfg.alpha:g} (P(fail) at alert), beta {cfg.beta:g} "
           f"(P(pass) at rollback), windows of {analysis.interval_s:g} s"]
    for r in rows:
        wa = "-" if r.windows_at_alert is None else f"{r.windows_at_alert:.1f}"
        wr = "-" if r.windows_at_rollback is None else f"{r.windows_at_rollback:.1f}"
        out.append(f"  {r.check:<16} alert {r.alert:g}, rollback {r.rollback:g}, alpha {r.alpha:.2g}: "
                   f"~{wa} windows to pass at alert, ~{wr} to fail at rollback ({r.assumption})")
    for r in rows:
        if r.undecidable:
            out.append(f"  CANNOT DECIDE: {r.undecidable}: a run can never pass")
    if acc is not None:
        out.append(("  ok: " if acc.separable else "  WARNING: ") + acc.message)
    return out


def to_dict(analysis: Analysis) -> dict:
    rows, acc = analysis.plan()
    return {"analysis": analysis.name, "interval_s": analysis.interval_s, "checks": [r.to_dict() for r in rows],
            "golden": None if acc is None else dict(acc.__dict__)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="shadowgate plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="path to analyses.yaml")
    ap.add_argument("--analysis", help="only this analysis")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        settings = load_config(args.config)
    except ConfigError as err:
        print(f"shadowgate plan: configuration error: {err}", file=sys.stderr)
        return 2
    names = [args.analysis] if args.analysis else sorted(settings.analyses)
    for n in names:
        if n not in settings.analyses:
            print(f"shadowgate plan: unknown analysis {n!r}; configured: {', '.join(sorted(settings.analyses))}",
                  file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps([to_dict(settings.analyses[n]) for n in names], indent=2))
    else:
        for n in names:
            print("\n".join(lines(settings.analyses[n])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
