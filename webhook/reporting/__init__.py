"""Analysis reports for the SRE who reviews a rollout: why a canary was promoted or rolled back.

One report, three forms, built from the store only (a finished run needs no
live session, and `shadowgate report` needs no running service):

- `source.py` reads runs, windows and timelines from the store without
  blocking the service's writer (its own read-only SQLite connection);
- `model.py` turns them into the report: the decision in words, every
  check's evidence over the windows, latency, load, errors, accuracy,
  prediction scores and the timeline (a plain JSON-safe dict);
- `svg.py` draws charts as inline SVG (no JavaScript, no asset from the
  internet); `html.py` and `text.py` render the page and the terminal form;
- `drift.py` serves evidently's drift report of a run;
- `cli.py` is `shadowgate report`.

The web routes are in `webhook/reports.py`.
"""
