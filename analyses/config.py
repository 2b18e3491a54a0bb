"""The gate's configuration: two thresholds per check, two error rates, validated once.

Every critical check has a pair of thresholds on the canary's *harm*
(how much worse it is than stable), as the seeds' monitoring table gives them:

- `alert`: a difference a good canary may have. At or better than it, the
  run fails with probability at most `alpha`.
- `rollback`: a difference that must stop the canary. At or worse than
  it, the run passes with probability at most `beta`.

Between the two lies an indifference zone: either outcome is acceptable
there, and the narrower it is the more data a decision takes (see
analyses.gate for the sequential test and why the guarantees hold).

Units: latency thresholds are canary/stable ratios of the quantile (x-fold);
error rates and accuracy drops are absolute ratios in 0..1 (0.01 = 1 %,
0.02 = 2 points); the CTR drop is relative (0.15 = canary CTR 15 % below
stable's). Per-window stages tighten or loosen them as the rollout's weight
grows.

Prometheus checks (`prometheus:`, one per name) compare the two versions
on production metrics with the same kind of thresholds; their units follow
their comparison (analyses.promchecks). Their queries are the webhook's
business (webhook/promchecks.py): this schema holds only what the gate needs.

The webhook's YAML embeds this schema under each analysis' `checks:` key,
so errors name the dotted path below it (`checks.latency.rollback`).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "AccuracyConfig",
    "ConfigError",
    "CtrConfig",
    "DriftConfig",
    "ErrorRateConfig",
    "GATED_CHECKS",
    "JudgeConfig",
    "LatencyConfig",
    "PrometheusCheckConfig",
    "Stage",
    "Thresholds",
    "load_judge_config",
]

# evidently 0.7 stat test names and their default thresholds
# (evidently/legacy/calculations/stattests/*.py): p-value tests drift when
# p <= threshold, distance tests when the distance >= threshold.
DRIFT_DEFAULT_THRESHOLDS = {"ks": 0.05, "psi": 0.1, "wasserstein": 0.1, "jensenshannon": 0.1}

# The checks that can gate a run, in the order they are reported.
GATED_CHECKS = ("accuracy", "latency", "errors", "errors_increase", "ctr")
# Names a Prometheus check cannot take: the built-in checks and the drift reports.
RESERVED_CHECK_NAMES = frozenset(GATED_CHECKS + ("drift", "prediction_scores", "prediction_classes",
                                                 "prediction_agreement", "input_drift"))
PROM_CHECK_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the dotted field path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Thresholds(_Strict):
    """An (alert, rollback) pair; rollback must be strictly beyond alert."""

    alert: float
    rollback: float

    @model_validator(mode="after")
    def _ordered(self) -> "Thresholds":
        if not self.rollback > self.alert:
            raise ValueError(f"rollback: must be beyond alert ({self.rollback:g} <= {self.alert:g})")
        return self


class _Gated(Thresholds):
    """Fields every gated check has.

    on_insufficient: what a check that cannot get the evidence to decide
        does to the run (every golden row seen without a decision, windows
        too small for the statistic): "wait" (the default: the run cannot
        pass, Flagger's confirm-promotion holds, Argo reads Inconclusive,
        and every answer says what would let it decide) or "fail".
    max_overdispersion: the most one window's estimate may spread beyond
        its nominal variance (requests inside a window are not
        independent); None: no bound, so no single window can decide.
    """

    enabled: bool = True
    critical: bool = True
    alpha_weight: float = Field(1.0, gt=0.0, description="share of alpha, relative to the other gated checks")
    on_insufficient: Literal["wait", "fail"] = "wait"
    max_overdispersion: float | None = Field(None, ge=1.0)


class AccuracyConfig(_Gated):
    """Top-1 accuracy drop on the golden set, canary vs stable, paired per golden row.

    alert / rollback: absolute drop (0.02 = 2 points).
    planning_discordance: share of golden rows the two versions answer
        differently, assumed by `shadowgate plan` before any data (6 % is
        typical of two versions of one model).
    alpha_weight: accuracy gets twice the share of the others by default:
        its evidence is bounded by the golden set, the load checks' is not.
    """

    alert: float = Field(0.02, ge=0.0, lt=1.0)
    rollback: float = Field(0.05, gt=0.0, lt=1.0)
    alpha_weight: float = Field(2.0, gt=0.0)
    planning_discordance: float = Field(0.06, gt=0.0, lt=1.0)


class LatencyConfig(_Gated):
    """Latency quantile canary/stable ratio (x-fold) of the same window's load.

    quantile: 0.99 = P99. Failed and timed-out requests count as latency
        beyond the deadline, so errors cannot hide the tail.
    min_samples: fewer requests per version in a window leave it out of the
        latency evidence (P99 needs about 563 for any interval).
    max_window_evidence: accepted for configurations of 0.2 and ignored:
        the spread across windows is now part of the test (analyses.sequential),
        so no single window can fail latency however wild it is.
    """

    quantile: float = Field(0.99, gt=0.5, lt=1.0)
    alert: float = 1.5
    rollback: float = 2.0
    min_samples: int = Field(600, ge=50)
    max_window_evidence: float = Field(0.55, gt=0.0, le=1.0)

    @field_validator("alert", "rollback")
    @classmethod
    def _ratio(cls, v: float) -> float:
        if not v >= 1.0:
            raise ValueError("must be >= 1 (a canary/stable ratio)")
        return v


class ErrorRateConfig(_Gated):
    """The canary's own error rate (absolute, 0..1) over load and probe requests.

    max_overdispersion 100: errors may come in bursts of up to about a
    hundred requests on average; a canary failing every request still
    fails in its first window.
    """

    alert: float = Field(0.005, gt=0.0, lt=1.0)
    rollback: float = Field(0.01, gt=0.0, lt=1.0)
    max_overdispersion: float | None = Field(100.0, ge=1.0)


class ErrorIncreaseConfig(_Gated):
    """The canary's error rate minus stable's (absolute points, 0..1)."""

    alert: float = Field(0.005, ge=0.0, lt=1.0)
    rollback: float = Field(0.01, gt=0.0, lt=1.0)
    max_overdispersion: float | None = Field(100.0, ge=1.0)


class CtrConfig(_Gated):
    """Click-through rate drop of the canary relative to stable (0.15 = 15 % lower).

    on_missing: no counts (Prometheus down or empty, fewer than
        `min_impressions` per version): "skip" the window or "fail" the run.
    """

    alert: float = Field(0.15, ge=0.0, lt=1.0)
    rollback: float = Field(0.30, gt=0.0, lt=1.0)
    on_missing: Literal["skip", "fail"] = "skip"
    min_impressions: int = Field(1000, ge=1)


PROM_KINDS = ("counter_ratio", "histogram_quantile", "gauge_ceiling")
PROM_COMPARES = {
    "counter_ratio": ("difference", "ratio", "drop", "canary"),
    "histogram_quantile": ("ratio",),
    "gauge_ceiling": ("level", "difference"),
}
_DEFAULT_MIN = {"counter_ratio": 200.0, "gauge_ceiling": 2.0}


class PrometheusCheckConfig(_Gated):
    """A comparison of stable and canary on production metrics from Prometheus (analyses.promchecks).

    kind: counter_ratio (events over trials per version: 5xx over requests,
        clicks over impressions), histogram_quantile (a quantile from `le`
        bucket counts) or gauge_ceiling (a sampled level, e.g. GPU
        utilisation).
    compare: what alert and rollback are about, and their units:
        counter_ratio: difference (canary rate minus stable's, absolute
        0..1; the default), ratio (canary/stable x-fold), drop (1 -
        canary/stable, 0..1, as CTR), canary (the canary's own rate 0..1);
        histogram_quantile: ratio (canary/stable quantile, x-fold);
        gauge_ceiling: level (the canary's mean, in the gauge's units; the
        default) or difference (canary minus stable).
    quantile: histogram_quantile only (0.99 = P99).
    min_count: fewer trials (counters), observations (histograms) or
        samples (gauges) per version in a window is missing data (default
        200 trials; 10 / (1 - quantile) observations, 1000 for a P99; 2
        samples).
    on_missing: no data in a window (Prometheus down or slow, a series
        missing, below min_count): "skip" the window or "fail" the check.
    overdispersion: counters and histograms, multiply each window's
        variance by the spread the run's windows show beyond it (as latency).
    noise: gauges, the window-to-window standard deviation assumed until
        the run's own windows show it (gauge units; default (rollback -
        alert) / 2).
    max_window_evidence: accepted for configurations of 0.2 and ignored
        (as latency's: no single window can decide unless
        max_overdispersion bounds the spread).
    unit: the metric's unit, for reports ("us", "ms", "%").
    """

    kind: Literal["counter_ratio", "histogram_quantile", "gauge_ceiling"]
    compare: Literal["difference", "ratio", "drop", "canary", "level"]
    quantile: float = Field(0.99, gt=0.5, lt=1.0)
    min_count: float | None = Field(None, ge=1.0)
    on_missing: Literal["skip", "fail"] = "skip"
    overdispersion: bool = True
    noise: float | None = Field(None, gt=0.0)
    max_window_evidence: float | None = Field(None, gt=0.0, le=1.0)
    unit: str = Field("", max_length=16)

    @model_validator(mode="before")
    @classmethod
    def _default_compare(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("compare") is None and data.get("kind") in PROM_COMPARES:
            data = {**data, "compare": PROM_COMPARES[data["kind"]][0]}
        return data

    @model_validator(mode="after")
    def _ranges(self) -> "PrometheusCheckConfig":
        allowed = PROM_COMPARES[self.kind]
        if self.compare not in allowed:
            raise ValueError(f"compare: {self.compare!r} is not a comparison of {self.kind} "
                             f"({', '.join(allowed)})")
        a, r = self.alert, self.rollback
        if self.compare == "ratio" and not a > 0:
            raise ValueError("alert: must be > 0 (a canary/stable ratio)")
        if self.compare in ("drop", "canary") and not (0 <= a < 1 and 0 < r < 1):
            raise ValueError(f"alert: {self.compare} thresholds are ratios in 0..1")
        if self.compare == "canary" and not a > 0:
            raise ValueError("alert: must be > 0 (a rate)")
        if self.kind == "counter_ratio" and self.compare == "difference" and not (-1 < a < 1 and r <= 1):
            raise ValueError("alert: a difference of two rates lies in -1..1")
        return self

    def min_trials(self) -> float:
        """min_count with its default for the kind."""
        if self.min_count is not None:
            return self.min_count
        if self.kind == "histogram_quantile":
            return float(math.ceil(10.0 / (1.0 - self.quantile) - 1e-9))
        return _DEFAULT_MIN[self.kind]


class DriftConfig(_Strict):
    """Prediction and input drift: reported every window, never gating.

    Both versions get the same golden inputs, so input drift of the probes
    says nothing about the canary; prediction drift is reported beside
    accuracy, which is what gates. Fields as evidently names them.
    """

    enabled: bool = True
    predictions: bool = True
    min_score_ks: float = Field(0.1, gt=0.0, le=1.0)
    min_class_js: float = Field(0.1, gt=0.0, le=1.0)
    min_agreement: float = Field(0.8, gt=0.0, le=1.0)
    inputs: bool = True
    input_method: Literal["auto", "ks", "psi", "wasserstein", "jensenshannon"] = "auto"
    input_threshold: float | None = Field(None, gt=0.0)
    drift_share: float = Field(0.5, gt=0.0, le=1.0)
    min_samples: int = Field(30, ge=2)

    def threshold_for(self, method: str) -> float:
        if self.input_threshold is not None:
            return self.input_threshold
        return DRIFT_DEFAULT_THRESHOLDS[method]


class Stage(_Strict):
    """Thresholds from window `from_window` on (the seeds tighten them as weight grows).

    Each window's evidence is weighed against the thresholds in force for it,
    and it all adds up over the run (that is what keeps alpha and beta for the
    run). So evidence that a canary is far better than a loose stage's `alert`
    counts against failing it later: a tighter stage then needs more windows.
    """

    from_window: int = Field(ge=1)
    accuracy: Thresholds | None = None
    latency: Thresholds | None = None
    errors: Thresholds | None = None
    errors_increase: Thresholds | None = None
    ctr: Thresholds | None = None
    prometheus: dict[str, Thresholds] = Field(default_factory=dict)


class JudgeConfig(_Strict):
    """The gate: checks, their thresholds, and the two error rates.

    alpha: P(the run fails) when every true difference is at or better than
        `alert`, however often it is looked at. Split across the gated
        checks in proportion to their `alpha_weight`.
    beta: P(the run passes) when one critical check's true difference is at
        or worse than `rollback`.
    max_windows: the horizon; a run still undecided after it gets
        `at_horizon` (None: no horizon, "continue" until the caller stops).
    stable_max_error_ratio: a window in which stable fails more than this
        share of requests is not counted (stable down: nothing to compare).
    max_late_ratio: a window in which more than this share of load sends
        left late (Shadowgate itself overloaded) has no latency or error
        evidence for either version.
    """

    alpha: float = Field(0.01, gt=0.0, lt=0.5)
    beta: float = Field(0.05, gt=0.0, lt=0.5)
    max_windows: int | None = Field(None, ge=1)
    at_horizon: Literal["inconclusive", "fail", "pass"] = "inconclusive"
    stable_max_error_ratio: float = Field(0.2, gt=0.0, le=1.0)
    max_late_ratio: float = Field(0.02, ge=0.0, le=1.0)
    accuracy: AccuracyConfig = Field(default_factory=AccuracyConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    errors: ErrorRateConfig = Field(default_factory=ErrorRateConfig)
    errors_increase: ErrorIncreaseConfig = Field(default_factory=ErrorIncreaseConfig)
    ctr: CtrConfig = Field(default_factory=CtrConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    prometheus: dict[str, PrometheusCheckConfig] = Field(default_factory=dict)
    stages: list[Stage] = Field(default_factory=list)

    @field_validator("prometheus")
    @classmethod
    def _prom_names(cls, v: dict[str, PrometheusCheckConfig]) -> dict[str, PrometheusCheckConfig]:
        for name in v:
            if name in RESERVED_CHECK_NAMES:
                raise ValueError(f"{name}: a built-in check has this name")
            if not PROM_CHECK_NAME_RE.match(name):
                raise ValueError(f"{name}: lower-case letters, digits and '_', starting with a letter")
        return v

    @model_validator(mode="after")
    def _stages(self) -> "JudgeConfig":
        last = 0
        for i, st in enumerate(self.stages):
            if st.from_window <= last:
                raise ValueError(f"stages.{i}.from_window: must increase from stage to stage "
                                 f"({st.from_window} after {last})")
            if self.max_windows is not None and st.from_window > self.max_windows:
                raise ValueError(f"stages.{i}.from_window: window {st.from_window} cannot occur "
                                 f"(max_windows is {self.max_windows})")
            last = st.from_window
            for name in GATED_CHECKS:
                t = getattr(st, name)
                if t is None:
                    continue
                base = getattr(self, name)
                probe = base.model_copy(update={"alert": t.alert, "rollback": t.rollback})
                try:  # the check's own range rules apply to stage values too
                    type(base).model_validate(probe.model_dump())
                except ValidationError as err:
                    raise ValueError(f"stages.{i}.{name}: {_format_error(err, '')}") from None
            for name, t in st.prometheus.items():
                base = self.prometheus.get(name)
                if base is None:
                    raise ValueError(f"stages.{i}.prometheus.{name}: no Prometheus check has this name")
                try:
                    PrometheusCheckConfig.model_validate({**base.model_dump(), "alert": t.alert,
                                                          "rollback": t.rollback})
                except ValidationError as err:
                    raise ValueError(f"stages.{i}.prometheus.{name}: {_format_error(err, '')}") from None
        return self

    def check(self, name: str) -> Any:
        """The configuration of gated check `name`: a built-in one or a Prometheus check."""
        if name in self.prometheus:
            return self.prometheus[name]
        return getattr(self, name)

    def gated(self) -> list[str]:
        """Enabled gated checks, in report order: the built-in ones, then the Prometheus checks."""
        return ([n for n in GATED_CHECKS if getattr(self, n).enabled]
                + [n for n, c in self.prometheus.items() if c.enabled])

    def thresholds(self, name: str, window: int) -> tuple[float, float]:
        """(alert, rollback) of check `name` for window number `window` (1-based)."""
        cfg = self.check(name)
        alert, rollback = cfg.alert, cfg.rollback
        for st in self.stages:
            t = st.prometheus.get(name) if name in self.prometheus else getattr(st, name)
            if st.from_window <= window and t is not None:
                alert, rollback = t.alert, t.rollback
        return alert, rollback

    def alpha_shares(self, active: list[str]) -> dict[str, float]:
        """alpha of each active gated check: split by `alpha_weight`, summing to `alpha`."""
        total = sum(self.check(n).alpha_weight for n in active)
        return {n: self.alpha * self.check(n).alpha_weight / total for n in active} if total else {}


def _format_error(err: ValidationError, prefix: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if x != "__root__")
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        # model-level validators report the field in the message itself
        if ":" in msg and (not loc or msg.split(":", 1)[0].strip().split(".")[0] in
                           ("rollback", "stages", "alert", "compare")):
            sub, msg = (s.strip() for s in msg.split(":", 1))
            loc = ".".join(p for p in (loc, sub) if p)
        path = ".".join(p for p in (prefix, loc) if p)
        parts.append(f"{path}: {msg}")
    return "; ".join(parts)


def load_judge_config(data: dict[str, Any] | None, prefix: str = "checks") -> JudgeConfig:
    """Validate a plain dict (from YAML) into a JudgeConfig.

    Raises ConfigError whose message names each bad field by its dotted
    path under `prefix`, e.g. "checks.latency.rollback: must be beyond alert".
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: must be a mapping, got {type(data).__name__}")
    try:
        return JudgeConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, prefix)) from None
