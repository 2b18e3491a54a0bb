"""The `shadowgate` command: one entry point, one subcommand per job.

Each subcommand's module is imported only when it runs, so `shadowgate
loadtest` does not pay for Flask and `shadowgate serve` does not pay for
TensorFlow.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, help). Each module has `main(argv: list[str]) -> int`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("webhook.serve", "run the webhook service (Flagger and Argo hooks) from analyses.yaml"),
    "judge": ("webhook.judge", "run one bounded analysis (Argo job provider): exit 0 pass, 1 fail, 2 error"),
    "report": ("webhook.reporting.cli", "one run's report: text (100 columns), json or html, from the store"),
    "plan": ("webhook.plan", "what each analysis' gate can promise: windows to a decision, golden-set size"),
    "loadtest": ("loadtest.cli", "open-loop load on a TF Serving endpoint, with a ghz-like summary"),
    "modelserver": ("modelserver.cli", "stand-in TF Serving: serve SavedModels over gRPC and REST"),
    "demo": ("demo.__main__", "the demo: stable and canary stand-ins, probes, verdicts"),
}


def _usage() -> str:
    lines = ["usage: shadowgate <command> [options]", "", "commands:"]
    for name, (_, text) in SUBCOMMANDS.items():
        lines.append(f"  {name:<12} {text}")
    lines.append("")
    lines.append("Run `shadowgate <command> --help` for a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"shadowgate: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
