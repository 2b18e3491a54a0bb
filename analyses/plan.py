"""How long the gate takes to decide, and what a golden set can promise, before any data.

For each gated check, with the analysis' rates and thresholds, the expected
number of windows to a decision for a canary exactly at `alert` (to pass)
and exactly at `rollback` (to fail). The window checks' e-values
(analyses.sequential) grow by about (1/2) log(1 + D^2 / v) per window when
the windows spread as their nominal variance says (phi = 1), where D is the
distance between the thresholds on the test's scale and v the variance of
one window's estimate; a decision needs log(1/alpha_k) (fail) or
log(1/beta) (pass), plus log 2 for the prior on change points and about
one window for the bets to find the canary's level:

    E[windows] ~ 1 + (log(1/level) + log 2) / ((1/2) log(1 + D^2 / v))

Accuracy keeps Wald's approximation of its per-row SPRT. A check whose
windows can never hold the data its statistic needs (fewer requests per
window than the quantile's `min_samples`) can never decide: the plan says
so, and the service refuses such a configuration unless the analysis sets
`allow_undecidable: true`. The variances assumed (said in each row):

- latency: the log P99 ratio has a standard error of about 0.097 at 3000
  requests per version (measured on this project's heavy-tailed data),
  scaling as 1/sqrt(n);
- errors: binomial at the rollback rate over the window's requests;
- errors_increase: binomial variance at the alert rate over a 0.1 % stable;
- accuracy: per distinct golden row, variance = the planning discordance;
  the golden set caps the evidence, so the plan also says whether it can
  separate alert from rollback at (alpha, beta): a fixed-sample test over
  every row needs D / sqrt(v / N) >= z(alpha_k / 2) + z(beta / 2);
- CTR: binomial counts, when the impressions per window are given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import special

from .config import JudgeConfig

__all__ = ["AccuracyPlan", "CheckPlan", "accuracy_plan", "plan"]

P99_LOG_SE_3000 = 0.097
STABLE_ERROR_RATE = 0.001


def _z(p: float) -> float:
    return float(-special.ndtri(p))


def _phi(x: float) -> float:
    return float(special.ndtr(x))


@dataclass
class AccuracyPlan:
    rows: int
    rows_needed: int
    separable: bool
    pass_at_rollback: float  # chance a canary at rollback passes accuracy: beta at most, separable or not
    message: str


def accuracy_plan(config: JudgeConfig, golden_rows: int, alpha_k: float) -> AccuracyPlan:
    """Can `golden_rows` distinct rows separate accuracy's alert from rollback at (alpha_k, beta)?"""
    cfg = config.accuracy
    d = cfg.rollback - cfg.alert
    v = max(cfg.planning_discordance - cfg.rollback ** 2, cfg.rollback * (1 - cfg.rollback))
    za, zb = _z(alpha_k / 2), _z(config.beta / 2)
    needed = math.ceil(v * ((za + zb) / d) ** 2)
    se = math.sqrt(v / golden_rows)
    separable = golden_rows >= needed
    # The gate never passes accuracy without ruling out `rollback` (beta/2 at exhaustion), so a small
    # set costs decisions, not the guarantee: a canary at `alert` passes only this often.
    pass_at_alert = _phi(d / se - zb)
    pass_at_rollback = config.beta
    if separable:
        msg = (f"golden set of {golden_rows} rows separates an accuracy drop of {100 * cfg.alert:g} from "
               f"{100 * cfg.rollback:g} points at alpha {100 * alpha_k:.2g} %, beta {100 * config.beta:g} % "
               f"(needs {needed} rows at {100 * cfg.planning_discordance:g} % discordance)")
    else:
        msg = (f"golden set of {golden_rows} rows cannot separate an accuracy drop of {100 * cfg.alert:g} from "
               f"{100 * cfg.rollback:g} points at alpha {100 * alpha_k:.2g} %, beta {100 * config.beta:g} % "
               f"(needs {needed} rows at {100 * cfg.planning_discordance:g} % discordance): a canary "
               f"{100 * cfg.alert:g} points worse passes accuracy in only about {100 * pass_at_alert:.0f} % of "
               f"runs, the others stay undecided (never a pass at {100 * cfg.rollback:g} points)")
    return AccuracyPlan(golden_rows, needed, separable, pass_at_rollback, msg)


@dataclass
class CheckPlan:
    check: str
    alert: float
    rollback: float
    alpha: float
    windows_at_alert: float | None
    windows_at_rollback: float | None
    assumption: str
    undecidable: str | None = None  # why the check can never decide with these rates (None: it can)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _asn(d: float, v: float, a: float, b: float) -> tuple[float, float]:
    """Expected windows at alert (to pass) and at rollback (to fail) for the window e-test."""
    growth = 0.5 * math.log1p(d * d / v)
    at_alert = 1.0 + (math.log(1 / b) + math.log(2)) / growth
    at_rollback = 1.0 + (math.log(1 / a) + math.log(2)) / growth
    return max(at_alert, 2.0), max(at_rollback, 2.0)


def _sprt_asn(d: float, v: float, a: float, b: float) -> tuple[float, float]:
    """Expected windows at alert and at rollback for a Gaussian SPRT (drift D^2/2v per window)."""
    drift = d * d / (2 * v)
    upper, lower = math.log(1 / a), math.log(b)
    at_alert = (a * upper + (1 - a) * lower) / -drift
    at_rollback = ((1 - b) * upper + b * lower) / drift
    return max(at_alert, 1.0), max(at_rollback, 1.0)


def plan(config: JudgeConfig, *, requests_per_window: float, probes_per_window: float,
         golden_rows: int | None, impressions_per_window: float | None = None,
         active: list[str] | None = None) -> tuple[list[CheckPlan], AccuracyPlan | None]:
    """Expected windows to a decision per gated check, and the golden set's verdict."""
    from .gate import Gate

    gate = Gate(config, active=active, golden_rows=golden_rows)
    out: list[CheckPlan] = []
    acc = None
    for name in gate.active:
        a = gate.alphas[name]
        b = config.beta
        alert, rollback = config.thresholds(name, 1)
        wa = wr = None
        note = ""
        undecidable = None
        if name == "latency":
            n = max(requests_per_window, 1.0)
            v = 2 * P99_LOG_SE_3000 ** 2 * 3000 / n
            wa, wr = _asn(math.log(rollback) - math.log(alert), v, a, b)
            note = f"{n:.0f} requests per version per window, log P99 SE 0.097 at 3000"
            need = config.latency.min_samples
            if requests_per_window < need:
                undecidable = (f"latency can never decide: {requests_per_window:.0f} requests per version per "
                               f"window < the {need} its P{100 * config.latency.quantile:g} needs "
                               f"(latency.min_samples)")
                wa = wr = None
        elif name == "errors":
            n = max(requests_per_window + probes_per_window, 1.0)
            wa, wr = _asn(rollback - alert, rollback * (1 - rollback) / n, a, b)
            note = f"{n:.0f} canary requests per window, binomial spread"
        elif name == "errors_increase":
            n = max(requests_per_window + probes_per_window, 1.0)
            ps = STABLE_ERROR_RATE
            pc = ps + alert
            v = ps * (1 - ps) / n + pc * (1 - pc) / n
            wa, wr = _asn(rollback - alert, v, a, b)
            note = f"{n:.0f} requests per version per window, stable at {100 * ps:g} %"
        elif name == "accuracy":
            rows_w = max(probes_per_window, 1.0)
            v = max(config.accuracy.planning_discordance - rollback ** 2, rollback * (1 - rollback))
            wa, wr = _sprt_asn(rollback - alert, v / rows_w, a / 2 if golden_rows else a,
                               b / 2 if golden_rows else b)
            note = f"{rows_w:.0f} new golden rows per window, {100 * config.accuracy.planning_discordance:g} % discordance"
            if golden_rows:
                acc = accuracy_plan(config, golden_rows, a)
                cap = math.ceil(golden_rows / rows_w)
                wa, wr = min(wa, cap), min(wr, cap)
                note += f"; every row seen by window {cap}"
        elif name == "ctr":
            if impressions_per_window:
                ctr0 = 0.035
                n = impressions_per_window
                v = 2 * (1 / (n * ctr0) - 1 / n)
                wa, wr = _asn(-math.log1p(-rollback) + math.log1p(-alert), v, a, b)
                note = f"{n:.0f} impressions per version per window at 3.5 % CTR"
            else:
                note = "depends on impressions per window (give them to plan it)"
        elif name in config.prometheus:
            p = config.prometheus[name]
            note = f"Prometheus {p.kind} ({p.compare}): depends on the production traffic of each window"
        out.append(CheckPlan(name, alert, rollback, a, wa, wr, note, undecidable))
    return out, acc
