"""The judge's configuration: thresholds and methods, validated once.

Defaults come from the rollback triggers of a classic TF Serving canary
plan: error rate > 1 %, P99 > 2x at the first step and > 1.5x later,
accuracy drop > 2 points, CTR drop > 15 %, KS drift p < 0.05.

Every threshold is a *tolerance*: a check fails only when the canary is
worse than the tolerance by its point estimate AND the difference is
statistically significant at the judge's false-fail budget `alpha`
(see `analyses.judge`). Units: ratios in 0..1 (or x-fold for ratios of
latencies), milliseconds only where the field name says `_ms`.

The webhook's YAML embeds this schema under each analysis' `checks:` key,
so errors name the dotted path below it (`checks.latency.max_ratio`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "AccuracyConfig",
    "ConfigError",
    "CtrConfig",
    "DriftConfig",
    "ErrorRateConfig",
    "JudgeConfig",
    "LatencyConfig",
    "load_judge_config",
]

# evidently 0.7 stat test names and their default thresholds
# (evidently/legacy/calculations/stattests/*.py): p-value tests drift when
# p <= threshold, distance tests when the distance >= threshold.
DRIFT_DEFAULT_THRESHOLDS = {"ks": 0.05, "psi": 0.1, "wasserstein": 0.1, "jensenshannon": 0.1}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the dotted field path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Check(_Strict):
    enabled: bool = True
    critical: bool = True
    weight: float = Field(1.0, ge=0.0, description="share of the score, relative to the other checks")


class AccuracyConfig(_Check):
    """Top-1 accuracy on the golden set, paired (McNemar on discordant probes).

    max_drop: allowed absolute drop of accuracy (0.02 = 2 points).
    min_samples: fewer paired probes than this is "no data".
    """

    max_drop: float = Field(0.02, ge=0.0, lt=1.0)
    min_samples: int = Field(50, ge=1)


class LatencyConfig(_Check):
    """Latency quantiles canary vs stable from the same window and load.

    quantile: the critical quantile (0.99 = P99); `quantiles` are also
        compared (non-critical); the critical one is added if missing.
    max_ratio: allowed canary/stable ratio of each quantile (x-fold).
    first_look_max_ratio: allowed ratio at the first look of a run (the
        first step is small and cold); None uses `max_ratio`.
    max_ms: optional absolute ceiling for the critical quantile, in ms.
    mann_whitney: also compare whole distributions with a Mann-Whitney
        test, as Kayenta does (non-critical).
    mann_whitney_tolerance: allowed relative shift of typical latency
        (Hodges-Lehmann shift of log latency; 0.25 = 25 % slower).
    mann_whitney_max_samples: per-version subsample for the rank test;
        keeps the judge fast on 100k samples (2000 per arm already detects
        a 5 % shift, far below the tolerance).
    min_samples: fewer successful requests per version is "no data".
    """

    quantile: float = Field(0.99, gt=0.0, lt=1.0)
    quantiles: list[float] = Field(default_factory=lambda: [0.5, 0.9, 0.99])
    max_ratio: float = 1.5
    first_look_max_ratio: float | None = 2.0
    max_ms: float | None = Field(None, gt=0.0)
    mann_whitney: bool = True
    mann_whitney_tolerance: float = Field(0.25, gt=0.0)
    mann_whitney_max_samples: int = Field(2000, ge=50)
    min_samples: int = Field(100, ge=1)

    @field_validator("max_ratio", "first_look_max_ratio")
    @classmethod
    def _ratio_above_one(cls, v: float | None) -> float | None:
        if v is not None and not v > 1.0:
            raise ValueError("must be > 1")
        return v

    @field_validator("quantiles")
    @classmethod
    def _quantiles_in_range(cls, v: list[float]) -> list[float]:
        for q in v:
            if not 0.0 < q < 1.0:
                raise ValueError(f"each quantile must be in (0, 1), got {q}")
        return sorted(set(v))

    def all_quantiles(self) -> list[float]:
        return sorted(set(self.quantiles) | {self.quantile})


class ErrorRateConfig(_Check):
    """Error rate of the canary's load requests.

    max: allowed error rate (0.01 = 1 %), tested with an exact binomial test.
    vs_stable: also compare to stable with a two-proportion (Fisher) test.
    max_increase: allowed absolute increase over stable (0.005 = 0.5 point).
    min_requests: fewer requests per version is "no data".
    """

    max: float = Field(0.01, gt=0.0, lt=1.0)
    vs_stable: bool = True
    max_increase: float = Field(0.005, ge=0.0, lt=1.0)
    min_requests: int = Field(100, ge=1)


class CtrConfig(_Check):
    """Click-through rate, a business metric, from click and impression counts.

    min_ratio: lowest allowed canary/stable CTR ratio (0.85 = 15 % drop).
    on_missing: counts missing (Prometheus down or empty), invalid, or below
        `min_impressions` per version: "skip" the check (no data, not in
        the score, does not block the verdict) or "fail" it.
    """

    min_ratio: float = Field(0.85, gt=0.0, lt=1.0)
    on_missing: Literal["skip", "fail"] = "skip"
    min_impressions: int = Field(1000, ge=1)


class DriftConfig(_Check):
    """Prediction drift (canary vs stable, same inputs) and input drift.

    predictions: compare class scores (KS), predicted classes
        (chi-square + Jensen-Shannon) and the top-1 agreement rate.
    min_score_ks: smallest KS distance on a class score that counts.
    min_class_js: smallest Jensen-Shannon distance of predicted classes
        that counts (evidently's default threshold, 0.1).
    min_agreement: lowest allowed share of probes where both versions
        predict the same class.
    inputs: test probe inputs against the run's reference set.
    input_method: evidently stat test name, or "auto" for evidently's own
        choice (KS up to 1000 reference rows, Wasserstein above).
    input_threshold: per-column threshold; None uses evidently's default
        for the method (ks 0.05, psi 0.1, wasserstein 0.1, jensenshannon 0.1).
        Ignored with "auto", which mixes methods with their own defaults.
    drift_share: share of drifted columns that evidently calls dataset drift
        (reported; the check fails on any significantly drifted column).
    min_samples: fewer probes is "no data".
    """

    critical: bool = False
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


class JudgeConfig(_Strict):
    """All checks and how their results combine into one verdict.

    alpha: false-fail budget: the chance that identical versions fail a
        step, and (separately) that they fail anywhere in a run judged
        after every window. Split across checks with Holm's method, and
        across looks of a run with an alpha-spending sequence.
    pass_score / marginal_score: weighted share of passing checks needed
        for "pass" / "marginal" (Kayenta-style score thresholds, 0..1).
    on_no_data: outcome when there is too little data to judge:
        "inconclusive" (Argo pauses, Flagger retries), "fail" or "pass".
    """

    alpha: float = Field(0.01, gt=0.0, lt=0.5)
    pass_score: float = Field(0.9, ge=0.0, le=1.0)
    marginal_score: float = Field(0.75, ge=0.0, le=1.0)
    on_no_data: Literal["inconclusive", "fail", "pass"] = "inconclusive"
    accuracy: AccuracyConfig = Field(default_factory=AccuracyConfig)
    latency: LatencyConfig = Field(default_factory=lambda: LatencyConfig())
    errors: ErrorRateConfig = Field(default_factory=ErrorRateConfig)
    ctr: CtrConfig = Field(default_factory=CtrConfig)
    drift: DriftConfig = Field(default_factory=lambda: DriftConfig())

    @model_validator(mode="after")
    def _scores_ordered(self) -> "JudgeConfig":
        if self.marginal_score > self.pass_score:
            raise ValueError("marginal_score: must be <= pass_score")
        return self


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
        if not loc and ":" in msg:
            loc, msg = (s.strip() for s in msg.split(":", 1))
        path = ".".join(p for p in (prefix, loc) if p)
        parts.append(f"{path}: {msg}")
    return "; ".join(parts)


def load_judge_config(data: dict[str, Any] | None, prefix: str = "checks") -> JudgeConfig:
    """Validate a plain dict (from YAML) into a JudgeConfig.

    Raises ConfigError whose message names each bad field by its dotted
    path under `prefix`, e.g. "checks.latency.max_ratio: must be > 1".
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: must be a mapping, got {type(data).__name__}")
    try:
        return JudgeConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, prefix)) from None
