"""The checks: each turns one part of a window into findings.

A finding carries the measured values, a one-sided p-value for "the canary
is worse", and whether the point estimate is beyond the configured
tolerance. The judge (analyses.judge) decides: a check fails when it is
beyond its tolerance AND its p-value survives the multiplicity correction.
Requiring both is what keeps identical versions from failing on noise
(significance) while a real but harmless difference does not fail either
(tolerance).

Units: latencies in seconds, rates as ratios 0..1; ms and percent appear
only in the human-readable text.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from . import drift, stats
from .config import JudgeConfig
from .results import CheckResult
from .window import Window

__all__ = ["Finding", "planned_checks", "run_checks"]


@dataclass
class Finding:
    """A check's measurements before the judge's decision.

    summary: what was measured ("canary P99 48.1 ms vs stable 31.0 ms: 1.55x").
    over: how the tolerance reads when exceeded ("> allowed 1.5x");
    within: how it reads when not ("<= allowed 1.5x").
    nodata: why there is nothing to judge; blocking: that lack makes the
    whole verdict "no data" (a critical check without enough samples).
    forced: fail without a test, with this reason (CTR missing, on_missing=fail).
    """

    result: CheckResult
    beyond: bool = False
    summary: str = ""
    over: str = ""
    within: str = ""
    nodata: str | None = None
    blocking: bool = False
    forced: str | None = None


@dataclass
class Context:
    alpha_ci: float  # per-check level for the intervals shown (Bonferroni share)
    look: int | None


# ---------------------------------------------------------------- formatting


def _ms(s: float) -> str:
    v = s * 1000.0
    return f"{v:.1f} ms" if v < 1000 else f"{v:,.0f} ms"


def _pct(r: float, digits: int = 2) -> str:
    return f"{100.0 * r:.{digits}f}%"


def _qname(q: float) -> str:
    v = q * 100.0
    return f"{v:.10g}".replace(".", "_")


def _qlabel(q: float) -> str:
    return f"P{q * 100.0:.10g}"


def _latencies(a: np.ndarray) -> np.ndarray:
    a = a[np.isfinite(a)]
    return a[a >= 0.0]


def _nodata(name: str, why: str, cfg, critical: bool, blocking: bool, unit: str,
            n_stable: int = 0, n_canary: int = 0) -> Finding:
    r = CheckResult(name=name, critical=critical, weight=cfg.weight, unit=unit,
                    n_stable=n_stable, n_canary=n_canary)
    return Finding(result=r, nodata=why, blocking=blocking and critical)


def distinct_inputs(inputs: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """`mask` narrowed to the first probe of each distinct input row.

    The prober cycles through the golden set, so a long run sends the same
    inputs again. A deterministic model answers a repeat the same way, so
    counting it again would be pseudo-replication: significance would grow
    without new evidence, and identical-accuracy versions would fail on
    the golden set's own quirks. Without inputs, probes count as distinct.
    """
    if inputs is None or not mask.any():
        return mask
    idx = np.flatnonzero(mask)
    # A fixed random projection keys each row by one float: equal rows get
    # equal keys, distinct rows collide with probability zero, and a 1-D
    # unique is far cheaper than comparing rows byte by byte.
    keys = np.nan_to_num(inputs[idx], nan=0.5, posinf=1e300, neginf=-1e300) @ _projection(inputs.shape[1])
    _, first = np.unique(keys, return_index=True)
    out = np.zeros_like(mask)
    out[idx[first]] = True
    return out


@functools.lru_cache(maxsize=16)
def _projection(d: int) -> np.ndarray:
    return np.random.default_rng(20240601).normal(size=d)


def planned_checks(config: JudgeConfig) -> list[str]:
    """Names of the checks this configuration runs, in order (fixed before any data)."""
    names = []
    if config.accuracy.enabled:
        names.append("accuracy")
    lat = config.latency
    if lat.enabled:
        names += [f"latency_p{_qname(q)}" for q in lat.all_quantiles()]
        if lat.mann_whitney:
            names.append("latency_mann_whitney")
    if config.errors.enabled:
        names.append("error_rate")
        if config.errors.vs_stable:
            names.append("error_rate_vs_stable")
    if config.ctr.enabled:
        names.append("ctr")
    d = config.drift
    if d.enabled:
        if d.predictions:
            names += ["prediction_scores", "prediction_classes", "prediction_agreement"]
        if d.inputs:
            names.append("input_drift")
    return names


# ---------------------------------------------------------------- accuracy


def accuracy(window: Window, config: JudgeConfig, ctx: Context) -> list[Finding]:
    """Top-1 accuracy on the golden probes, canary vs stable, paired (McNemar).

    Probes that failed on either version are left out (the error checks see
    them), and a golden input sent again counts once (see distinct_inputs).
    """
    cfg = config.accuracy
    pr = window.probes
    answered = (pr.stable_pred >= 0) & (pr.canary_pred >= 0)
    failed = len(pr) - int(answered.sum())
    valid = distinct_inputs(pr.inputs, answered)
    n = int(valid.sum())
    if n < cfg.min_samples:
        extra = f" ({failed} probes failed on a version)" if failed else ""
        return [_nodata("accuracy", f"{n} paired probes < min_samples {cfg.min_samples}{extra}",
                        cfg, cfg.critical, True, "ratio", n, n)]
    labels = pr.labels[valid]
    res = stats.mcnemar_drop(pr.stable_pred[valid] == labels, pr.canary_pred[valid] == labels, ctx.alpha_ci)
    drop = -res.difference
    r = CheckResult(
        name="accuracy", stable=res.stable, canary=res.canary, difference=res.difference,
        ratio=(res.canary / res.stable if res.stable > 0 else None),
        test="McNemar exact (paired, one-sided, discordant probes)",
        statistic=float(res.b - res.c), p_value=res.p_value, ci=res.ci, n_stable=n, n_canary=n,
        critical=cfg.critical, weight=cfg.weight, unit="ratio",
    )
    summary = (f"canary accuracy {_pct(res.canary, 1)} vs stable {_pct(res.stable, 1)}: "
               f"{100 * res.difference:+.1f} points ({res.b} probes only stable right, {res.c} only canary right)")
    return [Finding(r, beyond=drop > cfg.max_drop, summary=summary,
                    over=f"drop > allowed {100 * cfg.max_drop:.1f} points",
                    within=f"drop within allowed {100 * cfg.max_drop:.1f} points")]


# ---------------------------------------------------------------- latency


def latency(window: Window, config: JudgeConfig, ctx: Context) -> list[Finding]:
    """Latency quantiles (seconds) as canary/stable ratios, plus the Mann-Whitney comparison."""
    cfg = config.latency
    s = np.sort(_latencies(window.stable.latencies_s))
    c = np.sort(_latencies(window.canary.latencies_s))
    ns, nc = int(s.size), int(c.size)
    # the first step is small and cold: the seed plan allows 2x there, 1.5x later
    max_ratio = cfg.max_ratio
    if ctx.look == 1 and cfg.first_look_max_ratio is not None:
        max_ratio = cfg.first_look_max_ratio
    out: list[Finding] = []
    for q in cfg.all_quantiles():
        name = f"latency_p{_qname(q)}"
        critical = cfg.critical and q == cfg.quantile
        if min(ns, nc) < cfg.min_samples:
            out.append(_nodata(name, f"{min(ns, nc)} latency samples < min_samples {cfg.min_samples}",
                               cfg, critical, True, "s", ns, nc))
            continue
        cmp = stats.quantile_ratio_test(s, c, q, ctx.alpha_ci)
        if cmp is None:
            out.append(_nodata(name, f"{min(ns, nc)} samples are too few for a {_qlabel(q)} interval "
                                     f"(at least {stats.min_samples_for_quantile(q)} needed)",
                               cfg, critical, True, "s", ns, nc))
            continue
        ceiling_ms = cfg.max_ms if q == cfg.quantile else None
        out.append(_quantile_finding(name, cmp, c, max_ratio, ceiling_ms, critical, cfg.weight, ns, nc))
    if cfg.mann_whitney:
        if min(ns, nc) < cfg.min_samples:
            out.append(_nodata("latency_mann_whitney", f"{min(ns, nc)} latency samples < min_samples "
                                                       f"{cfg.min_samples}", cfg, False, False, "s", ns, nc))
        else:
            out.append(_mann_whitney_finding(s, c, cfg, ctx))
    return out


def _quantile_finding(name: str, cmp: stats.QuantileComparison, canary_sorted: np.ndarray, max_ratio: float,
                      ceiling_ms: float | None, critical: bool, weight: float, ns: int, nc: int) -> Finding:
    q = cmp.p
    beyond = cmp.ratio > max_ratio
    p = cmp.p_value
    over, within = f"> allowed {max_ratio:g}x", f"<= allowed {max_ratio:g}x"
    test = f"{_qlabel(q)} ratio, order-statistic interval on log scale (one-sided z)"
    if ceiling_ms is not None:
        # Two ways to fail (ratio, ceiling) share one budget: Bonferroni over
        # the two. A sub-test whose point estimate is within its limit cannot
        # fail, so its p-value enters as 1 (still a valid p-value).
        ceiling = ceiling_ms / 1000.0
        over_ceiling = cmp.canary > ceiling
        p_ceiling = stats.quantile_ceiling_test(canary_sorted, q, ceiling)
        if beyond or over_ceiling:
            p = min(1.0, 2.0 * min(p if beyond else 1.0, p_ceiling if over_ceiling else 1.0))
        else:
            p = min(1.0, 2.0 * p)
        if over_ceiling:
            over = f"{over} and > ceiling {ceiling_ms:g} ms" if beyond else f"> ceiling {ceiling_ms:g} ms"
        within += f" and <= ceiling {ceiling_ms:g} ms"
        beyond = beyond or over_ceiling
        test += " + exact binomial test against the ceiling"
    r = CheckResult(
        name=name, stable=cmp.stable, canary=cmp.canary, difference=cmp.canary - cmp.stable,
        ratio=cmp.ratio, test=test, statistic=cmp.z, p_value=p, ci=cmp.ci, n_stable=ns, n_canary=nc,
        critical=critical, weight=weight, unit="s",
    )
    summary = f"canary {_qlabel(q)} {_ms(cmp.canary)} vs stable {_ms(cmp.stable)}: {cmp.ratio:.2f}x"
    return Finding(r, beyond=beyond, summary=summary, over=over, within=within)


def _mann_whitney_finding(s: np.ndarray, c: np.ndarray, cfg, ctx: Context) -> Finding:
    # On log latency the Hodges-Lehmann shift is a ratio of typical
    # latencies, so the tolerance reads as "25 % slower". Kayenta instead
    # compares the interval with a fraction of the estimate itself, which
    # with thousands of samples fails any significant shift, however small.
    mw = stats.mann_whitney_shift(np.log(np.maximum(s, 1e-6)), np.log(np.maximum(c, 1e-6)), ctx.alpha_ci,
                                  cfg.mann_whitney_max_samples)
    ratio = math.exp(mw.shift)
    limit = 1.0 + cfg.mann_whitney_tolerance
    med_s, med_c = stats.quantile(s, 0.5), stats.quantile(c, 0.5)
    r = CheckResult(
        name="latency_mann_whitney", stable=med_s, canary=med_c, difference=med_c - med_s, ratio=ratio,
        test="Mann-Whitney U (one-sided) with Hodges-Lehmann shift of log latency",
        statistic=mw.z, p_value=mw.p_value, ci=(math.exp(mw.ci[0]), math.exp(mw.ci[1])),
        n_stable=int(s.size), n_canary=int(c.size), critical=False, weight=cfg.weight, unit="s",
    )
    summary = (f"typical latency canary/stable {ratio:.2f}x (Hodges-Lehmann on {mw.n_canary} vs "
               f"{mw.n_stable} samples)")
    return Finding(r, beyond=ratio > limit, summary=summary, over=f"> allowed {limit:g}x",
                   within=f"<= allowed {limit:g}x")


# ---------------------------------------------------------------- errors


def errors(window: Window, config: JudgeConfig, ctx: Context) -> list[Finding]:
    """Canary error rate (0..1) against the allowed rate and against stable."""
    cfg = config.errors
    st, ca = window.stable, window.canary
    out = []
    if ca.requests < cfg.min_requests:
        out.append(_nodata("error_rate", f"{ca.requests} canary requests < min_requests {cfg.min_requests}",
                           cfg, cfg.critical, True, "ratio", st.requests, ca.requests))
    else:
        rc = ca.errors / ca.requests
        rs = st.errors / st.requests if st.requests else None
        p = stats.binomial_greater(ca.errors, ca.requests, cfg.max)
        r = CheckResult(
            name="error_rate", stable=rs, canary=rc, difference=(rc - rs if rs is not None else None),
            ratio=(rc / rs if rs else None), test="exact binomial test against the allowed rate (one-sided)",
            statistic=float(ca.errors), p_value=p, ci=stats.clopper_pearson(ca.errors, ca.requests, ctx.alpha_ci),
            n_stable=st.requests, n_canary=ca.requests, critical=cfg.critical, weight=cfg.weight, unit="ratio",
        )
        top = ""
        if ca.errors_by_code:
            code, k = max(ca.errors_by_code.items(), key=lambda kv: kv[1])
            top = f", mostly {code}"
        summary = f"canary error rate {_pct(rc)} ({ca.errors}/{ca.requests}{top})"
        out.append(Finding(r, beyond=rc > cfg.max, summary=summary, over=f"> allowed {_pct(cfg.max)}",
                           within=f"<= allowed {_pct(cfg.max)}"))
    if cfg.vs_stable:
        if min(st.requests, ca.requests) < cfg.min_requests:
            out.append(_nodata("error_rate_vs_stable",
                               f"{min(st.requests, ca.requests)} requests < min_requests {cfg.min_requests}",
                               cfg, cfg.critical, True, "ratio", st.requests, ca.requests))
        else:
            rc, rs = ca.errors / ca.requests, st.errors / st.requests
            r = CheckResult(
                name="error_rate_vs_stable", stable=rs, canary=rc, difference=rc - rs,
                ratio=(rc / rs if rs > 0 else None), test="Fisher exact two-proportion test (one-sided)",
                statistic=rc - rs, p_value=stats.fisher_greater(ca.errors, ca.requests, st.errors, st.requests),
                ci=stats.newcombe_difference_ci(ca.errors, ca.requests, st.errors, st.requests, ctx.alpha_ci),
                n_stable=st.requests, n_canary=ca.requests, critical=cfg.critical, weight=cfg.weight, unit="ratio",
            )
            summary = f"canary error rate {_pct(rc)} vs stable {_pct(rs)}: {100 * (rc - rs):+.2f} points"
            out.append(Finding(r, beyond=rc - rs > cfg.max_increase, summary=summary,
                               over=f"> allowed +{100 * cfg.max_increase:.2f} points",
                               within=f"<= allowed +{100 * cfg.max_increase:.2f} points"))
    return out


# ---------------------------------------------------------------- CTR


def ctr(window: Window, config: JudgeConfig, ctx: Context) -> list[Finding]:
    """Click-through rate canary/stable from counts; missing or too few counts follow `on_missing`."""
    cfg = config.ctr
    counts = window.ctr

    def missing(why: str) -> list[Finding]:
        f = _nodata("ctr", why, cfg, cfg.critical, False, "ratio")
        if cfg.on_missing == "fail":
            f.nodata = None
            f.forced = f"{why} (on_missing: fail)"
        else:
            f.nodata = f"{why}: skipped"
        return [f]

    if counts is None:
        return missing("CTR counts missing (Prometheus down or empty)")
    vals = [counts.stable_clicks, counts.stable_impressions, counts.canary_clicks, counts.canary_impressions]
    if not all(v is not None and math.isfinite(float(v)) and float(v) >= 0 for v in vals):
        return missing("CTR counts invalid (negative or not a number)")
    ks_, ns_, kc, nc = (int(round(float(v))) for v in vals)
    if ks_ > ns_ or kc > nc:
        return missing("CTR counts invalid (more clicks than impressions)")
    if min(ns_, nc) < cfg.min_impressions:
        return missing(f"{min(ns_, nc)} impressions < min_impressions {cfg.min_impressions}")
    rs, rc = ks_ / ns_, kc / nc
    if rs == 0:
        return missing("stable has no clicks: no CTR ratio")
    ratio = rc / rs
    r = CheckResult(
        name="ctr", stable=rs, canary=rc, difference=rc - rs, ratio=ratio,
        test="Fisher exact two-proportion test on clicks/impressions (one-sided)",
        statistic=ratio, p_value=stats.fisher_less(kc, nc, ks_, ns_),
        ci=stats.katz_ratio_ci(kc, nc, ks_, ns_, ctx.alpha_ci), n_stable=ns_, n_canary=nc,
        critical=cfg.critical, weight=cfg.weight, unit="ratio",
    )
    summary = f"canary CTR {_pct(rc)} vs stable {_pct(rs)}: {ratio:.2f}x"
    return [Finding(r, beyond=ratio < cfg.min_ratio, summary=summary, over=f"< allowed {cfg.min_ratio:g}x",
                    within=f">= allowed {cfg.min_ratio:g}x")]


# ---------------------------------------------------------------- drift


def _prediction(window: Window, config: JudgeConfig, ctx: Context) -> list[Finding]:
    """Prediction drift on the same inputs: class scores (KS), classes (chi-square, JS), agreement."""
    cfg = config.drift
    pr = window.probes
    valid = distinct_inputs(pr.inputs, (pr.stable_pred >= 0) & (pr.canary_pred >= 0))
    n = int(valid.sum())
    out = []
    names = ("prediction_scores", "prediction_classes", "prediction_agreement")
    if n < cfg.min_samples:
        why = f"{n} paired probes < min_samples {cfg.min_samples}"
        return [_nodata(nm, why, cfg, cfg.critical, True, "ratio", n, n) for nm in names]

    # class scores: KS per class column, Bonferroni over the classes
    ss, cs = pr.stable_scores, pr.canary_scores
    if ss is None or cs is None or ss.shape[1] != cs.shape[1]:
        out.append(_nodata("prediction_scores", "no class scores in the probes", cfg, cfg.critical, False,
                           "ks", n, n))
    else:
        rows = valid & np.isfinite(ss).all(axis=1) & np.isfinite(cs).all(axis=1)
        m = int(rows.sum())
        if m < cfg.min_samples:
            out.append(_nodata("prediction_scores", f"{m} probes with scores < min_samples {cfg.min_samples}",
                               cfg, cfg.critical, True, "ks", m, m))
        else:
            k = ss.shape[1]
            ds = drift.ks_distances(ss[rows], cs[rows])
            worst = int(np.argmax(ds))
            # equal sample sizes in every column: the largest D has the smallest p
            p = min(1.0, k * drift.ks_pvalue(m, m, float(ds[worst])))
            conf_s = float(np.mean(ss[rows].max(axis=1)))
            conf_c = float(np.mean(cs[rows].max(axis=1)))
            r = CheckResult(
                name="prediction_scores", stable=conf_s, canary=conf_c, difference=conf_c - conf_s,
                ratio=(conf_c / conf_s if conf_s > 0 else None),
                test=f"two-sample KS per class score, Bonferroni over {k} classes",
                statistic=float(ds[worst]), p_value=p, n_stable=m, n_canary=m,
                critical=cfg.critical, weight=cfg.weight, unit="ks",
            )
            summary = (f"class {worst} score distribution KS D={ds[worst]:.3f} (mean top-1 confidence "
                       f"canary {conf_c:.3f} vs stable {conf_s:.3f})")
            out.append(Finding(r, beyond=bool(ds[worst] >= cfg.min_score_ks), summary=summary,
                               over=f">= {cfg.min_score_ks:g}", within=f"< {cfg.min_score_ks:g}"))

    sp, cp = pr.stable_pred[valid], pr.canary_pred[valid]
    chi2, p, js, dof = drift.categorical_classes(sp, cp)
    r = CheckResult(
        name="prediction_classes", test="chi-square homogeneity of predicted classes + Jensen-Shannon distance",
        statistic=chi2, p_value=p, difference=js, n_stable=n, n_canary=n,
        critical=cfg.critical, weight=cfg.weight, unit="js",
    )
    summary = f"predicted-class distribution Jensen-Shannon {js:.3f} (chi-square {chi2:.1f}, {dof} dof)"
    out.append(Finding(r, beyond=js >= cfg.min_class_js, summary=summary,
                       over=f">= {cfg.min_class_js:g}", within=f"< {cfg.min_class_js:g}"))

    agree = int(np.count_nonzero(sp == cp))
    rate = agree / n
    r = CheckResult(
        name="prediction_agreement", stable=1.0, canary=rate, difference=rate - 1.0, ratio=rate,
        test="exact binomial test of top-1 agreement against the allowed rate (one-sided)",
        statistic=float(agree), p_value=stats.binomial_less(agree, n, cfg.min_agreement),
        ci=stats.clopper_pearson(agree, n, ctx.alpha_ci), n_stable=n, n_canary=n,
        critical=cfg.critical, weight=cfg.weight, unit="ratio",
    )
    summary = f"top-1 agreement {_pct(rate, 1)} ({agree}/{n})"
    out.append(Finding(r, beyond=rate < cfg.min_agreement, summary=summary,
                       over=f"< allowed {_pct(cfg.min_agreement, 1)}",
                       within=f">= allowed {_pct(cfg.min_agreement, 1)}"))
    return out


def _inputs(window: Window, config: JudgeConfig, ctx: Context) -> list[Finding]:
    """Input drift of the probe inputs against the run's reference set, evidently's way."""
    cfg = config.drift
    cur = window.probes.inputs
    if cur is not None:
        cur = cur[distinct_inputs(cur, np.ones(cur.shape[0], dtype=bool))]
    ref = window.reference_inputs
    if ref is None or cur is None:
        why = "no reference set configured" if ref is None else "probes carry no inputs"
        return [_nodata("input_drift", why, cfg, cfg.critical, False, "ks")]
    ref = np.asarray(ref, dtype=np.float64)
    if ref.ndim == 1:
        ref = ref.reshape(-1, 1)
    if ref.shape[1] != cur.shape[1]:
        return [_nodata("input_drift", f"reference has {ref.shape[1]} columns, probes {cur.shape[1]}",
                        cfg, cfg.critical, False, "ks")]
    if cur.shape[0] < cfg.min_samples or ref.shape[0] < cfg.min_samples:
        return [_nodata("input_drift", f"{cur.shape[0]} probe inputs < min_samples {cfg.min_samples}",
                        cfg, cfg.critical, True, "ks", ref.shape[0], cur.shape[0])]
    method = cfg.input_method
    cols = drift.column_drift(ref, cur, method, cfg.input_threshold if method != "auto" else None, all_p=False)
    if not cols:
        return [_nodata("input_drift", "no finite input values", cfg, cfg.critical, False, "ks")]
    k = len(cols)
    drifted = [c for c in cols if c.drifted]
    # The evidently flag is the tolerance; the significance is KS with
    # Bonferroni over columns, so that many columns looked at every step
    # do not drift on noise alone.
    pool = drifted or cols
    worst = min((c for c in pool if c.ks_p == c.ks_p), key=lambda c: c.ks_p)  # NaN: not computed
    p = min(1.0, k * worst.ks_p)
    share = len(drifted) / k
    methods = sorted({c.method for c in cols})
    r = CheckResult(
        name="input_drift", stable=None, canary=share, test=f"evidently {'/'.join(methods)} per column "
        f"+ KS significance (Bonferroni over {k} columns)", statistic=worst.statistic, p_value=p,
        n_stable=worst.n_reference, n_canary=worst.n_current, critical=cfg.critical, weight=cfg.weight,
        unit="share",
    )
    dataset = "yes" if share >= cfg.drift_share else "no"
    summary = (f"{len(drifted)}/{k} input columns drift by evidently's rule (dataset drift at share "
               f">= {cfg.drift_share:g}: {dataset}); worst column {worst.column}: {worst.method} "
               f"{worst.statistic:.3g}, KS D={worst.ks_d:.3f}")
    return [Finding(r, beyond=bool(drifted), summary=summary, over="drifted", within="no column drifted")]


def drift_checks(window: Window, config: JudgeConfig, ctx: Context) -> list[Finding]:
    """Prediction and input drift findings, as configured."""
    out = []
    if config.drift.predictions:
        out += _prediction(window, config, ctx)
    if config.drift.inputs:
        out += _inputs(window, config, ctx)
    return out


def run_checks(window: Window, config: JudgeConfig, alpha_ci: float, look: int | None) -> list[Finding]:
    """All enabled checks on one window, in `planned_checks` order."""
    ctx = Context(alpha_ci=alpha_ci, look=look)
    out: list[Finding] = []
    if config.accuracy.enabled:
        out += accuracy(window, config, ctx)
    if config.latency.enabled:
        out += latency(window, config, ctx)
    if config.errors.enabled:
        out += errors(window, config, ctx)
    if config.ctr.enabled:
        out += ctr(window, config, ctx)
    if config.drift.enabled:
        out += drift_checks(window, config, ctx)
    return out
