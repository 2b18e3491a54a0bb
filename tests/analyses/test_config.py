"""The judge's configuration: seed defaults, validation errors that name the field."""

import pytest

from analyses.config import ConfigError, JudgeConfig, load_judge_config


def test_defaults_are_the_rollback_triggers_of_the_seed_plan():
    c = JudgeConfig()
    assert c.errors.max == 0.01  # error rate > 1 %
    assert c.latency.first_look_max_ratio == 2.0  # P99 > 2x at the first step
    assert c.latency.max_ratio == 1.5  # P99 > 1.5x later
    assert c.latency.quantile == 0.99
    assert c.accuracy.max_drop == 0.02  # accuracy drop > 2 points
    assert c.ctr.min_ratio == 0.85  # CTR drop > 15 %
    assert c.drift.threshold_for("ks") == 0.05  # KS drift p < 0.05
    assert c.alpha == 0.01


def test_evidently_default_thresholds_per_method():
    d = JudgeConfig().drift
    assert {m: d.threshold_for(m) for m in ("ks", "psi", "wasserstein", "jensenshannon")} == {
        "ks": 0.05, "psi": 0.1, "wasserstein": 0.1, "jensenshannon": 0.1}


def test_empty_or_missing_mapping_gives_defaults():
    assert load_judge_config(None) == JudgeConfig()
    assert load_judge_config({}) == JudgeConfig()


def test_nested_values_are_loaded():
    c = load_judge_config({"latency": {"max_ratio": 1.2, "max_ms": 250}, "ctr": {"on_missing": "fail"}})
    assert c.latency.max_ratio == 1.2 and c.latency.max_ms == 250
    assert c.ctr.on_missing == "fail"


@pytest.mark.parametrize("data, message", [
    ({"latency": {"max_ratio": 0.9}}, "checks.latency.max_ratio: must be > 1"),
    ({"latency": {"max_ratio": "fast"}}, "checks.latency.max_ratio:"),
    ({"latency": {"quantiles": [0.5, 1.5]}}, "checks.latency.quantiles:"),
    ({"accuracy": {"max_drop": -0.1}}, "checks.accuracy.max_drop:"),
    ({"errors": {"max": 2}}, "checks.errors.max:"),
    ({"ctr": {"on_missing": "ignore"}}, "checks.ctr.on_missing:"),
    ({"drift": {"input_method": "magic"}}, "checks.drift.input_method:"),
    ({"latency": {"p99": 1}}, "checks.latency.p99: unknown field"),
    ({"colour": "blue"}, "checks.colour: unknown field"),
    ({"pass_score": 0.5, "marginal_score": 0.8}, "checks.marginal_score: must be <= pass_score"),
])
def test_errors_name_the_dotted_field(data, message):
    with pytest.raises(ConfigError) as e:
        load_judge_config(data)
    assert message in str(e.value)


def test_prefix_is_the_callers_path():
    with pytest.raises(ConfigError, match=r"^analyses\.digits\.checks\.alpha:"):
        load_judge_config({"alpha": 0.9}, prefix="analyses.digits.checks")


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="checks: must be a mapping"):
        load_judge_config([1, 2])


def test_critical_quantile_is_always_compared():
    c = load_judge_config({"latency": {"quantile": 0.95, "quantiles": [0.5]}})
    assert c.latency.all_quantiles() == [0.5, 0.95]
