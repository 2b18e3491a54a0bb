"""Charts as inline SVG, written by hand: no JavaScript, no font or script from the internet.

A `Chart` collects layers (lines, bands, bars, stairs, points, reference
lines, markers) in data coordinates and renders one `<svg>` element with
axes, ticks, a legend and a `<title>`. It is small on purpose: a report
draws about twenty charts per page, and matplotlib's SVG backend takes tens
of milliseconds per figure where this takes well under one.

Missing values (None or NaN) break a line instead of drawing through them.
Values outside `ylim` are drawn at the edge (clipped), never dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Sequence

# Colours readable by most colour-blind readers (Okabe-Ito).
STABLE = "#0072B2"
CANARY = "#E69F00"
FAIL = "#D55E00"
PASS = "#009E73"
GREY = "#777777"
PURPLE = "#CC79A7"
SKY = "#56B4E9"
YELLOW = "#C9B500"
PALETTE = (STABLE, CANARY, PASS, FAIL, PURPLE, SKY, YELLOW, GREY)


def _ok(v) -> bool:
    """A finite number (None, NaN, infinities and booleans are missing values). Called per point: kept fast."""
    c = v.__class__
    if c is float:
        return v - v == 0.0  # False for NaN and infinities
    if c is int:
        return True
    return v is not None and c is not bool and isinstance(v, (int, float)) and math.isfinite(v)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values (1, 2, 2.5, 5 x 10^k steps) covering [lo, hi]."""
    if not (_ok(lo) and _ok(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    out = []
    v = start
    while v <= hi + step * 1e-9 and len(out) < 50:
        out.append(0.0 if abs(v) < step * 1e-9 else v)
        v += step
    return out


def log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 x 10^k ticks within [lo, hi] (lo > 0); thinned to at most about 8."""
    if lo <= 0 or hi <= lo:
        return [lo] if lo > 0 else []
    out = []
    for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** k
            if lo <= v <= hi:
                out.append(v)
    if len(out) > 8:
        out = [v for v in out if f"{v:g}".lstrip("0.").startswith("1")] or out
    return out


def fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:.4g}"


@dataclass
class _Layer:
    kind: str
    xs: Sequence
    ys: Sequence = ()
    ys2: Sequence = ()
    color: str = GREY
    label: str | None = None
    dash: str | None = None
    width: float = 1.6
    opacity: float = 1.0


@dataclass
class Chart:
    """One chart. x and y in data units; `ylim` (lo, hi) clips, else the data and reference lines decide."""

    title: str
    chart_id: str
    width: int = 660
    height: int = 230
    x_label: str = "window"
    y_label: str = ""
    ylim: tuple[float | None, float | None] = (None, None)
    xlim: tuple[float | None, float | None] = (None, None)
    xlog: bool = False
    ylog: bool = False
    y_zero: bool = False  # include 0 in the y range
    x_integer: bool = True  # x ticks on whole numbers only (windows, classes)
    layers: list[_Layer] = field(default_factory=list)
    note: str | None = None

    # ------------------------------------------------------------ layers

    def line(self, xs, ys, color: str, label: str | None = None, dash: str | None = None,
             width: float = 1.6) -> "Chart":
        self.layers.append(_Layer("line", list(xs), list(ys), color=color, label=label, dash=dash, width=width))
        return self

    def band(self, xs, lo, hi, color: str, label: str | None = None, opacity: float = 0.18) -> "Chart":
        self.layers.append(_Layer("band", list(xs), list(lo), list(hi), color=color, label=label, opacity=opacity))
        return self

    def points(self, xs, ys, color: str, label: str | None = None, r: float = 2.2) -> "Chart":
        self.layers.append(_Layer("points", list(xs), list(ys), color=color, label=label, width=r))
        return self

    def bars(self, xs, ys, color: str, label: str | None = None, base=None, opacity: float = 0.85) -> "Chart":
        """A bar per x (width from the spacing of xs), from `base` (default 0) to base + y."""
        base = list(base) if base is not None else [0.0] * len(xs)
        self.layers.append(_Layer("bars", list(xs), list(ys), base, color=color, label=label, opacity=opacity))
        return self

    def stairs(self, edges, counts, color: str, label: str | None = None, opacity: float = 0.25) -> "Chart":
        """A histogram: len(edges) == len(counts) + 1, outlined and lightly filled."""
        self.layers.append(_Layer("stairs", list(edges), list(counts), color=color, label=label, opacity=opacity))
        return self

    def hline(self, y: float | None, color: str, label: str | None = None, dash: str | None = "6 4") -> "Chart":
        if _ok(y):
            self.layers.append(_Layer("hline", [], [y], color=color, label=label, dash=dash, width=1.3))
        return self

    def vline(self, x: float | None, color: str, label: str | None = None, dash: str | None = "2 3") -> "Chart":
        if _ok(x):
            self.layers.append(_Layer("vline", [x], [], color=color, label=label, dash=dash, width=1.3))
        return self

    def marker(self, x: float | None, y: float | None, color: str, label: str | None = None) -> "Chart":
        """The decision point: a ringed dot."""
        if _ok(x) and _ok(y):
            self.layers.append(_Layer("marker", [x], [y], color=color, label=label))
        return self

    # ------------------------------------------------------------ ranges

    def _ranges(self) -> tuple[float, float, float, float]:
        xs: list[float] = []
        ys: list[float] = []
        for L in self.layers:
            if L.kind in ("line", "points", "marker"):
                xs += [x for x, y in zip(L.xs, L.ys) if _ok(x) and _ok(y)]
                ys += [y for y in L.ys if _ok(y)]
            elif L.kind == "band":
                xs += [x for x in L.xs if _ok(x)]
                ys += [y for y in list(L.ys) + list(L.ys2) if _ok(y)]
            elif L.kind == "bars":
                xs += [x for x in L.xs if _ok(x)]
                ys += [b + y for b, y in zip(L.ys2, L.ys) if _ok(y) and _ok(b)] + [b for b in L.ys2 if _ok(b)]
            elif L.kind == "stairs":
                xs += [x for x in L.xs if _ok(x)]
                ys += [y for y in L.ys if _ok(y)] + [0.0]
            elif L.kind == "hline":
                ys += list(L.ys)
            elif L.kind == "vline":
                xs += list(L.xs)
        if self.xlog:
            xs = [x for x in xs if x > 0]
        if self.ylog:
            ys = [y for y in ys if y > 0]
        x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
        y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
        if self.y_zero and not self.ylog:
            y0, y1 = min(y0, 0.0), max(y1, 0.0)
        lo, hi = self.ylim
        y0 = lo if lo is not None else y0
        y1 = hi if hi is not None else y1
        if self.xlim[0] is not None:
            x0 = self.xlim[0]
        if self.xlim[1] is not None:
            x1 = self.xlim[1]
        if x1 <= x0:
            x0, x1 = (x0 - 0.5, x1 + 0.5) if not self.xlog else (x0 / 2, x1 * 2)
        if y1 <= y0 and self.y_zero and y0 == 0 and not self.ylog:
            y1 = 1.0
        elif y1 <= y0:
            pad = abs(y0) * 0.1 or 1.0
            y0, y1 = (y0 - pad, y1 + pad) if not self.ylog else (y0 / 2, y1 * 2)
        elif not self.ylog and lo is None and hi is None:
            pad = (y1 - y0) * 0.06
            y0, y1 = (y0 - pad if not (self.y_zero and y0 == 0) else y0), y1 + pad
        return x0, x1, y0, y1

    # ------------------------------------------------------------ render

    def render(self) -> str:
        W, H = self.width, self.height
        left, right, bottom = 58, 12, 34
        legend = self._legend_layout(left, W - right)
        rows = max((y for _, _, y in legend), default=0) + 1
        top = 26 + 14 * rows
        pw, ph = W - left - right, H - top - bottom
        x0, x1, y0, y1 = self._ranges()
        lx0, lx1 = (math.log10(x0), math.log10(x1)) if self.xlog else (x0, x1)
        ly0, ly1 = (math.log10(y0), math.log10(y1)) if self.ylog else (y0, y1)

        def X(x: float) -> float:
            v = math.log10(max(x, 1e-300)) if self.xlog else x
            return left + (v - lx0) / (lx1 - lx0) * pw

        def Y(y: float) -> float:
            if self.ylog:
                y = max(y, y0)
                v = math.log10(y)
            else:
                v = y
            v = min(max(v, ly0), ly1)  # clipped to the plot
            return top + ph - (v - ly0) / (ly1 - ly0) * ph

        out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{escape(self.chart_id)}" '
               f'viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{escape(self.title)}">',
               f"<title>{escape(self.title)}</title>",
               f'<text x="{left}" y="14" class="ct">{escape(self.title)}</text>']
        # grid and ticks
        yt = log_ticks(y0, y1) if self.ylog else nice_ticks(y0, y1, 4)
        for t in yt:
            y = Y(t)
            out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                       f'<text x="{left - 4}" y="{y + 3.5:.1f}" class="tk" text-anchor="end">{fmt_tick(t)}</text>')
        xt = log_ticks(x0, x1) if self.xlog else nice_ticks(x0, x1, 6)
        if self.x_integer and not self.xlog:
            xt = [t for t in xt if float(t).is_integer()] or [t for t in (round(x0), round(x1)) if x0 <= t <= x1]
        for t in xt:
            x = X(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" class="ax"/>'
                       f'<text x="{x:.1f}" y="{top + ph + 15}" class="tk" text-anchor="middle">{fmt_tick(t)}</text>')
        out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>')
        if self.x_label:
            out.append(f'<text x="{left + pw / 2:.0f}" y="{H - 3}" class="tk" text-anchor="middle">'
                       f'{escape(self.x_label)}</text>')
        if self.y_label:
            out.append(f'<text x="11" y="{top + ph / 2:.0f}" class="tk" text-anchor="middle" '
                       f'transform="rotate(-90 11 {top + ph / 2:.0f})">{escape(self.y_label)}</text>')
        # layers
        spacing = self._bar_width(X)
        for L in self.layers:
            dash = f' stroke-dasharray="{L.dash}"' if L.dash else ""
            if L.kind == "band":
                upper = [(X(x), Y(h)) for x, h in zip(L.xs, L.ys2) if _ok(x) and _ok(h)]
                lower = [(X(x), Y(lo)) for x, lo in zip(L.xs, L.ys) if _ok(x) and _ok(lo)]
                if upper and lower:
                    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in upper + lower[::-1])
                    out.append(f'<polygon points="{pts}" fill="{L.color}" fill-opacity="{L.opacity}" stroke="none"/>')
            elif L.kind == "line":
                for seg in _segments(L.xs, L.ys):
                    pts = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in seg)
                    if len(seg) == 1:
                        x, y = seg[0]
                        out.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="1.8" fill="{L.color}"/>')
                    else:
                        out.append(f'<polyline points="{pts}" fill="none" stroke="{L.color}" '
                                   f'stroke-width="{L.width}"{dash}/>')
            elif L.kind == "points":
                out.append(f'<g fill="{L.color}">' + "".join(
                    f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="{L.width}"/>'
                    for x, y in zip(L.xs, L.ys) if _ok(x) and _ok(y)) + "</g>")
            elif L.kind == "bars":
                parts = []
                for x, y, b in zip(L.xs, L.ys, L.ys2):
                    if not (_ok(x) and _ok(y) and _ok(b)) or y == 0:
                        continue
                    ya, yb = Y(b), Y(b + y)
                    parts.append(f'<rect x="{X(x) - spacing / 2:.1f}" y="{min(ya, yb):.1f}" width="{spacing:.1f}" '
                                 f'height="{max(abs(ya - yb), 0.6):.1f}"/>')
                out.append(f'<g fill="{L.color}" fill-opacity="{L.opacity}">' + "".join(parts) + "</g>")
            elif L.kind == "stairs":
                edges, counts = L.xs, L.ys
                if len(edges) == len(counts) + 1 and counts:
                    pts = [(X(edges[0]), Y(0.0 if not self.ylog else y0))]
                    for i, c in enumerate(counts):
                        c = c if _ok(c) else 0.0
                        pts += [(X(edges[i]), Y(c)), (X(edges[i + 1]), Y(c))]
                    pts.append((X(edges[-1]), Y(0.0 if not self.ylog else y0)))
                    p = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
                    out.append(f'<polygon points="{p}" fill="{L.color}" fill-opacity="{L.opacity}" '
                               f'stroke="{L.color}" stroke-width="1.4"/>')
            elif L.kind == "hline":
                y = Y(L.ys[0])
                out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="{L.color}" '
                           f'stroke-width="{L.width}"{dash}/>')
            elif L.kind == "vline":
                x = X(L.xs[0])
                out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="{L.color}" '
                           f'stroke-width="{L.width}"{dash}/>')
            elif L.kind == "marker":
                x, y = X(L.xs[0]), Y(L.ys[0])
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5.5" fill="none" stroke="{L.color}" '
                           f'stroke-width="2"/><circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="{L.color}"/>')
        out.append(self._legend(legend))
        if self.note:
            out.append(f'<text x="{W - right}" y="14" class="tk" text-anchor="end">{escape(self.note)}</text>')
        out.append("</svg>")
        return "".join(out)

    def _bar_width(self, X) -> float:
        xs = sorted({x for L in self.layers if L.kind == "bars" for x in L.xs if _ok(x)})
        if len(xs) < 2:
            return 14.0
        gaps = sorted(X(b) - X(a) for a, b in zip(xs, xs[1:]))
        gap = gaps[len(gaps) // 2]  # the median: thinned series have a dense newest end
        return max(1.5, min(gap * 0.8, 28.0))

    def _legend_layout(self, x_start: float, x_end: float) -> list[tuple[_Layer, float, int]]:
        """(layer, x, row) of each labelled layer; as many rows as needed."""
        out, seen, x, row = [], set(), x_start, 0
        for L in self.layers:
            if not L.label or L.label in seen:
                continue
            seen.add(L.label)
            w = 22 + 6.2 * len(L.label)
            if x + w > x_end and x > x_start:
                x, row = x_start, row + 1
            out.append((L, x, row))
            x += w
        return out

    def _legend(self, layout: list[tuple[_Layer, float, int]]) -> str:
        out = []
        for L, x, row in layout:
            y = 30 + 14 * row
            dash = f' stroke-dasharray="{L.dash}"' if L.dash else ""
            if L.kind in ("bars", "band", "stairs"):
                out.append(f'<rect x="{x:.0f}" y="{y - 8}" width="12" height="9" fill="{L.color}" '
                           f'fill-opacity="{max(L.opacity, 0.45)}"/>')
            elif L.kind in ("points", "marker"):
                out.append(f'<circle cx="{x + 6:.0f}" cy="{y - 4}" r="3.5" fill="{L.color}"/>')
            else:
                out.append(f'<line x1="{x:.0f}" x2="{x + 14:.0f}" y1="{y - 4}" y2="{y - 4}" stroke="{L.color}" '
                           f'stroke-width="2"{dash}/>')
            out.append(f'<text x="{x + 18:.0f}" y="{y}" class="lg">{escape(L.label)}</text>')
        return "".join(out)


def _segments(xs, ys) -> list[list[tuple[float, float]]]:
    segs: list[list[tuple[float, float]]] = [[]]
    for x, y in zip(xs, ys):
        if _ok(x) and _ok(y):
            segs[-1].append((x, y))
        elif segs[-1]:
            segs.append([])
    return [s for s in segs if s]


CSS = """
svg.chart{background:#fff;max-width:100%;height:auto}
svg.chart .ct{font:600 13px system-ui,sans-serif;fill:#222}
svg.chart .tk{font:10.5px system-ui,sans-serif;fill:#555}
svg.chart .lg{font:11px system-ui,sans-serif;fill:#333}
svg.chart .grid{stroke:#eee}
svg.chart .ax{stroke:#999}
svg.chart .frame{fill:none;stroke:#bbb}
"""
