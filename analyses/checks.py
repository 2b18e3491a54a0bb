"""Drift reports of one window: what the SRE reads beside the gate, never what gates.

- Prediction drift on the same inputs (class scores by KS, predicted classes
  by chi-square and Jensen-Shannon, top-1 agreement): both versions answered
  the same golden rows, so this describes how differently the canary
  answers; accuracy (analyses.gate) is what decides whether it is worse.
- Input drift of the probes against the analysis' reference set, evidently's
  way. Both versions get the same probe inputs, so input drift cannot
  implicate the canary: it says the golden set no longer looks like the
  reference, which an SRE wants to know.

Each report is a CheckResult with verdict "info"; `canary` holds the value
(KS distance, Jensen-Shannon distance, agreement rate, drifted share) and
`reason` says whether it crosses evidently's threshold.
"""

from __future__ import annotations

import functools

import numpy as np

from . import drift, stats
from .config import JudgeConfig
from .results import CheckResult
from .window import Window

__all__ = ["drift_report", "input_keys"]


def input_keys(inputs: np.ndarray) -> np.ndarray:
    """One int64 key per input row: equal rows get equal keys, distinct rows (almost surely) not.

    A fixed random projection keys each row by one float, whose bits are the key.
    """
    keys = np.nan_to_num(inputs, nan=0.5, posinf=1e300, neginf=-1e300) @ _projection(inputs.shape[1])
    return np.ascontiguousarray(keys, dtype=np.float64).view(np.int64) & np.int64(0x7FFFFFFFFFFFFFFF)


@functools.lru_cache(maxsize=16)
def _projection(d: int) -> np.ndarray:
    return np.random.default_rng(20240601).normal(size=d)


def _distinct(pr, mask: np.ndarray) -> np.ndarray:
    """`mask` narrowed to the first probe of each distinct golden row."""
    if not mask.any():
        return mask
    keys = pr.rows if pr.rows is not None else (input_keys(pr.inputs) if pr.inputs is not None else None)
    if keys is None:
        return mask
    idx = np.flatnonzero(mask)
    _, first = np.unique(keys[idx], return_index=True)
    out = np.zeros_like(mask)
    out[idx[first]] = True
    return out


def _info(name: str, unit: str, value: float | None, flagged: bool | None, summary: str, test: str,
          n: int = 0, p: float | None = None, **kw) -> CheckResult:
    if flagged is None:
        reason = summary
    else:
        reason = f"{summary}: {'beyond' if flagged else 'within'} evidently's threshold (reported, not gating)"
    return CheckResult(name=name, verdict="info" if flagged is not None else "nodata", unit=unit, canary=value,
                       reason=reason, test=test, n_stable=n, n_canary=n, measured=flagged is not None,
                       p_value=p, **kw)


def _prediction(window: Window, config: JudgeConfig) -> list[CheckResult]:
    cfg = config.drift
    pr = window.probes
    valid = _distinct(pr, (pr.stable_pred >= 0) & (pr.canary_pred >= 0))
    n = int(valid.sum())
    names = ("prediction_scores", "prediction_classes", "prediction_agreement")
    if n < cfg.min_samples:
        return [_info(nm, "ratio", None, None, f"{n} distinct paired probes < min_samples {cfg.min_samples}",
                      "", n) for nm in names]
    out = []
    ss, cs = pr.stable_scores, pr.canary_scores
    if ss is None or cs is None or ss.shape[1] != cs.shape[1]:
        out.append(_info("prediction_scores", "ks", None, None, "no class scores in the probes", "", n))
    else:
        rows = valid & np.isfinite(ss).all(axis=1) & np.isfinite(cs).all(axis=1)
        m = int(rows.sum())
        if m < cfg.min_samples:
            out.append(_info("prediction_scores", "ks", None, None, f"{m} probes with scores", "", m))
        else:
            k = ss.shape[1]
            ds = drift.ks_distances(ss[rows], cs[rows])
            worst = int(np.argmax(ds))
            p = min(1.0, k * drift.ks_pvalue(m, m, float(ds[worst])))
            conf_s, conf_c = float(np.mean(ss[rows].max(axis=1))), float(np.mean(cs[rows].max(axis=1)))
            out.append(_info(
                "prediction_scores", "ks", float(ds[worst]), bool(ds[worst] >= cfg.min_score_ks),
                f"class {worst} score distribution KS D={ds[worst]:.3f} (mean top-1 confidence canary "
                f"{conf_c:.3f} vs stable {conf_s:.3f})", f"two-sample KS per class score ({k} classes)", m, p,
                stable=conf_s))
    sp, cp = pr.stable_pred[valid], pr.canary_pred[valid]
    chi2, p, js, dof = drift.categorical_classes(sp, cp)
    out.append(_info("prediction_classes", "js", js, bool(js >= cfg.min_class_js),
                     f"predicted-class distribution Jensen-Shannon {js:.3f} (chi-square {chi2:.1f}, {dof} dof)",
                     "chi-square homogeneity + Jensen-Shannon distance", n, p))
    agree = int(np.count_nonzero(sp == cp))
    out.append(_info("prediction_agreement", "ratio", agree / n, bool(agree / n < cfg.min_agreement),
                     f"top-1 agreement {100 * agree / n:.1f} % ({agree}/{n}; allowed >= "
                     f"{100 * cfg.min_agreement:.0f} %)", "share of distinct probes with the same class", n,
                     stats.binomial_less(agree, n, cfg.min_agreement), stable=1.0))
    return out


def _inputs(window: Window, config: JudgeConfig) -> list[CheckResult]:
    cfg = config.drift
    pr = window.probes
    cur = pr.inputs
    ref = window.reference_inputs
    if ref is None or cur is None:
        why = "no reference set configured" if ref is None else "probes carry no inputs"
        return [_info("input_drift", "share", None, None, why, "")]
    cur = cur[_distinct(pr, np.ones(cur.shape[0], dtype=bool))]
    ref = np.asarray(ref, dtype=np.float64)
    if ref.ndim == 1:
        ref = ref.reshape(-1, 1)
    if ref.shape[1] != cur.shape[1]:
        return [_info("input_drift", "share", None, None,
                      f"reference has {ref.shape[1]} columns, probes {cur.shape[1]}", "")]
    if cur.shape[0] < cfg.min_samples or ref.shape[0] < cfg.min_samples:
        return [_info("input_drift", "share", None, None,
                      f"{cur.shape[0]} probe inputs < min_samples {cfg.min_samples}", "")]
    method = cfg.input_method
    cols = drift.column_drift(ref, cur, method, cfg.input_threshold if method != "auto" else None, all_p=False)
    if not cols:
        return [_info("input_drift", "share", None, None, "no finite input values", "")]
    drifted = [c for c in cols if c.drifted]
    share = len(drifted) / len(cols)
    pool = drifted or cols
    worst = max(pool, key=lambda c: c.ks_d)
    methods = "/".join(sorted({c.method for c in cols}))
    return [_info("input_drift", "share", share, share >= cfg.drift_share,
                  f"{len(drifted)}/{len(cols)} probe input columns drift from the reference by evidently's "
                  f"rule ({methods}); worst column {worst.column}: KS D={worst.ks_d:.3f}",
                  f"evidently {methods} per column", int(cur.shape[0]))]


def drift_report(window: Window, config: JudgeConfig) -> list[CheckResult]:
    """Prediction and input drift of one window, as configured (never gating)."""
    out: list[CheckResult] = []
    if config.drift.predictions:
        out += _prediction(window, config)
    if config.drift.inputs:
        out += _inputs(window, config)
    return out
