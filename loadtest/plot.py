"""Latency plots as PNG: the percentile distribution, HdrHistogram style.

The x axis is the percentile on a "nines" scale: position 1 / (1 - q) on a
log axis, so 90 %, 99 %, 99.9 % and 99.99 % are evenly spaced and the tail,
where stalls and queueing show, gets as much room as the median. This is
the layout of HdrHistogram's plotter, so the picture reads like the ones
SREs already know. The y axis is latency in milliseconds (text for people;
every value in code is seconds).

Each run of `LoadStats` gives two lines: latency from the *intended* send
time ("corrected", what users of an open-loop timetable saw) and service
time (from the actual send, what a closed-loop tool reports). Where the two
part, the client was queueing behind a slow server.

Only the matplotlib object API with the Agg canvas is used (no pyplot), so
nothing needs a display and no global figure state leaks between calls.
LoadStats keeps whole-run histograms, not per-second data, so there is no
timeline plot here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

import numpy as np

from loadtest.hist import LatencyHistogram
from loadtest.load import LoadStats

__all__ = ["plot_latency", "percentile_curve", "NINES"]

# Percentiles given a labelled tick (as fractions 0..1).
NINES = (0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999)
# The x axis always reaches 99.99 %, so every figure has the same ticks to compare by.
_MIN_X = 1e4
_MAX_X = 1e6
_ANNOTATE_Q = 0.99

Runs = Union[Mapping[str, Union[LoadStats, LatencyHistogram]],
             Sequence[tuple[str, Union[LoadStats, LatencyHistogram]]]]


def _nines_x(q: np.ndarray | float) -> np.ndarray:
    """Position of quantile q (0..1) on the nines axis: 1 / (1 - q)."""
    return 1.0 / (1.0 - np.asarray(q, dtype=np.float64))


def _pct_label(q: float) -> str:
    pct = round(q * 100, 6)
    return f"{int(pct)}%" if pct == math.floor(pct) else f"{pct:g}%"


def percentile_curve(hist: LatencyHistogram, points: int = 240) -> tuple[np.ndarray, np.ndarray]:
    """The percentile distribution of `hist`: (quantiles 0..1, latencies in seconds).

    Quantiles are spaced evenly on the nines scale from 0 up to 1 - 1/count
    (at most 99.9999 %): past the last recorded value there is nothing to
    show, so the curve stops there instead of running flat to the edge.
    Latencies come from `LatencyHistogram.quantile` (never below the true
    quantile, at most 0.1 % above). Empty arrays when `hist` is empty.
    """
    n = hist.count
    if n == 0:
        return np.empty(0), np.empty(0)
    top = min(max(float(n), 2.0), _MAX_X)
    q = 1.0 - 1.0 / np.logspace(0.0, math.log10(top), int(points))
    q = np.unique(np.concatenate([q, [_ANNOTATE_Q] if 1 - 1 / top >= _ANNOTATE_Q else []]))
    return q, np.asarray(hist.quantiles(q.tolist()), dtype=np.float64)


def _series(runs: Runs) -> list[tuple[str, LatencyHistogram, LatencyHistogram | None]]:
    """(label, main histogram, service histogram or None) per run."""
    items = list(runs.items()) if isinstance(runs, Mapping) else list(runs)
    out = []
    for i, item in enumerate(items):
        try:
            label, value = item
        except (TypeError, ValueError):
            raise ValueError(f"runs[{i}]: expected a (label, LoadStats or LatencyHistogram) pair, "
                             f"got {type(item).__name__}") from None
        if isinstance(value, LoadStats):
            out.append((str(label), value.corrected, value.service))
        elif isinstance(value, LatencyHistogram):
            out.append((str(label), value, None))
        else:
            raise ValueError(f"runs[{label!r}]: expected LoadStats or LatencyHistogram, "
                             f"got {type(value).__name__}")
    return out


def plot_latency(runs: Runs, path: str | os.PathLike, *, title: str | None = None,
                 points: Mapping[str, Mapping[float, float]] | None = None,
                 reference: Mapping[str, float] | None = None, log_y: bool | None = None,
                 size_in: tuple[float, float] = (10.0, 6.0), dpi: int = 110) -> Path:
    """Write a PNG of latency by percentile (HdrHistogram style) and return its path.

    runs: {name: LoadStats} or [(label, LoadStats | LatencyHistogram)].
        A LoadStats gives two lines in one colour: corrected (solid, from
        the intended send time) and service (dashed, from the actual send).
        A LatencyHistogram gives one line under its label.
    points: extra percentiles to mark, not curves: {label: {quantile 0..1:
        latency seconds}}; e.g. the distribution another tool printed.
    reference: horizontal lines, {label: latency seconds}; e.g. a true p99.
    log_y: log latency axis; None picks it when the plotted values span
        more than 30x (a stall next to healthy milliseconds).
    size_in / dpi: figure size in inches and resolution (PNG pixels =
        size_in x dpi).

    Every p99 (curves and points) is marked and labelled in ms. Raises ValueError
    when there is nothing to plot (no runs, or every histogram empty);
    OSError when the file cannot be written.
    """
    series = _series(runs) if runs is not None else []
    points = dict(points or {})
    reference = dict(reference or {})
    for label, qs in points.items():
        if any(not 0 <= q < 1 for q in qs):
            raise ValueError(f"points[{label!r}]: quantiles must be within 0..1 (exclusive of 1)")
    # One run needs no name in its p99 labels; several do (colours alone are easy to mix up).
    named = len(series) > 1
    curves = []  # (legend label, p99 tag, style, colour index, quantiles, seconds)
    for k, (label, main, service) in enumerate(series):
        if service is None:
            curves.append((label, label, "-", k, *percentile_curve(main)))
        else:
            prefix = f"{label} " if named else ""
            curves.append((f"{label}: corrected (from intended send)", f"{prefix}corrected", "-", k,
                           *percentile_curve(main)))
            curves.append((f"{label}: service time (from actual send)", f"{prefix}service", "--", k,
                           *percentile_curve(service)))
    curves = [c for c in curves if c[4].size]
    points = {k: v for k, v in points.items() if v}
    if not curves and not points:
        raise ValueError("plot_latency: nothing to plot (no runs given, or no latencies recorded)")

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter, NullLocator

    fig = Figure(figsize=size_in, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = [c["color"] for c in _cycle()]
    ms_values: list[float] = []
    max_x = _MIN_X
    for label, _tag, style, k, q, s in curves:
        colour = colours[k % len(colours)]
        x = _nines_x(q)
        max_x = max(max_x, float(x[-1]))
        ax.plot(x, s * 1e3, style, color=colour, linewidth=1.8, label=label)
        ms_values.extend((s * 1e3).tolist())
    for j, (label, qs) in enumerate(points.items()):
        colour = colours[(len(series) + j) % len(colours)]
        q = np.array(sorted(qs), dtype=np.float64)
        s = np.array([qs[v] for v in sorted(qs)], dtype=np.float64)
        ax.plot(_nines_x(q), s * 1e3, ":", marker="o", markersize=6, color=colour, linewidth=1.2, label=label)
        ms_values.extend((s * 1e3).tolist())
    for j, (label, seconds) in enumerate(reference.items()):
        ax.axhline(seconds * 1e3, color="black", linestyle=(0, (6, 3)), linewidth=1.2,
                   alpha=0.8 - 0.2 * (j % 3), label=f"{label}: {seconds * 1e3:.1f} ms")
        ms_values.append(seconds * 1e3)

    positive = [v for v in ms_values if v > 0]
    if log_y is None:
        log_y = bool(positive) and max(positive) / min(positive) > 30
    ax.set_xscale("log")
    ax.set_xlim(1.0, max_x * 1.05)
    ticks = [q for q in NINES if _nines_x(q) <= max_x * 1.05]
    ax.xaxis.set_major_locator(FixedLocator(_nines_x(np.array(ticks)).tolist()))
    ax.xaxis.set_major_formatter(FixedFormatter([_pct_label(q) for q in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    if log_y:
        ax.set_yscale("log")
        ax.set_ylim(min(positive) / 1.5, max(positive) * 2.5)
    else:
        ax.set_ylim(0, max(ms_values) * 1.15 if ms_values and max(ms_values) > 0 else 1.0)
    ax.grid(True, which="major", linestyle="-", alpha=0.35)
    if log_y:
        ax.grid(True, which="minor", axis="y", linestyle=":", alpha=0.2)
    ax.set_xlabel("percentile (log scale of nines)")
    ax.set_ylabel("latency (ms)" + (", log scale" if log_y else ""))
    ax.set_title(title or "Latency by percentile")

    marks = []
    for _label, tag, _style, k, q, s in curves:
        if q[-1] >= _ANNOTATE_Q:  # fewer than 100 values have no p99
            i = int(np.argmin(np.abs(q - _ANNOTATE_Q)))
            marks.append((float(s[i]) * 1e3, colours[k % len(colours)], f"p99 {tag}"))
    for j, (label, qs) in enumerate(points.items()):
        if _ANNOTATE_Q in qs:
            marks.append((qs[_ANNOTATE_Q] * 1e3, colours[(len(series) + j) % len(colours)], f"{label} p99"))
    # Below the axes: inside, a legend always ends up over some run's curve.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8.5, frameon=False)
    fig.canvas.draw()  # fixes the layout, so label positions below are final
    _annotate_p99(ax, marks)
    out = Path(path)
    fig.savefig(out, format="png")
    return out


def _annotate_p99(ax, marks: list[tuple[float, str, str]]) -> None:
    """Mark each (ms, colour, text) at p99, with its label left of the point.

    Labels are stacked by value with a minimum gap, so p99s close together
    (the usual case: corrected and service agree when nothing queues) stay
    legible; the stack is shifted down if it would leave the axes.
    """
    if not marks:
        return
    x99 = float(_nines_x(_ANNOTATE_Q))
    marks = sorted(marks, key=lambda m: m[0])
    pt = ax.figure.dpi / 72.0  # display pixels per point
    y_pt = [float(ax.transData.transform((x99, ms))[1]) / pt for ms, _, _ in marks]
    gap, lift = 15.0, 9.0
    label_pt = []
    for y in y_pt:
        label_pt.append(max(y + lift, label_pt[-1] + gap if label_pt else -math.inf))
    top_pt = float(ax.transAxes.transform((0, 1))[1]) / pt - 8.0
    over = label_pt[-1] - top_pt
    if over > 0:
        label_pt = [y - over for y in label_pt]
    for (ms, colour, text), y, ly in zip(marks, y_pt, label_pt):
        ax.plot([x99], [ms], marker="D", markersize=6, color=colour, markeredgecolor="black", zorder=5)
        ax.annotate(f"{text} {ms:.1f} ms", xy=(x99, ms), xytext=(-14, ly - y), textcoords="offset points",
                    ha="right", va="center", fontsize=8.5, color=colour, zorder=6,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colour, "alpha": 0.9},
                    arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.8})


def _cycle() -> Iterable[dict]:
    from matplotlib import rcParams

    return rcParams["axes.prop_cycle"]

