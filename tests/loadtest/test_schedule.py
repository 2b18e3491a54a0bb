"""Schedules and the duration / rate parsers of the command line."""

import pytest

from loadtest.schedule import Schedule, Stage, parse_duration, parse_rate


def test_durations():
    assert parse_duration("30s") == 30.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0
    assert parse_duration("1h") == 3600.0
    assert parse_duration("7") == 7.0
    with pytest.raises(ValueError, match="--warmup"):
        parse_duration("soon", field="--warmup")


def test_rates():
    assert parse_rate("250") == 250.0
    assert parse_rate("1.5k") == 1500.0
    for bad in ("0", "-3", "fast"):
        with pytest.raises(ValueError, match="--rps"):
            parse_rate(bad, field="--rps")


def test_steps_follow_the_canary_weights():
    s = Schedule.steps(1000, (0.05, 0.25, 0.5), step_s=60)
    assert [st.rate for st in s.stages] == [50, 250, 500]
    assert s.duration_s == 180
    assert s.requests == 60 * (50 + 250 + 500)


def test_parse_forms():
    assert Schedule.parse("100", 10) == Schedule.constant(100, 10)
    assert Schedule.parse("steps:1000:0.05,0.5", 20) == Schedule.steps(1000, (0.05, 0.5), 10)
    assert Schedule.parse("50x10s,200x500ms").stages == (Stage(50, 10), Stage(200, 0.5))
    with pytest.raises(ValueError, match="duration"):
        Schedule.parse("100")


def test_scaled_share_keeps_the_timetable():
    s = Schedule.steps(900, (0.1, 1.0), 5).scaled(1 / 3)
    assert [st.rate for st in s.stages] == pytest.approx([30, 300])
    assert s.duration_s == 10


def test_invalid_stages():
    with pytest.raises(ValueError, match="rate"):
        Stage(-1, 1)
    with pytest.raises(ValueError, match="duration"):
        Stage(1, 0)
    with pytest.raises(ValueError, match="at least one"):
        Schedule(())
