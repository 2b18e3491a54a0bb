"""The judge: checks in, one verdict out.

How a verdict is reached:

1. Every enabled check measures the canary against stable and gives a
   one-sided p-value for "the canary is worse" and whether its point
   estimate is beyond the configured tolerance (analyses.checks).
2. Holm's method splits the false-fail budget `alpha` across the checks,
   so identical versions fail any check of a step with probability <= alpha.
3. A check fails when it is beyond its tolerance AND its p-value is
   rejected by Holm. Noise alone cannot fail it (significance), a real
   but tolerated difference cannot either (tolerance).
4. Any critical failure fails the verdict. Otherwise the score, the
   weighted share of checks with data that pass, is compared with
   `pass_score` and `marginal_score` (as Kayenta does). Too little data for
   a critical check, or none at all, gives "no data", whose outcome is
   configurable.

`judge_run` judges all data of a run so far after every window. Looking
again and again at growing data inflates false fails (simulated, Kayenta's
judge fails 0.2 % of identical steps but 4.6 % of 10-step rollouts), so
look k is held to alpha * 6 / (pi^2 k^2): these budgets sum to alpha over
any number of looks, so by the union bound the chance that identical
versions fail anywhere in the run stays <= alpha, with no assumption on
how the looks are correlated (analyses.stats says what each test needs).
Gross regressions still fail at the first look, which keeps 61 % of the
budget; later looks need more evidence, and have more data.

Simulated figures (bench/judge_quality.py, 3000 requests and 300 probes
per step): identical versions fail 0.1 % of steps and 0 of 1000 rollouts
of 10 looks; a fixed-threshold judge fails 67 % of those steps.
"""

from __future__ import annotations

from .checks import Finding, planned_checks, run_checks
from .config import JudgeConfig
from .results import CheckResult, Verdict, phase_of
from .stats import holm, holm_levels, look_alpha
from .window import Window, merge_windows

__all__ = ["CheckResult", "Verdict", "judge", "judge_run"]


def judge(window: Window, config: JudgeConfig | None = None, look: int | None = None) -> Verdict:
    """Judge one window (a step) at the false-fail budget `config.alpha`.

    look: the window's index in its run (1 = first), used only for
    look-dependent tolerances (`latency.first_look_max_ratio`).
    """
    config = config or JudgeConfig()
    return _evaluate(window, config, config.alpha, look, "step")


def judge_run(windows: list[Window], config: JudgeConfig | None = None) -> Verdict:
    """Judge all windows of a run so far (merged), valid when called after every window.

    The look index is len(windows); it sets the share of the false-fail
    budget this look may spend (see the module docstring).
    """
    config = config or JudgeConfig()
    look = max(len(windows), 1)
    merged = merge_windows(list(windows))
    return _evaluate(merged, config, look_alpha(config.alpha, look), look, "run")


def _fmt_p(p: float) -> str:
    if p < 1e-4:
        return "p<0.0001"
    return f"p={p:.2g}"


def _evaluate(window: Window, config: JudgeConfig, alpha: float, look: int | None, scope: str) -> Verdict:
    m = max(len(planned_checks(config)), 1)
    findings = run_checks(window, config, alpha / m, look)
    ps = [1.0 if (f.nodata or f.forced or f.result.p_value is None) else float(f.result.p_value)
          for f in findings]
    rejected = holm(ps, alpha)
    levels = holm_levels(ps, alpha)
    for f, rej, level in zip(findings, rejected, levels):
        _decide(f, rej, level)
    checks = [f.result for f in findings]

    critical_failure = any(c.verdict == "fail" and c.critical for c in checks)
    judged = [c for c in checks if c.verdict != "nodata"]
    total = sum(c.weight for c in judged)
    score = sum(c.weight for c in judged if c.verdict == "pass") / total if total > 0 else 0.0
    blocking = [f for f in findings if f.nodata and f.blocking]
    failing = [c for c in checks if c.verdict == "fail"]

    if critical_failure:
        outcome = "fail"
    elif blocking or not judged or total <= 0:
        outcome = "nodata"
    elif score >= config.pass_score:
        outcome = "pass"
    elif score >= config.marginal_score:
        outcome = "marginal"
    else:
        outcome = "fail"

    reason = _reason(outcome, score, config, checks, failing, blocking)
    passed, phase = phase_of(outcome, config.on_no_data)
    return Verdict(outcome=outcome, passed=passed, phase=phase, score=round(score, 6), reason=reason,
                   checks=checks, critical_failure=critical_failure, scope=scope, look=look, alpha=alpha)


def _decide(f: Finding, rejected: bool, level: float) -> None:
    r = f.result
    r.alpha = level
    if f.nodata:
        r.verdict = "nodata"
        r.reason = f"no data: {f.nodata}"
        return
    if f.forced:
        r.verdict = "fail"
        r.reason = f.forced
        return
    p = r.p_value if r.p_value is not None else 1.0
    if f.beyond and rejected:
        r.verdict = "fail"
        r.reason = f"{f.summary} {f.over}, {_fmt_p(p)}"
    elif f.beyond:
        r.verdict = "pass"
        r.reason = f"{f.summary} {f.over} but not significant ({_fmt_p(p)} > {level:.2g})"
    else:
        r.verdict = "pass"
        r.reason = f"{f.summary} {f.within}"


def _reason(outcome: str, score: float, config: JudgeConfig, checks, failing, blocking) -> str:
    def listed(cs):
        return "; ".join(f"{c.name}: {c.reason}" for c in cs)

    judged = [c for c in checks if c.verdict != "nodata"]
    n_pass = sum(1 for c in judged if c.verdict == "pass")
    if outcome == "fail" and any(c.critical for c in failing):
        return "fail: " + listed([c for c in failing if c.critical] + [c for c in failing if not c.critical])
    if outcome == "fail":
        return f"fail: score {score:.2f} < marginal {config.marginal_score:g}: " + listed(failing)
    if outcome == "marginal":
        return f"marginal: score {score:.2f} < pass {config.pass_score:g}: " + listed(failing)
    if outcome == "nodata":
        if blocking:
            return "no data: " + "; ".join(f"{f.result.name}: {f.nodata}" for f in blocking)
        return "no data: no check had enough data"
    head = f"pass: {n_pass}/{len(judged)} checks pass (score {score:.2f})"
    if failing:
        head += "; non-critical failures: " + listed(failing)
    return head
