"""`shadowgate report`: one run's report for a terminal, a script or an incident ticket.

    shadowgate report RUN [--format text|json|html] [--output FILE] [--config analyses.yaml | --store runs.db]

RUN is a run id (run-<16 hex digits>, as in every hook answer and on
/reports) or `latest`. The report is read from the store named by the
configuration's `server.store` (the data sets are not loaded) or given by
`--store`; the service need not run. text fits 100 columns; html is the
page the service shows, self-contained (links to the service when
`server.public_url` is set). Exit 0, 1 when there is no such run, 2 on a
usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..security import RUN_ID_RE


def _store_and_url(args: argparse.Namespace) -> tuple[str, str | None]:
    """The store's path and the public URL, from --store or from the configuration's server section."""
    if args.store:
        return args.store, args.public_url
    import yaml

    from ..config import Config, ConfigError, _first_error

    path = Path(args.config)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("", "the configuration must be a YAML mapping with 'analyses'")
    from pydantic import ValidationError

    try:
        server = Config.model_validate(data).server
    except ValidationError as err:
        raise _first_error(err) from None
    store = Path(server.store)
    if server.store != ":memory:" and not store.is_absolute():
        store = path.parent / store
    return str(store), args.public_url or server.public_url


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="shadowgate report", description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run id (run-<16 hex digits>) or 'latest'")
    ap.add_argument("--format", choices=("text", "json", "html"), default="text")
    ap.add_argument("--output", "-o", help="write to this file instead of standard output")
    ap.add_argument("--config", default="analyses.yaml", help="analyses.yaml (its server.store is read)")
    ap.add_argument("--store", help="the SQLite store itself, instead of --config")
    ap.add_argument("--public-url", help="the service's public URL, for links (default: server.public_url)")
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from ..config import ConfigError

    try:
        store, public_url = _store_and_url(args)
    except ConfigError as err:
        print(f"shadowgate report: configuration error: {err}", file=sys.stderr)
        return 2
    if store == ":memory:" or not Path(store).exists():
        print(f"shadowgate report: no store at {store}", file=sys.stderr)
        return 2
    from .model import build_report
    from .source import ReportSource

    source = ReportSource(path=store)
    try:
        run_id = args.run
        if run_id == "latest":
            newest = source.runs(limit=1)
            if not newest:
                print("shadowgate report: the store has no run", file=sys.stderr)
                return 1
            run_id = newest[0].id
        elif not RUN_ID_RE.match(run_id):
            print(f"shadowgate report: {run_id[:80]!r} is not a run id (run-<16 hex digits>, or latest)",
                  file=sys.stderr)
            return 2
        base = public_url.rstrip("/") if public_url else None
        rep = build_report(source, run_id, url=f"{base}/reports/{run_id}" if base else None)
    finally:
        source.close()
    if rep is None:
        print(f"shadowgate report: no run {run_id} in {store}", file=sys.stderr)
        return 1
    if args.format == "json":
        out = json.dumps(rep, indent=1) + "\n"
    elif args.format == "html":
        from .html import run_page

        out = run_page(rep, [], base=base)
    else:
        from .text import render

        out = render(rep)
    if args.output:
        Path(args.output).write_text(out, encoding="utf-8")
        print(f"report of {run_id} written to {args.output} ({len(out.encode()) / 1000:.0f} kB)", file=sys.stderr)
    else:
        sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
