"""The gate's configuration: seed defaults, alert/rollback pairs, errors that name the field."""

import pytest

from analyses.config import ConfigError, JudgeConfig, load_judge_config


def test_defaults_are_the_seed_monitoring_table():
    c = JudgeConfig()
    assert (c.latency.alert, c.latency.rollback, c.latency.quantile) == (1.5, 2.0, 0.99)
    assert (c.errors.alert, c.errors.rollback) == (0.005, 0.01)
    assert (c.accuracy.alert, c.accuracy.rollback) == (0.02, 0.05)
    assert (c.ctr.alert, c.ctr.rollback) == (0.15, 0.30)
    assert (c.alpha, c.beta) == (0.01, 0.05)
    assert c.drift.threshold_for("ks") == 0.05


def test_alpha_is_split_by_weight_over_active_checks_only():
    c = JudgeConfig()
    shares = c.alpha_shares(["accuracy", "latency", "errors"])
    assert shares["accuracy"] == pytest.approx(2 * shares["latency"])
    assert sum(shares.values()) == pytest.approx(c.alpha)
    assert "ctr" not in shares


def test_stages_change_thresholds_from_their_window_on():
    c = load_judge_config({"stages": [{"from_window": 1, "latency": {"alert": 2.0, "rollback": 3.0}},
                                      {"from_window": 4, "errors": {"alert": 0.002, "rollback": 0.005}}]})
    assert c.thresholds("latency", 1) == (2.0, 3.0)
    assert c.thresholds("latency", 9) == (2.0, 3.0)
    assert c.thresholds("errors", 3) == (0.005, 0.01)
    assert c.thresholds("errors", 4) == (0.002, 0.005)


@pytest.mark.parametrize("data, message", [
    ({"latency": {"alert": 2.0, "rollback": 1.5}}, "checks.latency.rollback: must be beyond alert"),
    ({"errors": {"alert": 0.01, "rollback": 0.01}}, "checks.errors.rollback: must be beyond alert"),
    ({"latency": {"alert": 0.9}}, "checks.latency.alert:"),
    ({"alpha": 0.5}, "checks.alpha:"),
    ({"alpha": 0}, "checks.alpha:"),
    ({"beta": 0.7}, "checks.beta:"),
    ({"ctr": {"on_missing": "ignore"}}, "checks.ctr.on_missing:"),
    ({"drift": {"input_method": "magic"}}, "checks.drift.input_method:"),
    ({"latency": {"max_ratio": 1.5}}, "checks.latency.max_ratio: unknown field"),
    ({"max_windows": 5, "stages": [{"from_window": 9, "latency": {"alert": 2, "rollback": 3}}]},
     "checks.stages.0.from_window: window 9 cannot occur"),
    ({"stages": [{"from_window": 3}, {"from_window": 2}]}, "checks.stages.1.from_window: must increase"),
    ({"stages": [{"from_window": 1, "latency": {"alert": 3, "rollback": 2}}]}, "checks.stages.0.latency"),
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
