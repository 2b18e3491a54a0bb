"""Anytime-valid tests on per-window estimates whose variance is not known.

Each window of a run gives one estimate x_i of the canary's harm d on the
test's scale (log P99 ratio, error rate, ...) and a *nominal* variance v_i
(what independent requests would give: Maritz-Jarrett, binomial). Requests
inside a window are not independent on real servers (pods of different
speed, a process that stalls, autocorrelated latency, error bursts), so v_i
understates the spread by an unknown factor. The unit of evidence is
therefore the window, and the factor is a parameter of the null hypothesis,
not a plug-in:

    model:  x_i ~ N(d, phi * v_i), independent across windows,
            d constant within a segment, phi unknown in [phi_min, phi_max]

    fail side  H0: d <= t0 (alert)      against  d >= t1 (rollback)
    pass side  H0: d >= t1 (rollback)   against  d <= t0 (alert)

Test: the sequential universal likelihood ratio (Wasserman, Ramdas and
Balakrishnan, "Universal inference", PNAS 2020, section 7). For windows
s..t of a segment

    E_s(t) = prod_{i=s..t} q_i(x_i)  /  sup_{d in H0, phi} prod_{i=s..t} N(x_i; d, phi v_i)

where q_i is any density chosen before window i is seen (here: a normal at
an alternative mean, with phi estimated from earlier windows). For the true
(d*, phi*) in H0 the denominator is at least the likelihood at (d*, phi*),
so E_s(t) <= prod q_i / p_{d*,phi*}, a nonnegative martingale with mean 1:
E_s is an e-process whatever phi is, for any number of looks. Both the
supremum (closed form: d* = the weighted mean clipped to H0, phi* = the
mean squared standardized residual clipped to [phi_min, phi_max]) and the
numerator need only running sums, so a look costs the same at window 1000
as at window 2.

A regression that starts after a pass (a canary that saturates as its
weight grows) must not be hidden by good early windows, so the statistic
is a mixture over change points: R_t = sum_s pi_s E_s(t) with fixed weights
pi_s (sum <= 1), each E_s held at 1 before s. A sum of nonnegative
supermartingales that start at pi_s is one that starts at <= 1; Ville's
inequality gives P(sup_t R_t >= 1/alpha) <= alpha under H0 for every
window of the run. Keeping only a bounded set of recent starts (and, on
the fail side, the segment's first) drops nonnegative terms, which can only
make R smaller: the bound holds and the cost stays constant. On the pass
side it also means a pass rests on the newest windows only. This is the e-detector of
Shin, Ramdas and Rinaldo ("E-detectors", 2023) with weights in place of
its average-run-length calibration, so the guarantee is a probability.

Alternatives (the numerator): a mixture over a few means at and beyond
the alternative threshold (t1, t1 + D, t1 + 2D, t1 + 4D for the fail
side; D = t1 - t0) and a predictable plug-in (the exponentially weighted
mean of earlier windows, clipped into the alternative), each its own
product, mixed once per start (a mixture of e-processes is one).

Segments: when a stage starts (thresholds tighten, the canary's weight
grows) the pass side starts again from nothing: a pass must be earned on
the stage's own windows. The fail side's terms from the stage before are
frozen at their value (a stopped supermartingale is one) and keep counting:
evidence for failure carries over, and new starts open in the new stage.

What the guarantee needs, said plainly: window estimates independent of
each other given the past, normal, with a spread proportional to v_i
(any within-window dependence is allowed: it only changes phi). phi_max
bounds how much more than v_i one window may spread (None: no bound; the
bound lets a single window that is wildly out of line, such as every
request failing, decide at once). The per-window estimate of a quantile is
close to normal at the sizes the gate accepts (min_samples); rates are
close to normal when a window holds ten or more expected events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ALTERNATIVES", "MAX_STARTS", "SideState", "WindowTest", "start_weight"]

# (offset in units of D = t1 - t0 beyond the alternative threshold, weight); None: the plug-in mean.
ALTERNATIVES: tuple[tuple[float | None, float], ...] = ((None, 0.4), (0.0, 0.3), (1.0, 0.15), (2.0, 0.1),
                                                        (4.0, 0.05))
# Each alternative's density for one window is a mixture: (1 - EPS) N(m, phi v) + EPS N(m, phi v + wide^2).
# The wide part keeps one wild window (a stalled process, a cold start) from wiping out a side's
# evidence, and lets a canary that fails every request fail at once; it costs log(1/(1-EPS)) a window.
EPS = 0.05
_WEIGHTS = [w for _, w in ALTERNATIVES]
MAX_STARTS = 12  # change points kept per side: the segment's first and the most recent others
EW_DECAY = 0.7  # weight of the past in the plug-in mean and spread (about three windows)
PRIOR_PHI = 2.0  # the plug-in spread's prior (in units of v), worth PRIOR_WINDOWS windows
PRIOR_WINDOWS = 1.0
PHI_MIN = 0.05
RESIDUAL_CAP = 25.0  # most one window adds to the plug-in spread (in units of v)


def start_weight(r: int, horizon: int) -> float:
    """pi_r, the prior weight of a change at window r (1-based) of a run or stage.

    Half on r = 1 (no change: the usual case pays log 2). The other half in
    two parts: 0.25 / (r (r - 1)), so an early change (a cold first window,
    the golden burst before the load) costs little, and 0.25 spread evenly
    over 2..horizon (then decaying), so a change late in the run costs no
    more than log(4 horizon). They sum to 1.
    """
    if r <= 1:
        return 0.5
    h = max(int(horizon), 2)
    early = 0.25 / (r * (r - 1.0))
    late = 0.25 / h if r <= h else 0.25 / (r * (r - 1.0))
    return early + late


def _lse(xs: list[float]) -> float:
    xs = [x for x in xs if x != -math.inf]
    if not xs:
        return -math.inf
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs))


@dataclass
class SideState:
    """One side's running sums within its segment (constant size)."""

    seg_start: int = 1  # global window number where the segment began
    n: int = 0
    a: float = 0.0  # sum x^2 / v
    b: float = 0.0  # sum x / v
    c: float = 0.0  # sum 1 / v
    ln: list[float] = field(default_factory=lambda: [0.0] * len(ALTERNATIVES))
    snaps: list[list[float]] = field(default_factory=list)  # [start, n, a, b, c, *ln] before `start`
    frozen: float = -math.inf  # log of the frozen mass of earlier segments' starts (fail side)
    stat: float = -math.inf  # log R: the side's e-value now
    best_start: int | None = None  # the start that carries most of R (display)
    estimate: float | None = None  # weighted mean over the best start's windows (test scale)
    se: float | None = None  # its standard error with phi estimated over those windows
    windows: int = 0  # windows behind `estimate`


@dataclass
class WindowTest:
    """Both sides of one check's test; `update` once per measured window."""

    fail: SideState = field(default_factory=SideState)
    passing: SideState = field(default_factory=SideState)
    # plug-in (predictable) mean and spread: exponentially weighted sums
    ew_b: float = 0.0
    ew_c: float = 0.0
    ew_q: float = 0.0
    ew_n: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("ew_b", "ew_c", "ew_q", "ew_n")}
        for name in ("fail", "passing"):
            side = getattr(self, name)
            x = {k: getattr(side, k) for k in SideState.__dataclass_fields__}
            x["ln"], x["snaps"] = list(side.ln), [list(sn) for sn in side.snaps]
            for k in ("frozen", "stat"):
                if x[k] == -math.inf:
                    x[k] = None
            d[name] = x
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WindowTest":
        def side(x: dict[str, Any]) -> SideState:
            x = dict(x)
            for k in ("frozen", "stat"):
                if x.get(k) is None:
                    x[k] = -math.inf
            return SideState(**x)
        return cls(fail=side(d["fail"]), passing=side(d["passing"]),
                   **{k: d[k] for k in ("ew_b", "ew_c", "ew_q", "ew_n")})

    # ------------------------------------------------------------ segments

    def new_segment(self, window: int) -> None:
        """A stage starts at `window`: the pass side starts over; the fail side's terms freeze."""
        f = self.fail
        if f.n:
            f.frozen = f.stat
        self.fail = SideState(seg_start=window, frozen=f.frozen, stat=f.frozen)
        self.passing = SideState(seg_start=window)

    # ------------------------------------------------------------ update

    def plug_in(self) -> tuple[float | None, float]:
        """(mean, phi) predicted from earlier windows: what the numerator bets on."""
        mean = self.ew_b / self.ew_c if self.ew_c > 0 else None
        phi = (PRIOR_PHI * PRIOR_WINDOWS + self.ew_q) / (PRIOR_WINDOWS + self.ew_n)
        return mean, phi

    def update(self, window: int, x: float, v: float, t0: float, t1: float, *, horizon: int,
               phi_max: float | None = None, learn: bool = True, broad: float | None = None) -> None:
        """Add window number `window` (global, 1-based): estimate x, nominal variance v > 0.

        learn: False for a window of another regime (the golden burst before any load): it is
        evidence, but the plug-in does not learn the next windows' mean and spread from it.
        broad: the sd of each alternative's wide part (default 10 D): a canary failing every
        request, or a process stalled for a whole window, is that far out.
        """
        v = max(float(v), 1e-300)
        mean, phi_hat = self.plug_in()
        lo, hi = PHI_MIN, (phi_max if phi_max is not None else math.inf)
        phi_hat = min(max(phi_hat, lo), hi)
        dist = t1 - t0
        wide = broad if broad is not None else 10.0 * dist
        var, var_w = phi_hat * v, phi_hat * v + wide * wide
        for side, sign, base in ((self.fail, 1.0, t1), (self.passing, -1.0, t0)):
            logq = []
            for off, _ in ALTERNATIVES:
                if off is None:
                    m = base if mean is None else (max(mean, base) if sign > 0 else min(mean, base))
                else:
                    m = base + sign * float(off) * dist
                # log density relative to N(.; ., v)'s normalising constant (it cancels with the null's)
                narrow = math.log(1.0 - EPS) - 0.5 * math.log(var / v) - (x - m) ** 2 / (2.0 * var)
                broad_ = math.log(EPS) - 0.5 * math.log(var_w / v) - (x - m) ** 2 / (2.0 * var_w)
                logq.append(_lse([narrow, broad_]))
            self._add(side, window, x, v, logq, sign, t0 if sign > 0 else t1, lo, hi, horizon)
        # the plug-in learns from this window only after both sides used it (predictable)
        if not learn:
            return
        if mean is not None:  # one wild window (a cold process) must not flatten the bets for long
            self.ew_q = EW_DECAY * self.ew_q + min((x - mean) ** 2 / v, RESIDUAL_CAP)
            self.ew_n = EW_DECAY * self.ew_n + 1.0
        self.ew_b = EW_DECAY * self.ew_b + x / v
        self.ew_c = EW_DECAY * self.ew_c + 1.0 / v

    @staticmethod
    def _add(side: SideState, window: int, x: float, v: float, logq: list[float], sign: float,
             bound: float, lo: float, hi: float, horizon: int) -> None:
        side.snaps.append([float(window), float(side.n), side.a, side.b, side.c, *side.ln])
        if len(side.snaps) > MAX_STARTS:
            # The fail side keeps the segment's first start (evidence of harm persists); the pass side
            # keeps only the newest starts, so a pass rests on the last MAX_STARTS windows: good early
            # windows cannot carry a canary that has drifted towards rollback since.
            del side.snaps[1 if sign > 0 else 0]
        side.n += 1
        side.a += x * x / v
        side.b += x / v
        side.c += 1.0 / v
        side.ln = [s + q for s, q in zip(side.ln, logq)]
        snaps = np.asarray(side.snaps, dtype=np.float64)  # at most MAX_STARTS rows: constant cost
        starts = snaps[:, 0]
        n = side.n - snaps[:, 1]
        a, b, c = side.a - snaps[:, 2], side.b - snaps[:, 3], side.c - snaps[:, 4]
        mean = b / c
        d = np.minimum(mean, bound) if sign > 0 else np.maximum(mean, bound)  # the null's best mean
        q = np.maximum(a - 2.0 * d * b + d * d * c, 0.0)
        phi = np.clip(q / n, lo, hi)
        log_null = -0.5 * n * np.log(phi) - q / (2.0 * phi)
        alts = np.log(_WEIGHTS)[None, :] + (np.asarray(side.ln)[None, :] - snaps[:, 5:])
        top = alts.max(axis=1)
        log_alt = top + np.log(np.exp(alts - top[:, None]).sum(axis=1))
        r = starts - side.seg_start + 1 if sign < 0 else starts  # pass side: weights restart per stage
        prior = np.log([start_weight(int(x), horizon) for x in r])
        term = prior + log_alt - log_null
        k = int(np.argmax(term))
        terms = [side.frozen, *term.tolist()]
        resid = max(float(a[k] - 2.0 * mean[k] * b[k] + mean[k] * mean[k] * c[k]), 0.0)
        phi_fit = min(max(resid / max(n[k] - 1, 1), 1.0 if n[k] < 2 else lo), hi)
        best, best_fit = int(starts[k]), (float(mean[k]), math.sqrt(phi_fit / c[k]), int(n[k]))
        side.stat = _lse(terms)
        side.best_start = best
        side.estimate, side.se, side.windows = best_fit
