"""The gate: one sequential decision per run, with both error rates guaranteed.

Per critical check, two hypotheses about the canary's harm d (how much worse
than stable; scales in analyses.config):

    H0: d <= alert      (a tolerated canary: must pass)
    H1: d >= rollback   (a canary that must be stopped)

Each check keeps two anytime-valid e-values, one per side, updated once per
window (analyses.sequential says how and proves them):

- fail side, an e-value against "d <= alert": when it reaches 1/alpha_k the
  check fails, and with it the run (for good);
- pass side, an e-value against "d >= rollback": when it reaches 1/beta the
  check passes *for the stage in force*.

Why the promises hold, for any number of looks and whenever the caller
stops (Ville's inequality on nonnegative supermartingales):

- P(the run ever fails) <= alpha when every check's true difference is at
  or better than `alert` in every window: the run fails only when some
  check's fail side crosses, and the checks' alpha_k sum to alpha (split by
  `alpha_weight` over the checks that can have data).
- P(the run passes in a stage) <= beta when one critical check is at or
  beyond `rollback` during that stage: a pass needs every critical check's
  pass side to cross on that stage's windows alone (each stage starts the
  pass side from nothing), and that check's crosses with probability at
  most beta. Accuracy is the exception that proves the rule: its evidence
  (fixed golden rows, deterministic answers) does not depend on the stage,
  so a stage that changes its thresholds re-tests the same sums.
- A regression that starts mid-run is caught: the fail side is a mixture
  over change points (every recent window is a possible start), so good
  windows before a change do not bury the windows after it.
- Once a caller has been told to promote, or the run failed, the decision
  is final (`mark_final`); before that, a pass can become a fail, and the
  state's `changes` keep the history for the timeline and the report.
- No pass without the evidence for it: a check that cannot get evidence
  (every golden row seen without a decision, windows too small for the
  quantile three times in a row) is *insufficient*: the run cannot pass,
  and each answer says what would let it decide; `on_insufficient: fail`
  fails it instead.

What each check's test needs (the assumption behind its guarantee):

- latency (log of the canary/stable quantile ratio), errors (the canary's
  rate over load and probes), errors_increase (canary rate minus
  stable's), CTR (log CTR ratio) and Prometheus checks: windows are the
  unit. Each window's estimate is taken as normal around d with a spread
  that is its nominal variance (Maritz-Jarrett, binomial) times an unknown
  factor phi: requests inside a window may be as dependent as they like
  (pods of different speed, stalls, autocorrelation, error bursts), since
  that only changes phi, which the test never assumes (it is part of the
  null hypothesis; analyses.sequential). Windows must be independent of
  each other given the past. For error rates phi is bounded by
  `max_overdispersion` (default 100: errors come in clusters of at most
  about a hundred requests on average), which lets a canary that fails
  every request fail at once; for latency it is unbounded, so no single
  window, however wild, can fail a run (it takes two).
  Failed and timed-out requests count as latency at the deadline.
- accuracy: paired per distinct golden row, x = stable right - canary
  right, with mean d; rows are the independent units (a deterministic
  model repeats its answer, so each row counts once and the evidence is
  bounded by the golden set). Gaussian SPRT with variance max(estimated,
  rollback (1 - rollback)), at (alpha_k/2, beta/2) while rows arrive; when
  every row was seen, fixed-sample z tests at the other halves decide,
  or the set is too small to (insufficient: never a pass).

Windows that cannot be compared give no evidence: stable down (it fails
more than `stable_max_error_ratio`: the canary is not blamed), Shadowgate
itself overloaded (more than `max_late_ratio` of sends late: no latency or
error evidence for either version), the golden burst (probes only: never
latency evidence). Cost per look: constant (running sums and a bounded
set of change points; nothing else is kept from earlier windows but the
set of golden rows seen).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import special

from . import promchecks, stats
from .config import JudgeConfig
from .results import CheckResult, Verdict, phase_of
from .sequential import WindowTest
from .window import VersionTraffic, Window

__all__ = ["CheckState", "Gate", "RunState", "WindowReport"]

# The fail side mixes alternatives at and beyond rollback (offsets in units of
# rollback - alert, with prior weights): a mixture of likelihood ratios is
# still a martingale under H0, so Ville's bound holds, and a gross regression
# (3x P99, 10 points of accuracy) fails far sooner than the SPRT aimed at
# rollback would let it. The pass side keeps the simple ratio at rollback.
MIXTURE = ((0.0, 0.4), (1.0, 0.3), (2.0, 0.2), (4.0, 0.1))
_MIN_LOG_SE = 0.01  # per-version floor of the log-quantile SE: clock granularity
CHANGE_HORIZON = 60  # windows over which a change point's prior weight is spread (no max_windows)
SHORT_WINDOWS = 3  # this many windows in a row too small for a check: it cannot decide (said in answers)

_TESTS = {
    "accuracy": "paired SPRT on distinct golden rows (stable right - canary right)",
    "latency": "window e-test on the log quantile ratio (Maritz-Jarrett variance times an unknown spread)",
    "errors": "window e-test on the canary's error rate (binomial variance times an unknown spread)",
    "errors_increase": "window e-test on the canary's error rate minus stable's (spread unknown)",
    "ctr": "window e-test on the log CTR ratio (binomial variance times an unknown spread)",
}
_UNITS = {"accuracy": "ratio", "latency": "s", "errors": "ratio", "errors_increase": "ratio", "ctr": "ratio"}


def _norm_isf(p: float) -> float:
    return float(-special.ndtri(p))


def _t_isf(p: float, df: int) -> float:
    return float(-special.stdtrit(df, p))


# ------------------------------------------------------------------ state


@dataclass
class CheckState:
    """What one check knows about a run: running sums only (no per-window history)."""

    name: str
    llr: float = 0.0  # minus the pass side's log e-value (passes at log beta); accuracy: its SPRT sum
    mix: list[float] = field(default_factory=lambda: [0.0] * len(MIXTURE))  # accuracy's fail-side mixture
    test: WindowTest | None = None  # the window e-test of the window-based checks (not accuracy)
    windows: int = 0
    failed_at: int | None = None
    passed_at: int | None = None  # in the current stage; cleared when a stage starts
    passed_before: int | None = None  # window of a pass in an earlier stage (history, not a pass now)
    withdrawn_at: int | None = None  # a pass the newest windows no longer support was withdrawn here
    forced: str | None = None  # a failure without a test (CTR missing with on_missing: fail)
    insufficient: str | None = None  # why the check cannot decide with the data it can get
    short: int = 0  # consecutive windows too small to measure (too few requests for the quantile)
    # counts (errors: canary; accuracy: rows, sum of x, discordant rows)
    k: int = 0
    n: int = 0
    acc_sum: int = 0
    acc_disc: int = 0
    acc_thresholds: list[float] | None = None  # the (alert, rollback) accuracy's sums were tested at
    rows_seen: list[int] = field(default_factory=list)
    n_stable: int = 0
    n_canary: int = 0
    exhausted: bool = False
    last: dict[str, Any] = field(default_factory=dict)  # the newest window's figures
    nodata: str | None = None  # why the newest window gave no evidence

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["test"] = self.test.to_dict() if self.test is not None else None
        d["mix"], d["rows_seen"] = list(self.mix), list(self.rows_seen)
        d["last"] = dict(self.last)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckState":
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}  # states of older versions: their extra sums dropped
        if kw.get("test") is not None:
            kw["test"] = WindowTest.from_dict(kw["test"])
        return cls(**kw)

    def window_test(self) -> WindowTest:
        if self.test is None:
            self.test = WindowTest()
        return self.test


@dataclass
class RunState:
    """Everything the gate knows about a run: small, stored after every window.

    stage: the stage in force (config stages and stages the caller started);
    stage_from: its first window. final: a caller was told to promote (or
    the run failed): the decision no longer changes. changes: the run's
    decisions as they changed (a pass that later failed shows here), bounded.
    """

    windows: int = 0
    counted: int = 0
    outcome: str = "continue"
    decided_at: int | None = None
    health: str | None = None
    checks: dict[str, CheckState] = field(default_factory=dict)
    drift: list[dict[str, Any]] = field(default_factory=list)  # newest window's drift report
    stage: int = 0
    stage_from: int = 1
    config_stage: int = 0
    caller_stage: int = 0
    caller_stage_label: str | None = None
    pending_stage: str | None = None  # a stage the caller started, in force from the next window
    final: bool = False
    changes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "checks"}
        d["drift"] = [dict(x) for x in self.drift]
        d["changes"] = [dict(x) for x in self.changes]
        d["checks"] = {k: v.to_dict() for k, v in self.checks.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunState":
        d = dict(d)
        d["checks"] = {k: CheckState.from_dict(v) for k, v in d.get("checks", {}).items()}
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


MAX_CHANGES = 40


@dataclass
class Evidence:
    """One window's evidence for one check (not kept after the update)."""

    measured: bool
    why: str | None = None
    estimate: float | None = None  # harm on the test scale
    var: float | None = None
    k: int = 0
    n: int = 0
    stable: float | None = None
    canary: float | None = None
    n_stable: int = 0
    n_canary: int = 0
    rows: tuple[int, int, int] | None = None  # accuracy: new rows, sum x, discordant
    missing: bool = False  # no data (Prometheus down, empty, too few counts): on_missing applies
    short: bool = False  # too few requests for the check's statistic (a window too small)


@dataclass
class WindowReport:
    """What one window added: per check the window's figures, for display and metrics."""

    seq: int
    health: str
    checks: dict[str, dict[str, Any]]
    drift: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        from .results import _clean

        return _clean(asdict(self))


# ------------------------------------------------------------------ the gate


class Gate:
    """The sequential decision of one analysis: update a RunState per window, read a Verdict."""

    def __init__(self, config: JudgeConfig | None = None, *, active: list[str] | None = None,
                 golden_rows: int | None = None) -> None:
        """active: the gated checks that can have data in this analysis (default: every enabled
        one); alpha is split over these only. golden_rows: size of the golden set (bounds the
        accuracy evidence)."""
        self.config = config or JudgeConfig()
        gated = self.config.gated()
        self.active = [n for n in gated if active is None or n in active]
        self.golden_rows = golden_rows
        self.alphas = self.config.alpha_shares(self.active)

    # ------------------------------------------------------------ boundaries

    def boundaries(self, name: str) -> tuple[float, float]:
        """(fail_at, pass_at): the check fails when its fail-side log e-value reaches fail_at =
        log(1/alpha_k) and passes when `llr` (minus the pass side's) falls to pass_at = log(beta)."""
        a, b = self.alphas[name], self.config.beta
        if name == "accuracy" and self.golden_rows:
            a, b = a / 2.0, b / 2.0  # the other halves go to the test at exhaustion
        return math.log(1.0 / a), math.log(b)

    def horizon(self) -> int:
        """Windows over which change points share most of their prior weight."""
        return self.config.max_windows or CHANGE_HORIZON

    def new_state(self) -> RunState:
        return RunState(checks={n: CheckState(n) for n in self.active})

    # ------------------------------------------------------------ stages and finality

    def start_stage(self, state: RunState, label: str) -> bool:
        """The caller moved the canary to a heavier stage (more weight, a new step): from the next
        window on, passes must be earned again. Returns False when `label` is the stage already in
        force or pending (a repeated call starts nothing)."""
        if state.final or label in (state.caller_stage_label, state.pending_stage):
            return False
        if state.caller_stage_label is None and state.pending_stage is None:
            state.caller_stage_label = label  # the first stage the caller names is the one the run began in
            return False
        state.pending_stage = label
        return True

    def mark_final(self, state: RunState) -> None:
        """A caller was told to promote (or the run failed): the decision stays as it is."""
        state.final = True

    def _stage_change(self, state: RunState, seq: int) -> str | None:
        cfg_stage = sum(1 for st in self.config.stages if st.from_window <= seq)
        why = None
        if cfg_stage != state.config_stage:
            state.config_stage = cfg_stage
            why = f"configured stage {cfg_stage} (from window {self.config.stages[cfg_stage - 1].from_window})"
        if state.pending_stage is not None:
            state.caller_stage += 1
            state.caller_stage_label = state.pending_stage
            why = f"the caller's stage {state.pending_stage!r}" + (f" and {why}" if why else "")
            state.pending_stage = None
        if why is None:
            return None
        state.stage += 1
        state.stage_from = seq
        return why

    # ------------------------------------------------------------ update

    def update(self, state: RunState, window: Window) -> WindowReport:
        """Add one window's evidence to `state` (in place); constant cost in the run's length."""
        cfg = self.config
        if state.final:  # promoted or failed: nothing changes any more
            state.windows += 1
            return WindowReport(seq=state.windows, health="final", checks={}, drift=state.drift)
        state.windows += 1
        seq = state.windows
        health = _health(window, cfg)
        state.health = health
        stage_why = self._stage_change(state, seq)
        if stage_why:
            self._note(state, seq, "stage", f"stage {state.stage} from window {seq} ({stage_why}): "
                                            "passes are earned again")
        report: dict[str, dict[str, Any]] = {}
        if health in ("ok", "golden", "overloaded"):
            state.counted += 1
        for name in self.active:
            cs = state.checks.setdefault(name, CheckState(name))
            alert, rollback = cfg.thresholds(name, seq)
            if stage_why:
                self._new_segment(name, cs, seq, alert, rollback)
            ev = self._evidence(name, window, health, cs, alert, rollback)
            report[name] = self._apply(name, cs, ev, alert, rollback, seq, learn=health != "golden")
        if cfg.drift.enabled and len(window.probes):
            from .checks import drift_report

            state.drift = [c.to_dict() for c in drift_report(window, cfg)]
        self._decide(state, seq)
        return WindowReport(seq=seq, health=health, checks=report, drift=state.drift)

    def _new_segment(self, name: str, cs: CheckState, seq: int, alert: float, rollback: float) -> None:
        """A stage starts: passes are earned again. Accuracy's evidence does not depend on the
        canary's weight (the same golden rows, deterministic answers): it keeps its pass unless the
        stage changes its thresholds, and then its sums are re-tested against them at once. Every
        other check starts its pass side over."""
        if name == "accuracy":
            if cs.acc_thresholds is not None and cs.acc_thresholds != [alert, rollback]:
                if cs.passed_at is not None:
                    cs.passed_before = cs.passed_at
                cs.passed_at = None
                self._retest_accuracy(cs, alert, rollback, seq)
            return
        if cs.passed_at is not None:
            cs.passed_before = cs.passed_at
        cs.passed_at = None
        cs.window_test().new_segment(seq)
        cs.llr = 0.0
        cs.withdrawn_at = None

    def _retest_accuracy(self, cs: CheckState, alert: float, rollback: float, seq: int) -> None:
        """Accuracy's sums against a stage's other thresholds: the SPRT sums from the rows seen, and
        the fixed-sample tests when every row was seen."""
        t0, t1 = self._scale("accuracy", alert), self._scale("accuracy", rollback)
        cs.acc_thresholds = [alert, rollback]
        if not cs.n:
            return
        fail_at, pass_at = self.boundaries("accuracy")
        var = _accuracy_var(cs, t1)
        cs.llr = (t1 - t0) / var * (cs.acc_sum - cs.n * (t0 + t1) / 2.0)
        cs.mix = [(th - t0) / var * (cs.acc_sum - cs.n * (t0 + th) / 2.0)
                  for th in (t1 + off * (t1 - t0) for off, _ in MIXTURE)]
        if _log_mixture(cs.mix) >= fail_at and cs.failed_at is None:
            cs.failed_at = seq
        elif cs.llr <= pass_at and cs.failed_at is None:
            cs.passed_at = seq
        elif cs.exhausted:
            cs.insufficient = None
            self._final_accuracy(cs, t0, t1, seq)

    def _evidence(self, name: str, w: Window, health: str, cs: CheckState, alert: float,
                  rollback: float) -> Evidence:
        cfg = self.config
        if health == "stable_down":
            return Evidence(False, "stable is down in this window: nothing to compare the canary with")
        if name in cfg.prometheus:
            r = promchecks.reading(cfg.prometheus[name], w.prometheus.get(name), alert, rollback)
            return Evidence(r.measured, r.why, r.estimate, r.var, r.k, r.n, r.stable, r.canary, r.n_stable,
                            r.n_canary, missing=r.missing, short=r.missing and r.short)
        if name == "accuracy":
            return _accuracy(w, cs)
        if health == "golden" and name in ("latency", "ctr"):
            return Evidence(False, "golden-set burst: not latency evidence")
        if health == "overloaded" and name in ("latency", "errors", "errors_increase"):
            return Evidence(False, "Shadowgate could not send on time (its own overload): not counted")
        if name == "latency":
            return _latency(w, cfg.latency.quantile, cfg.latency.min_samples)
        if name == "errors":
            ns, es, nc, ec = _error_counts(w, health)
            if nc == 0:
                return Evidence(False, "no canary requests in this window")
            if ns and es / ns >= alert:
                return Evidence(False, f"stable itself fails {100 * es / ns:.2f} % >= alert: the increase "
                                       "over stable is judged instead", n_stable=ns, n_canary=nc,
                                stable=es / ns, canary=ec / nc)
            return Evidence(True, k=ec, n=nc, stable=(es / ns if ns else None), canary=ec / nc,
                            n_stable=ns, n_canary=nc, estimate=ec / nc)
        if name == "errors_increase":
            ns, es, nc, ec = _error_counts(w, health)
            if ns == 0 or nc == 0:
                return Evidence(False, "no requests to one of the versions in this window")
            p = min(es / ns + rollback, 0.5)  # nominal spread at the rollback boundary (not the canary's data)
            var = p * (1 - p) * (1.0 / ns + 1.0 / nc)
            return Evidence(True, estimate=ec / nc - es / ns, var=var, stable=es / ns, canary=ec / nc,
                            n_stable=ns, n_canary=nc)
        if name == "ctr":
            return _ctr(w, cfg.ctr.min_impressions)
        raise KeyError(name)

    def _rate(self, name: str) -> bool:
        """The canary's own rate (errors; Prometheus counters compared as `canary`)."""
        p = self.config.prometheus.get(name)
        return name == "errors" or (p is not None and p.compare == "canary")

    def _scale(self, name: str, t: float) -> float:
        """A threshold on the test's scale."""
        if name in self.config.prometheus:
            return promchecks.scale(self.config.prometheus[name], t)
        if name == "latency":
            return math.log(t)
        if name == "ctr":
            return -math.log1p(-t)
        return t

    def _broad(self, name: str) -> float | None:
        """Width of the wide alternative: a quarter for rates (0..1), an e-fold on log scales."""
        prom = self.config.prometheus.get(name)
        if name in ("errors", "errors_increase") or (prom is not None and prom.kind == "counter_ratio"
                                                      and prom.compare in ("difference", "canary")):
            return 0.25
        if name in ("latency", "ctr") or (prom is not None and prom.kind != "gauge_ceiling"):
            return 1.0
        return None

    def _phi_max(self, name: str) -> float | None:
        return self.config.check(name).max_overdispersion

    def _apply(self, name: str, cs: CheckState, ev: Evidence, alert: float, rollback: float,
               seq: int, learn: bool = True) -> dict[str, Any]:
        cfg = self.config
        fail_at, pass_at = self.boundaries(name)
        t0, t1 = self._scale(name, alert), self._scale(name, rollback)
        out: dict[str, Any] = {"alert": alert, "rollback": rollback, "measured": ev.measured,
                               "stable": ev.stable, "canary": ev.canary}
        if not ev.measured:
            cs.nodata = ev.why
            on_missing = cfg.check(name).on_missing if name == "ctr" or name in cfg.prometheus else "skip"
            if ev.missing and not ev.short and on_missing == "fail" and cs.forced is None \
                    and cs.failed_at is None:
                what = "CTR counts" if name == "ctr" else "data"
                cs.forced = f"{what} missing and {name}.on_missing is fail: {ev.why}"
                cs.failed_at = seq
            if ev.short:  # the window was too small for the statistic: say what would let it decide
                cs.short += 1
                if cs.short >= SHORT_WINDOWS and cs.insufficient is None:
                    cs.insufficient = (f"{cs.short} windows in a row too small to measure it ({ev.why}): "
                                       "raise the load rate or the interval")
            out.update(why=ev.why, llr=cs.llr)
            return out
        cs.nodata = None
        cs.short = 0
        if cs.insufficient and not cs.exhausted:
            cs.insufficient = None  # windows big enough again
        cs.windows += 1
        cs.n_stable += ev.n_stable
        cs.n_canary += ev.n_canary
        if name == "accuracy":
            inc = self._accuracy_update(cs, ev, alert, rollback, t0, t1, seq)
            fail_ev = _log_mixture(cs.mix)
        else:
            if self._rate(name):
                cs.k += ev.k
                cs.n += ev.n
                p = min(max(t1, 1e-6), 0.5)
                ev.estimate, ev.var = ev.k / ev.n, p * (1 - p) / ev.n
            test = cs.window_test()
            test.update(seq, ev.estimate, ev.var, t0, t1, horizon=self.horizon(), phi_max=self._phi_max(name),
                        learn=learn, broad=self._broad(name))
            before = cs.llr
            cs.llr = -test.passing.stat if math.isfinite(test.passing.stat) else 0.0
            inc = cs.llr - before
            fail_ev = test.fail.stat
            if fail_ev >= fail_at and cs.failed_at is None:
                cs.failed_at = seq
            # A pass holds while the pass side's e-value is at its boundary now (P(at it now) <= P(ever
            # at it) <= beta, so this only adds caution): windows that move towards rollback after a
            # pass withdraw it, and the change detector on the fail side takes it from there.
            if test.passing.stat >= -pass_at:
                if cs.passed_at is None and cs.failed_at is None:
                    cs.passed_at, cs.withdrawn_at = seq, None
            elif cs.passed_at is not None:
                cs.passed_at, cs.withdrawn_at = None, seq
        out.update(estimate=ev.estimate, llr=cs.llr, fail_evidence=fail_ev, increment=inc,
                   n_stable=ev.n_stable, n_canary=ev.n_canary)
        cs.last = {k: v for k, v in out.items() if k not in ("alert", "rollback")}
        return out

    # ------------------------------------------------------------ accuracy

    def _accuracy_update(self, cs: CheckState, ev: Evidence, alert: float, rollback: float, t0: float,
                         t1: float, seq: int) -> float:
        """Paired per distinct golden row (rows are the independent units: a deterministic model
        answers a row the same way each time). Gaussian SPRT at (alpha_k/2, beta/2) while rows
        arrive; the fixed-sample test at exhaustion decides with the other halves, or says the
        set is too small to decide."""
        fail_at, pass_at = self.boundaries("accuracy")
        n_new, sx, disc = ev.rows
        if cs.acc_thresholds is not None and cs.acc_thresholds != [alert, rollback]:
            self._retest_accuracy(cs, alert, rollback, seq)  # thresholds changed without a stage start
        cs.acc_thresholds = [alert, rollback]
        cs.n += n_new
        cs.acc_sum += sx
        cs.acc_disc += disc
        var = _accuracy_var(cs, t1)

        def lr(th: float) -> float:
            return (th - t0) / var * (sx - n_new * (t0 + th) / 2.0)
        ev.estimate = sx / n_new if n_new else None
        ev.var = var / n_new if n_new else None
        inc = lr(t1)
        cs.llr += inc
        for j, (off, _) in enumerate(MIXTURE):
            cs.mix[j] += lr(t1 + off * (t1 - t0))
        if _log_mixture(cs.mix) >= fail_at and cs.failed_at is None:
            cs.failed_at = seq
        if cs.llr <= pass_at and cs.passed_at is None and cs.failed_at is None:
            cs.passed_at = seq
        if self.golden_rows and cs.n >= self.golden_rows and not cs.exhausted:
            cs.exhausted = True
            self._final_accuracy(cs, t0, t1, seq)
        return inc

    def _final_accuracy(self, cs: CheckState, t0: float, t1: float, seq: int) -> None:
        """Every golden row seen, no boundary crossed: fixed-sample z tests on the whole set.

        H0 (fail): drop <= alert, rejected at alpha_k/2: the check fails.
        H0 (pass): drop >= rollback, rejected at beta/2: the check passes.
        Neither: the golden set cannot tell, and the check stays undecided (it never passes on
        a set too small to rule out `rollback`)."""
        if cs.failed_at is not None or cs.passed_at is not None:
            return
        var = _accuracy_var(cs, t1)
        se = math.sqrt(var / cs.n)
        mean = cs.acc_sum / cs.n
        if (mean - t0) / se > _norm_isf(self.alphas["accuracy"] / 2.0):
            cs.failed_at = seq
        elif (t1 - mean) / se > _norm_isf(self.config.beta / 2.0):
            cs.passed_at = seq
        else:
            from .plan import accuracy_plan

            need = accuracy_plan(self.config, self.golden_rows or cs.n, self.alphas["accuracy"]).rows_needed
            cs.insufficient = (f"every one of the {cs.n} golden rows seen and the drop "
                               f"{100 * mean:.1f} points [+-{100 * _norm_isf(self.config.beta / 2.0) * se:.1f}] "
                               f"cannot be told from {100 * t1:g}: a golden set of about {need} rows can decide")

    # ------------------------------------------------------------ decision

    def _note(self, state: RunState, seq: int, kind: str, text: str) -> None:
        state.changes.append({"window": seq, "kind": kind, "text": text})
        if len(state.changes) > MAX_CHANGES:
            del state.changes[1]  # the first entry stays: how the run began

    def _decide(self, state: RunState, seq: int) -> None:
        if state.outcome == "fail":
            return  # a failed run stays failed
        was = state.outcome
        critical = [n for n in self.active if self.config.check(n).critical]
        stuck = [n for n in critical if state.checks[n].insufficient and state.checks[n].failed_at is None
                 and state.checks[n].passed_at is None]
        if any(state.checks[n].failed_at is not None for n in critical):
            state.outcome = "fail"
        elif any(self.config.check(n).on_insufficient == "fail" for n in stuck):
            state.outcome = "fail"
        elif critical and all(state.checks[n].passed_at is not None for n in critical):
            state.outcome = "pass"
        elif self.config.max_windows is not None and state.windows >= self.config.max_windows:
            state.outcome = {"inconclusive": "continue"}.get(self.config.at_horizon, self.config.at_horizon)
        else:
            state.outcome = "continue"
        if state.outcome != was:
            state.decided_at = seq if state.outcome != "continue" else None
            self._note(state, seq, "decision", f"{was} -> {state.outcome} at window {seq}")
        if state.outcome == "fail":
            state.final = True

    def warnings(self) -> list[str]:
        """What this configuration cannot promise (said at start-up and in every answer)."""
        from .plan import accuracy_plan

        out = []
        if "accuracy" in self.active and self.golden_rows:
            p = accuracy_plan(self.config, self.golden_rows, self.alphas["accuracy"])
            if not p.separable:
                out.append(p.message)
        return out

    def verdict(self, state: RunState) -> Verdict:
        """The run's decision now, with every check's figures: reads the state only."""
        cfg = self.config
        seq = max(state.windows, 1)
        checks = []
        for name in self.active:
            cs = state.checks.get(name) or CheckState(name)
            checks.append(self._check_result(name, cs, seq))
        for d in state.drift:
            checks.append(CheckResult.from_dict(d))
        failing = [c for c in checks if c.verdict == "fail" and c.critical]
        passed, phase = phase_of(state.outcome)
        crit = [c for c in checks if c.critical]
        stuck = [c for c in crit if c.verdict == "insufficient"]
        stage = f" in stage {state.stage} (from window {state.stage_from})" if state.stage else ""
        if state.outcome == "fail":
            reason = "fail: " + "; ".join(f"{c.name}: {c.reason}" for c in failing or stuck)
        elif state.outcome == "pass":
            reason = (f"pass{stage}: {len(crit)} critical checks not as bad as rollback (beta {100 * cfg.beta:g} %): "
                      + "; ".join(f"{c.name} {self._fmt(c.name, c.estimate)}" for c in crit))
        else:
            waiting = [c for c in crit if c.verdict in ("continue", "nodata", "insufficient")]
            head = "continue" if state.windows < (cfg.max_windows or 10**9) else \
                f"undecided after {state.windows} windows (max_windows)"
            if stuck:
                head = "cannot decide yet"
            reason = f"{head}{stage}: " + "; ".join(f"{c.name}: {c.reason}" for c in stuck + [
                c for c in waiting if c not in stuck])
        if state.health == "stable_down":
            reason += " | newest window not counted: stable is down"
        elif state.health == "overloaded":
            reason += " | newest window's load not counted: Shadowgate could not send on time"
        alarms = [c.name for c in crit if c.newest_beyond_rollback]
        return Verdict(outcome=state.outcome, passed=passed, phase=phase, reason=reason, checks=checks,
                       critical_failure=state.outcome == "fail", scope="run", look=state.windows,
                       alpha=cfg.alpha, beta=cfg.beta, decided_at=state.decided_at, window_health=state.health,
                       warnings=self.warnings(), final=state.final, stage=state.stage,
                       stage_from=state.stage_from, insufficient=[f"{c.name}: {c.reason}" for c in stuck],
                       alarms=alarms, changes=list(state.changes))

    def _check_result(self, name: str, cs: CheckState, seq: int) -> CheckResult:
        cfg = self.config
        ccfg = cfg.check(name)
        prom = cfg.prometheus.get(name)
        alert, rollback = cfg.thresholds(name, seq)
        fail_at, pass_at = self.boundaries(name)
        fail_ev = _log_mixture(cs.mix) if name == "accuracy" else None
        test = None if name == "accuracy" else (cs.test or WindowTest())
        if test is not None:
            fail_ev = test.fail.stat if math.isfinite(test.fail.stat) else -50.0
        r = CheckResult(name=name, critical=ccfg.critical, unit=promchecks.unit(prom) if prom else _UNITS[name],
                        test=promchecks.test_name(prom) if prom else _TESTS[name], alert=alert,
                        rollback=rollback, llr=cs.llr, fail_evidence=fail_ev,
                        fail_at=fail_at, pass_at=pass_at,
                        alpha=self.alphas[name], beta=cfg.beta, windows=cs.windows, n_stable=cs.n_stable,
                        n_canary=cs.n_canary, measured=cs.windows > 0)
        last = cs.last
        r.stable, r.canary = last.get("stable"), last.get("canary")
        if r.stable is not None and r.canary is not None:
            r.difference = r.canary - r.stable
            r.ratio = r.canary / r.stable if r.stable else None
        r.window_estimate = self._natural(name, last.get("estimate"))
        t1 = self._scale(name, rollback)
        if last.get("estimate") is not None:
            r.newest_beyond_rollback = bool(last["estimate"] > t1)
        # The estimate printed is the one the deciding side tested: the pass side's windows (this
        # stage's) once it passed or while it leads, else the fail side's; its interval uses the
        # spread those windows show (t quantile), at the level of the side's error rate.
        if name == "accuracy" and cs.n:
            var = _accuracy_var(cs, t1)
            est, se, level, df = cs.acc_sum / cs.n, math.sqrt(var / cs.n), self.alphas[name], None
        elif test is not None and test.fail.estimate is not None:
            side = test.fail if (cs.failed_at is not None or (cs.passed_at is None and
                                                               test.fail.stat > test.passing.stat)) else test.passing
            if side.estimate is None:
                side = test.fail
            est, se = side.estimate, side.se
            level = self.alphas[name] if side is test.fail else cfg.beta
            df = max(side.windows - 1, 1)
        else:
            est = se = None
        if est is not None and se is not None:
            half = (_t_isf(level, df) if df else _norm_isf(level)) * se
            r.estimate = self._natural(name, est)
            lo, hi = self._natural(name, est - half), self._natural(name, est + half)
            lo, hi = min(lo, hi), max(lo, hi)
            if self._rate(name):  # a rate is never below 0
                r.estimate, lo = max(r.estimate, 0.0), max(lo, 0.0)
            r.ci = (lo, hi)
        if cs.failed_at is not None:
            r.verdict, r.decided_at = "fail", cs.failed_at
        elif cs.passed_at is not None:
            r.verdict, r.decided_at = "pass", cs.passed_at
        elif cs.insufficient:
            r.verdict = "insufficient"
        elif cs.windows:
            r.verdict = "continue"
        else:
            r.verdict = "nodata"
        what = promchecks.what(prom) if prom else None
        if name == "latency":
            what = f"P{100 * self.config.latency.quantile:g} canary/stable"
        r.reason = _reason(name, r, cs, self._fmt, what)
        return r

    def _natural(self, name: str, v: float | None) -> float | None:
        """From the test scale back to the thresholds' units."""
        if v is None:
            return None
        if name in self.config.prometheus:
            return promchecks.natural(self.config.prometheus[name], v)
        if name == "latency":
            return math.exp(min(v, 50.0))
        if name == "ctr":
            return -math.expm1(-v)
        return v

    def _fmt(self, name: str, v: float | None) -> str:
        if v is None:
            return "-"
        if name in self.config.prometheus:
            return promchecks.fmt(self.config.prometheus[name], v)
        if name == "latency":
            return f"{v:.2f}x"
        if name == "ctr":
            return f"{100 * v:.0f} % drop" if v >= 0 else f"{-100 * v:.0f} % higher"
        if name == "accuracy":
            return f"{100 * v:.1f} points"
        if name == "errors_increase":
            return f"{100 * v:+.2f} points"
        return f"{100 * v:.2f} %"


# ------------------------------------------------------------------ evidence per check


def _health(w: Window, cfg: JudgeConfig) -> str:
    """"stable_down", "overloaded", "golden" or "ok" for one window."""
    ns = w.stable.requests + len(w.probes)
    es = w.stable.errors + int(np.count_nonzero(w.probes.stable_pred < 0))
    if ns and es / ns > cfg.stable_max_error_ratio:
        return "stable_down"
    # Shadowgate itself behind: its loop ran late (the session says so), or even the stable's sends
    # could not leave on time. The canary's own late sends are not that: a slow canary fills the
    # concurrency cap, and its latency from the intended send time is evidence against it.
    st = w.stable
    if w.unmeasured or (st.intended and st.late / st.intended > cfg.max_late_ratio):
        return "overloaded"
    if w.golden:
        return "golden"
    return "ok"


def _error_counts(w: Window, health: str) -> tuple[int, int, int, int]:
    """(stable requests, stable errors, canary requests, canary errors): load plus probes."""
    sp, cp = w.probes.stable_pred, w.probes.canary_pred
    return (w.stable.requests + sp.size, w.stable.errors + int(np.count_nonzero(sp < 0)),
            w.canary.requests + cp.size, w.canary.errors + int(np.count_nonzero(cp < 0)))


def with_errors(t: VersionTraffic) -> np.ndarray:
    """Sorted latencies (s) with each failed request counted at the deadline.

    When `latencies_s` is a sample of the successes, the errors are scaled to
    the same sampling fraction, so their share of the sample is their share
    of the requests.
    """
    lat = t.latencies_s[np.isfinite(t.latencies_s)]
    lat = lat[lat >= 0.0]
    ok = t.requests - t.errors
    if t.errors > 0:
        deadline = t.deadline_s if t.deadline_s else (float(lat.max()) if lat.size else 1.0)
        k = t.errors if ok <= 0 or lat.size >= ok else int(round(t.errors * lat.size / ok))
        lat = np.concatenate([lat, np.full(k, deadline)])
    return np.sort(lat)


def _latency(w: Window, q: float, min_samples: int) -> Evidence:
    s, c = with_errors(w.stable), with_errors(w.canary)
    if min(s.size, c.size) < min_samples:
        return Evidence(False, f"{min(s.size, c.size)} requests per version < min_samples {min_samples}",
                        n_stable=int(s.size), n_canary=int(c.size), short=True)
    se_s, se_c = stats._log_quantile_se(s, q), stats._log_quantile_se(c, q)
    if se_s is None or se_c is None:
        return Evidence(False, f"too few requests for a P{100 * q:g} interval "
                               f"(at least {stats.min_samples_for_quantile(q)} per version)", short=True)
    qs, qc = stats.quantile(s, q), stats.quantile(c, q)
    est = math.log(max(qc, 1e-6)) - math.log(max(qs, 1e-6))
    var = max(se_s, _MIN_LOG_SE) ** 2 + max(se_c, _MIN_LOG_SE) ** 2
    return Evidence(True, estimate=est, var=var, stable=qs, canary=qc, n_stable=int(s.size), n_canary=int(c.size))


def _log_mixture(sums: list[float]) -> float:
    """log of sum_j w_j exp(sums_j): the fail side's statistic."""
    terms = [math.log(w) + s for (_, w), s in zip(MIXTURE, sums)]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def _row_keys(pr) -> np.ndarray:
    if pr.rows is not None:
        return pr.rows
    if pr.inputs is None:
        return np.full(len(pr), -1, dtype=np.int64)
    from .checks import input_keys

    return input_keys(pr.inputs)


def _accuracy(w: Window, cs: CheckState) -> Evidence:
    pr = w.probes
    answered = (pr.stable_pred >= 0) & (pr.canary_pred >= 0)
    if not answered.any():
        return Evidence(False, "no probe pair answered by both versions in this window")
    keys = _row_keys(pr)[answered]
    s_right = (pr.stable_pred[answered] == pr.labels[answered]).astype(np.int64)
    c_right = (pr.canary_pred[answered] == pr.labels[answered]).astype(np.int64)
    seen = set(cs.rows_seen)
    new = []
    for i, key in enumerate(keys.tolist()):
        if key == -1 or key not in seen:  # unknown rows count every time
            new.append(i)
            if key != -1:
                seen.add(key)
    cs.rows_seen = sorted(seen)
    idx = np.asarray(new, dtype=np.int64)
    x = s_right[idx] - c_right[idx]
    acc_s, acc_c = float(s_right.mean()), float(c_right.mean())
    if idx.size == 0:
        return Evidence(False, "every golden row in this window was seen before", stable=acc_s, canary=acc_c)
    return Evidence(True, stable=acc_s, canary=acc_c, n_stable=int(idx.size), n_canary=int(idx.size),
                    rows=(int(idx.size), int(x.sum()), int(np.count_nonzero(x))))


def _accuracy_var(cs: CheckState, rollback: float) -> float:
    """Per-row variance of x: estimated, never below what a drop at `rollback` implies."""
    if cs.n == 0:
        return rollback * (1.0 - rollback)
    mean = cs.acc_sum / cs.n
    return max(cs.acc_disc / cs.n - mean * mean, rollback * (1.0 - rollback))


def _ctr(w: Window, min_impressions: int) -> Evidence:
    """CTR is a Prometheus counter pair compared as a drop (analyses.promchecks.counter_reading)."""
    c = w.ctr
    if c is None:
        return Evidence(False, "no click and impression counts (Prometheus down or empty)", missing=True)
    if min(c.stable_impressions, c.canary_impressions) < min_impressions:
        return Evidence(False, f"fewer than {min_impressions} impressions per version", missing=True)
    if c.stable_clicks <= 0:
        return Evidence(False, "stable has no clicks", missing=True)
    r = promchecks.counter_reading(c.stable_clicks, c.stable_impressions, c.canary_clicks, c.canary_impressions,
                                   "drop", min_impressions, events="clicks", trials="impressions")
    return Evidence(r.measured, r.why, r.estimate, r.var, stable=r.stable, canary=r.canary,
                    n_stable=int(c.stable_impressions), n_canary=int(c.canary_impressions), missing=r.missing)


# ------------------------------------------------------------------ reasons


def _reason(name: str, r: CheckResult, cs: CheckState, fmt, what: str | None = None) -> str:
    thresholds = f"alert {fmt(name, r.alert)}, rollback {fmt(name, r.rollback)}"
    if cs.forced:
        return cs.forced
    if cs.insufficient and r.verdict == "insufficient":
        return f"cannot decide: {cs.insufficient}"
    if not cs.windows:
        return f"no data yet ({cs.nodata or 'no window measured it'})"
    what = what or {"latency": "P99 canary/stable", "accuracy": "accuracy drop", "errors": "canary error rate",
                    "errors_increase": "error rate increase over stable", "ctr": "CTR"}[name]
    est = fmt(name, r.estimate)
    if r.ci is not None:
        est += f" [{fmt(name, r.ci[0])}, {fmt(name, r.ci[1])}]"
    base = f"{what} {est} over {cs.windows} window{'s' if cs.windows != 1 else ''}"
    if name == "accuracy":
        base = f"{what} {est} on {cs.n} golden rows ({cs.acc_disc} discordant)"
    if r.verdict == "fail":
        if cs.exhausted and r.fail_evidence < (r.fail_at or 0):
            return f"{base}: every golden row seen, significantly beyond alert ({thresholds})"
        return f"{base}: evidence reached the rollback boundary ({thresholds}, alpha {100 * r.alpha:.2g} %)"
    if r.verdict == "pass":
        return f"{base}: not as bad as rollback ({thresholds}, beta {100 * r.beta:.2g} %)"
    extra = f"; newest window not counted: {cs.nodata}" if cs.nodata else ""
    again = f"; passed at window {cs.passed_before} in an earlier stage, re-tested now" if cs.passed_before else ""
    if cs.withdrawn_at:
        again += f"; a pass was withdrawn at window {cs.withdrawn_at}: the newest windows no longer show it"
    return (f"{base}: undecided ({thresholds}; evidence for rollback {r.fail_evidence:.1f} of "
            f"{r.fail_at:.1f} to fail, {-r.llr:.1f} of {-r.pass_at:.1f} to pass){again}{extra}")
