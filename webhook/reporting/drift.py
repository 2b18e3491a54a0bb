"""evidently's drift report of a run (analyses.drift.drift_report_html), built when first opened.

Two kinds:
- "inputs": the run's probe inputs against the analysis' reference set
  (what the gate's input-drift report compares);
- "predictions": the canary's class scores against stable's on the same
  inputs (prediction drift).

The data are the newest stored windows' probes, up to `MAX_ROWS` rows.
evidently takes a few seconds and about 4 MB of HTML per report, so the
newest few are kept in memory, keyed by the run's newest window: a report
is rebuilt only when the run has new evidence. evidently's page needs
JavaScript (inlined in the file: it loads nothing from the internet); the
report page itself does not.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .model import _npz
from .source import ReportSource

KINDS = {
    "inputs": "input drift (probe inputs vs the reference set)",
    "predictions": "prediction drift (canary vs stable scores on the same inputs)",
}
MAX_ROWS = 5000
MAX_WINDOWS = 50


class NoDriftData(Exception):
    """This run has nothing to build the asked report from (the message says why)."""


def available() -> bool:
    """evidently is installed (the runtime image leaves it out: the `drift-report` extra brings it)."""
    import importlib.util

    return importlib.util.find_spec("evidently") is not None


def _collect(source: ReportSource, run_id: str, kind: str) -> tuple[int, np.ndarray | None, np.ndarray]:
    """(newest window, stable scores or None, canary scores or inputs) from the newest windows."""
    index = [w for w in source.window_index(run_id) if w.has_data]
    if not index:
        raise NoDriftData("no window with raw data (none yet, or compacted by retention)")
    newest = index[-1].seq
    keys = ("inputs",) if kind == "inputs" else ("stable_scores", "canary_scores")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    rows = 0
    picked = [w.seq for w in index[-MAX_WINDOWS:]][::-1]
    stored = source.windows(run_id, picked, with_data=True)
    for seq in picked:
        data = (stored.get(seq) or (None, None))[1]
        if data is None:
            continue
        z = _npz(data, keys)
        if not all(k in z and z[k].ndim == 2 and z[k].shape[0] for k in keys):
            continue
        for k in keys:
            parts[k].append(np.asarray(z[k], dtype=np.float64))
        rows += z[keys[0]].shape[0]
        if rows >= MAX_ROWS:
            break
    if not rows:
        raise NoDriftData("the probes carry no inputs" if kind == "inputs" else "the probes carry no class scores")
    joined = {k: np.concatenate(v)[:MAX_ROWS] for k, v in parts.items()}
    if kind == "inputs":
        # Probes repeat golden rows; each distinct input once, as the gate's input-drift check counts them.
        return newest, None, np.unique(joined["inputs"], axis=0)
    s, c = joined["stable_scores"], joined["canary_scores"]
    ok = np.isfinite(s).all(axis=1) & np.isfinite(c).all(axis=1)  # rows a version failed are NaN
    if not ok.any():
        raise NoDriftData("no probe answered by both versions")
    return newest, s[ok], c[ok]


class DriftReports:
    """Builds and keeps the newest `max_entries` evidently reports (HTML bytes)."""

    def __init__(self, max_entries: int = 4) -> None:
        self.max_entries = max_entries
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[tuple, threading.Lock] = {}

    def html(self, source: ReportSource, run_id: str, kind: str, reference: np.ndarray | None) -> bytes:
        """The report's HTML; NoDriftData when this run cannot have it."""
        if kind not in KINDS:
            raise NoDriftData(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
        if not available():
            raise NoDriftData("evidently is not installed here (pip install 'shadowgate[drift-report]')")
        if kind == "inputs" and reference is None:
            raise NoDriftData("the analysis has no reference set (set `reference:` in analyses.yaml)")
        newest, stable, current = _collect(source, run_id, kind)
        key = (run_id, kind, newest)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one build per report; others wait for it
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            if kind == "inputs":
                ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
                if ref.shape[1] != current.shape[1]:
                    raise NoDriftData(f"reference set has {ref.shape[1]} features, the probes {current.shape[1]}")
                columns = None
            else:
                ref = stable
                columns = [f"score_{j}" for j in range(ref.shape[1])]
            from analyses.drift import drift_report_html

            with tempfile.TemporaryDirectory(prefix="shadowgate-drift-") as d:
                path = drift_report_html(ref, current, Path(d) / "drift.html", columns=columns)
                html = path.read_bytes()
            with self._lock:
                self._cache[key] = html
                self._building.pop(key, None)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
            return html
