"""The gate: one sequential decision per run, with both error rates guaranteed.

Per critical check, two hypotheses about the canary's harm d (how much worse
than stable; scales in analyses.config):

    H0: d <= alert      (a tolerated canary: must pass)
    H1: d >= rollback   (a canary that must be stopped)

After every window the check adds that window's log-likelihood ratio of
"d = rollback" against "d = alert" to a running sum L (Wald's sequential
probability ratio test with an indifference zone between the thresholds):

- L >= log(1/alpha_k): the check fails, and with it the run (for good).
- L <= log(beta): the check passes.
- otherwise: continue (not enough evidence yet).

Why the guarantees hold, for any number of looks and whenever the caller
stops: exp(L) is a nonnegative martingale under d = alert, and a
supermartingale for every d < alert (the likelihood ratio is monotone in d),
so by Ville's inequality P(sup exp(L) >= 1/alpha_k) <= alpha_k. Likewise
exp(-L) under d >= rollback gives P(ever L <= log beta) <= beta. No
approximation of Wald's boundaries is involved: these are the exact
(conservative) forms. The run fails if any critical check fails, so its
false-fail rate is at most the sum of the checks' alpha_k = alpha (the split
follows `alpha_weight`, over the checks that can have data). It passes only
when every critical check passed, so a canary at `rollback` on one check
passes with probability at most beta. Stages (thresholds per window) keep
this: each window's factor uses the hypotheses in force for that window.

The per-window likelihood ratio of each check:

- errors (the canary's own rate over load and probe requests): exact
  Bernoulli likelihood ratio, k log(p1/p0) + (n-k) log((1-p1)/(1-p0)).
- latency (log of the canary/stable quantile ratio), errors_increase
  (canary rate minus stable's) and CTR (minus the log of the CTR ratio):
  Gaussian, est ~ N(d, v), with v the window's variance (Maritz-Jarrett for
  quantiles, binomial for rates). Each window is one observation, so bursts
  and correlation inside a window only matter through v; for latency v is
  multiplied by the overdispersion the run's own windows show (the spread
  of per-window estimates beyond what v predicts, shrunk towards 1), which
  is what keeps identical versions on two busy servers from failing.
  Failed and timed-out requests count as latency at the deadline.
- Prometheus checks (production metrics of both versions, fetched when a
  window closes; analyses.promchecks says each test): counters compared as
  two proportions (Gaussian on the difference or the log ratio, or exact
  Bernoulli on the canary's own rate), histogram quantiles as a log ratio
  (bucketed, overdispersion-corrected and capped per window as latency),
  gauges as a mean level
  with the larger of the within-window and the window-to-window variance.
  Their names are the configuration's; every rule above applies unchanged.
  They are production traffic, not Shadowgate's load: Shadowgate's own
  overload does not discount them; a window without a fetch (the golden
  burst) gives no evidence; missing data follows the check's `on_missing`.
- accuracy: paired per golden row, x = stable right - canary right, with
  mean d; each golden row counts once (a deterministic model repeats its
  answer), so the evidence is bounded by the golden set. Gaussian LR with
  variance max(estimated, rollback (1 - rollback)), never below what H1
  implies. As the maximum information is known, the sequential part runs at
  (alpha_k/2, beta/2) and, when every row was seen without a decision, a
  fixed-sample z test at alpha_k/2 decides: the union still holds alpha_k,
  and beta when the set can separate the thresholds (analyses.plan says
  whether it can; the verdict warns when it cannot).

Windows that cannot be compared give no evidence: stable down (it fails
more than `stable_max_error_ratio`: the canary is not blamed), Shadowgate
itself overloaded (more than `max_late_ratio` of sends late: no latency or
error evidence for either version), the golden burst (probes only: never
latency evidence). Cost per look: constant (sufficient statistics updated
once per window; nothing is kept from earlier windows but sums and the set
of golden rows seen).
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
from .window import VersionTraffic, Window

__all__ = ["CheckState", "Gate", "RunState", "WindowReport"]

# The fail side mixes alternatives at and beyond rollback (offsets in units of
# rollback - alert, with prior weights): a mixture of likelihood ratios is
# still a martingale under H0, so Ville's bound holds, and a gross regression
# (3x P99, 10 points of accuracy) fails far sooner than the SPRT aimed at
# rollback would let it. The pass side keeps the simple ratio at rollback.
MIXTURE = ((0.0, 0.4), (1.0, 0.3), (2.0, 0.2), (4.0, 0.1))
_MIN_LOG_SE = 0.01  # per-version floor of the log-quantile SE: clock granularity
_SHRINK_WINDOWS = 4.0  # prior weight (in windows) of "no overdispersion" for latency
_Z2_CAP = 9.0  # one window adds at most 3 standard errors squared to the overdispersion estimate
_Z2_MEAN = 0.9939  # E[min(chi2_1, 9)]: what the capped sum averages per window without overdispersion

_TESTS = {
    "accuracy": "paired SPRT on distinct golden rows (stable right - canary right)",
    "latency": "SPRT on the log quantile ratio per window (Maritz-Jarrett variance, overdispersion-corrected)",
    "errors": "Bernoulli SPRT on the canary's failed requests",
    "errors_increase": "SPRT on the canary's error rate minus stable's (binomial variance)",
    "ctr": "SPRT on the log CTR ratio per window (binomial variance)",
}
_UNITS = {"accuracy": "ratio", "latency": "s", "errors": "ratio", "errors_increase": "ratio", "ctr": "ratio"}


def _norm_isf(p: float) -> float:
    return float(-special.ndtri(p))


# ------------------------------------------------------------------ state


@dataclass
class CheckState:
    """Sufficient statistics of one check over a run (no per-window history)."""

    name: str
    llr: float = 0.0
    mix: list[float] = field(default_factory=lambda: [0.0] * len(MIXTURE))
    windows: int = 0
    failed_at: int | None = None
    passed_at: int | None = None
    forced: str | None = None  # a failure without a test (CTR missing with on_missing: fail)
    # inverse-variance pool of the estimates (display: the run's estimate and interval)
    info: float = 0.0
    wsum: float = 0.0
    # overdispersion of per-window estimates (latency)
    m: int = 0
    zs: float = 0.0  # sum of capped squared standardized distances (latency overdispersion)
    zm: int = 0
    s1: float = 0.0
    s2: float = 0.0
    sv: float = 0.0
    # counts (errors: canary; accuracy: rows, sum of x, discordant rows)
    k: int = 0
    n: int = 0
    acc_sum: int = 0
    acc_disc: int = 0
    rows_seen: list[int] = field(default_factory=list)
    n_stable: int = 0
    n_canary: int = 0
    exhausted: bool = False
    last: dict[str, Any] = field(default_factory=dict)  # the newest window's figures
    nodata: str | None = None  # why the newest window gave no evidence

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckState":
        return cls(**d)


@dataclass
class RunState:
    """Everything the gate knows about a run: small, stored after every window."""

    windows: int = 0
    counted: int = 0
    outcome: str = "continue"
    decided_at: int | None = None
    health: str | None = None
    checks: dict[str, CheckState] = field(default_factory=dict)
    drift: list[dict[str, Any]] = field(default_factory=list)  # newest window's drift report

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checks"] = {k: v.to_dict() for k, v in self.checks.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunState":
        d = dict(d)
        d["checks"] = {k: CheckState.from_dict(v) for k, v in d.get("checks", {}).items()}
        return cls(**d)


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
        """(fail_at, pass_at) of check `name` on its log-likelihood ratio."""
        a, b = self.alphas[name], self.config.beta
        if name == "accuracy" and self.golden_rows:
            a, b = a / 2.0, b / 2.0  # the other halves go to the test at exhaustion
        return math.log(1.0 / a), math.log(b)

    def new_state(self) -> RunState:
        return RunState(checks={n: CheckState(n) for n in self.active})

    # ------------------------------------------------------------ update

    def update(self, state: RunState, window: Window) -> WindowReport:
        """Add one window's evidence to `state` (in place); constant cost in the run's length."""
        cfg = self.config
        state.windows += 1
        seq = state.windows
        health = _health(window, cfg)
        state.health = health
        report: dict[str, dict[str, Any]] = {}
        if health in ("ok", "golden", "overloaded"):
            state.counted += 1
        for name in self.active:
            cs = state.checks.setdefault(name, CheckState(name))
            alert, rollback = cfg.thresholds(name, seq)
            ev = self._evidence(name, window, health, cs, alert, rollback)
            report[name] = self._apply(name, cs, ev, alert, rollback, seq)
        if cfg.drift.enabled and len(window.probes):
            from .checks import drift_report

            state.drift = [c.to_dict() for c in drift_report(window, cfg)]
        self._decide(state, seq)
        return WindowReport(seq=seq, health=health, checks=report, drift=state.drift)

    def _evidence(self, name: str, w: Window, health: str, cs: CheckState, alert: float,
                  rollback: float) -> Evidence:
        cfg = self.config
        if health == "stable_down":
            return Evidence(False, "stable is down in this window: nothing to compare the canary with")
        if name in cfg.prometheus:
            r = promchecks.reading(cfg.prometheus[name], w.prometheus.get(name), alert, rollback,
                                   (cs.m, cs.s1, cs.s2))
            return Evidence(r.measured, r.why, r.estimate, r.var, r.k, r.n, r.stable, r.canary, r.n_stable,
                            r.n_canary, missing=r.missing)
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
            ps, pc = (es + 0.5) / (ns + 1.0), (ec + 0.5) / (nc + 1.0)
            var = ps * (1 - ps) / ns + pc * (1 - pc) / nc
            return Evidence(True, estimate=ec / nc - es / ns, var=var, stable=es / ns, canary=ec / nc,
                            n_stable=ns, n_canary=nc)
        if name == "ctr":
            return _ctr(w, cfg.ctr.min_impressions)
        raise KeyError(name)

    def _bernoulli(self, name: str) -> bool:
        """Exact Bernoulli likelihood ratio on the canary's counts (else Gaussian on an estimate)."""
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

    def _apply(self, name: str, cs: CheckState, ev: Evidence, alert: float, rollback: float,
               seq: int) -> dict[str, Any]:
        cfg = self.config
        fail_at, pass_at = self.boundaries(name)
        t0, t1 = self._scale(name, alert), self._scale(name, rollback)
        out: dict[str, Any] = {"alert": alert, "rollback": rollback, "measured": ev.measured,
                               "stable": ev.stable, "canary": ev.canary}
        if not ev.measured:
            cs.nodata = ev.why
            on_missing = cfg.check(name).on_missing if name == "ctr" or name in cfg.prometheus else "skip"
            if ev.missing and on_missing == "fail" and cs.forced is None and cs.failed_at is None:
                what = "CTR counts" if name == "ctr" else "data"
                cs.forced = f"{what} missing and {name}.on_missing is fail: {ev.why}"
                cs.failed_at = seq
            out.update(why=ev.why, llr=cs.llr)
            return out
        cs.nodata = None
        cs.windows += 1
        cs.n_stable += ev.n_stable
        cs.n_canary += ev.n_canary
        prom = cfg.prometheus.get(name)
        bern = self._bernoulli(name)
        if bern:
            k, n = ev.k, ev.n

            def lr(p1: float, p0: float = t0) -> float:
                p1 = min(p1, 1.0 - 1e-9)
                return k * math.log(p1 / p0) + (n - k) * math.log((1 - p1) / (1 - p0))
            cs.k += ev.k
            cs.n += ev.n
        elif name == "accuracy":
            n_new, sx, disc = ev.rows
            cs.n += n_new
            cs.acc_sum += sx
            cs.acc_disc += disc
            var = _accuracy_var(cs, t1)

            def lr(th: float) -> float:
                return (th - t0) / var * (sx - n_new * (t0 + th) / 2.0)
            ev.estimate = sx / n_new if n_new else None
            ev.var = var / n_new if n_new else None
        else:
            var = ev.var
            if name == "latency" or (prom is not None and prom.kind != "gauge_ceiling"):
                if name == "latency" or prom.overdispersion:
                    var *= _overdispersion(cs)
                if cs.info > 0:  # how far this window is from the run so far, in its own standard errors
                    z2 = (ev.estimate - cs.wsum / cs.info) ** 2 / (ev.var + 1.0 / cs.info)
                    cs.zs += min(z2, _Z2_CAP)
                    cs.zm += 1
                cs.m += 1
                cs.s1 += ev.estimate
                cs.s2 += ev.estimate * ev.estimate
                cs.sv += ev.var
            elif prom is not None:  # gauges: the window-to-window spread is already in ev.var
                cs.m += 1
                cs.s1 += ev.estimate
                cs.s2 += ev.estimate * ev.estimate
            x = ev.estimate

            def lr(th: float) -> float:
                return (th - t0) / var * (x - (t0 + th) / 2.0)
            ev.var = var
        # Latency: no single window may carry more than `max_window_evidence` of the fail boundary
        # (nor of its mirror on the pass side). A stall of one server process on a busy host makes one
        # window look like a 3x regression (or, on stable's side, like a faster canary); a regression
        # persists, a stall does not. Each statistic is clipped at `cap` in the direction that would
        # decide it, which keeps its guarantee exact (the fail side's ratios from above:
        # E[exp(min(L, c))] <= E[exp(L)] <= 1 under H0; the pass side's from below), and at a loose
        # 2 * fail_at in the other direction, so one window cannot bury the statistic out of reach
        # either. That second clip adds at most e^-loose to the expectation; subtracting
        # log(1 + e^-loose) from every increment (2e-6 at alpha 0.2 %) keeps it at 1, exactly.
        cap = fail_at * self.config.latency.max_window_evidence if name == "latency" else math.inf
        if prom is not None and prom.window_cap() is not None:  # histograms: the same stalls, in production
            cap = fail_at * prom.window_cap()
        if cap >= fail_at:  # 1.0: one window may decide alone; no clipping at all
            cap = math.inf
        loose = 2.0 * fail_at if math.isfinite(cap) else math.inf
        corr = math.log1p(math.exp(-loose)) if math.isfinite(loose) else 0.0
        inc = min(max(lr(t1), -cap), loose) + corr
        for j, (off, _) in enumerate(MIXTURE):
            th = t1 + off * (t1 - t0)
            if bern and th >= 1.0:
                th = 1.0 - 1e-9
            cs.mix[j] += max(min(lr(th), cap), -loose) - corr
        if ev.estimate is not None and ev.var:
            cs.info += 1.0 / ev.var
            cs.wsum += ev.estimate / ev.var
        cs.llr += inc
        if _log_mixture(cs.mix) >= fail_at and cs.failed_at is None:
            cs.failed_at = seq
        if cs.llr <= pass_at and cs.passed_at is None and cs.failed_at is None:
            cs.passed_at = seq
        if name == "accuracy" and self.golden_rows and cs.n >= self.golden_rows and not cs.exhausted:
            cs.exhausted = True
            self._final_accuracy(cs, t0, t1, seq)
        out.update(estimate=ev.estimate, llr=cs.llr, fail_evidence=_log_mixture(cs.mix), increment=inc, n_stable=ev.n_stable, n_canary=ev.n_canary)
        cs.last = {k: v for k, v in out.items() if k not in ("alert", "rollback")}
        return out

    def _final_accuracy(self, cs: CheckState, t0: float, t1: float, seq: int) -> None:
        """Every golden row seen, no boundary crossed: a fixed-sample z test at alpha_k / 2."""
        if cs.failed_at is not None or cs.passed_at is not None:
            return
        var = _accuracy_var(cs, t1)
        z = (cs.acc_sum / cs.n - t0) / math.sqrt(var / cs.n)
        if z > _norm_isf(self.alphas["accuracy"] / 2.0) and cs.failed_at is None:
            cs.failed_at = seq
        else:
            cs.passed_at = seq

    # ------------------------------------------------------------ decision

    def _decide(self, state: RunState, seq: int) -> None:
        if state.outcome == "fail":
            return  # a failed run stays failed
        critical = [n for n in self.active if self.config.check(n).critical]
        if any(state.checks[n].failed_at is not None for n in critical):
            state.outcome, state.decided_at = "fail", seq
        elif critical and all(state.checks[n].passed_at is not None for n in critical):
            if state.outcome != "pass":
                state.outcome, state.decided_at = "pass", seq
        elif self.config.max_windows is not None and state.windows >= self.config.max_windows:
            outcome = {"inconclusive": "continue"}.get(self.config.at_horizon, self.config.at_horizon)
            state.outcome = outcome
            state.decided_at = seq if outcome != "continue" else None

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
        if state.outcome == "fail":
            reason = "fail: " + "; ".join(f"{c.name}: {c.reason}" for c in failing)
        elif state.outcome == "pass":
            crit = [c for c in checks if c.critical]
            reason = (f"pass: {len(crit)} critical checks not as bad as rollback (beta {100 * cfg.beta:g} %): "
                      + "; ".join(f"{c.name} {self._fmt(c.name, c.estimate)}" for c in crit))
        else:
            waiting = [c for c in checks if c.critical and c.verdict in ("continue", "nodata")]
            head = "continue" if state.windows < (cfg.max_windows or 10**9) else \
                f"undecided after {state.windows} windows (max_windows)"
            reason = f"{head}: " + "; ".join(f"{c.name}: {c.reason}" for c in waiting)
        if state.health == "stable_down":
            reason += " | newest window not counted: stable is down"
        elif state.health == "overloaded":
            reason += " | newest window's load not counted: Shadowgate could not send on time"
        return Verdict(outcome=state.outcome, passed=passed, phase=phase, reason=reason, checks=checks,
                       critical_failure=state.outcome == "fail", scope="run", look=state.windows,
                       alpha=cfg.alpha, beta=cfg.beta, decided_at=state.decided_at, window_health=state.health,
                       warnings=self.warnings())

    def _check_result(self, name: str, cs: CheckState, seq: int) -> CheckResult:
        cfg = self.config
        ccfg = cfg.check(name)
        prom = cfg.prometheus.get(name)
        alert, rollback = cfg.thresholds(name, seq)
        fail_at, pass_at = self.boundaries(name)
        r = CheckResult(name=name, critical=ccfg.critical, unit=promchecks.unit(prom) if prom else _UNITS[name],
                        test=promchecks.test_name(prom) if prom else _TESTS[name], alert=alert,
                        rollback=rollback, llr=cs.llr, fail_evidence=_log_mixture(cs.mix),
                        fail_at=fail_at, pass_at=pass_at,
                        alpha=self.alphas[name], beta=cfg.beta, windows=cs.windows, n_stable=cs.n_stable,
                        n_canary=cs.n_canary, measured=cs.windows > 0)
        last = cs.last
        r.stable, r.canary = last.get("stable"), last.get("canary")
        if r.stable is not None and r.canary is not None:
            r.difference = r.canary - r.stable
            r.ratio = r.canary / r.stable if r.stable else None
        r.window_estimate = self._natural(name, last.get("estimate"))
        if cs.info > 0:
            est = cs.wsum / cs.info
            half = _norm_isf(self.alphas[name]) / math.sqrt(cs.info)
            r.estimate = self._natural(name, est)
            lo, hi = self._natural(name, est - half), self._natural(name, est + half)
            r.ci = (min(lo, hi), max(lo, hi))
        if self._bernoulli(name) and cs.n:
            r.estimate = cs.k / cs.n
            r.ci = stats.clopper_pearson(cs.k, cs.n, self.alphas[name])
        if cs.failed_at is not None:
            r.verdict, r.decided_at = "fail", cs.failed_at
        elif cs.passed_at is not None:
            r.verdict, r.decided_at = "pass", cs.passed_at
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
        return Evidence(False, f"{min(s.size, c.size)} requests < min_samples {min_samples}",
                        n_stable=int(s.size), n_canary=int(c.size))
    se_s, se_c = stats._log_quantile_se(s, q), stats._log_quantile_se(c, q)
    if se_s is None or se_c is None:
        return Evidence(False, f"too few requests for a P{100 * q:g} interval "
                               f"(at least {stats.min_samples_for_quantile(q)} per version)")
    qs, qc = stats.quantile(s, q), stats.quantile(c, q)
    est = math.log(max(qc, 1e-6)) - math.log(max(qs, 1e-6))
    var = max(se_s, _MIN_LOG_SE) ** 2 + max(se_c, _MIN_LOG_SE) ** 2
    return Evidence(True, estimate=est, var=var, stable=qs, canary=qc, n_stable=int(s.size), n_canary=int(c.size))


def _log_mixture(sums: list[float]) -> float:
    """log of sum_j w_j exp(sums_j): the fail side's statistic."""
    terms = [math.log(w) + s for (_, w), s in zip(MIXTURE, sums)]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def _overdispersion(cs: CheckState) -> float:
    """How much more per-window estimates spread than their variances say (>= 1), shrunk to 1.

    The mean squared standardized distance of each window's estimate from
    the run's estimate before it: 1 for independent samples, more when
    bursts hit one version's tail and not the other's. Each window's share
    is capped at 9 (3 standard errors), so one stalled window cannot make
    every later window count for nothing; shrunk towards 1 with a prior of
    a few windows, so a single window cannot make it large or small either.
    """
    if cs.zm < 1:
        return 1.0
    phi = cs.zs / cs.zm / _Z2_MEAN
    return max(1.0, (cs.zm * phi + _SHRINK_WINDOWS) / (cs.zm + _SHRINK_WINDOWS))


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
    return (f"{base}: undecided ({thresholds}; evidence for rollback {r.fail_evidence:.1f} of "
            f"{r.fail_at:.1f} to fail, {r.llr:.1f} of {r.pass_at:.1f} to pass){extra}")
