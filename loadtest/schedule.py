"""Rate schedules for open-loop load: a list of stages, each a constant rate.

Rates are requests per second, durations seconds. Text forms accepted by
`parse_duration` and `Schedule.parse` are for the command line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str | float | int, *, field: str = "duration") -> float:
    """Seconds from '30s', '500ms', '2m', '1h' or a bare number of seconds.

    Raises ValueError naming `field` for anything else (or a negative value).
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise ValueError(f"{field}: expected a duration like 30s, 500ms or 2m, got {text!r}")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{field}: must be a non-negative duration, got {text!r}")
    return value


def parse_rate(text: str | float | int, *, field: str = "rps") -> float:
    """Requests per second from '100', '2.5' or '1k' (thousands); must be > 0."""
    s = str(text).strip().lower()
    scale = 1.0
    if s.endswith("k"):
        s, scale = s[:-1], 1000.0
    try:
        value = float(s) * scale
    except ValueError:
        raise ValueError(f"{field}: expected a rate in requests per second, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{field}: must be a positive rate, got {text!r}")
    return value


@dataclass(frozen=True)
class Stage:
    """One stretch of constant rate: `rate` requests/s for `duration_s` seconds (rate 0 = pause)."""

    rate: float
    duration_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate >= 0):
            raise ValueError(f"stage rate must be >= 0 requests/s, got {self.rate!r}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"stage duration_s must be > 0 seconds, got {self.duration_s!r}")

    @property
    def requests(self) -> float:
        """Requests this stage schedules (rate x duration)."""
        return self.rate * self.duration_s


@dataclass(frozen=True)
class Schedule:
    """A sequence of stages run back to back (an open-loop timetable)."""

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ValueError("a schedule needs at least one stage")

    @classmethod
    def constant(cls, rate: float, duration_s: float) -> "Schedule":
        """`rate` requests/s for `duration_s` seconds."""
        return cls((Stage(float(rate), float(duration_s)),))

    @classmethod
    def steps(cls, peak_rate: float, fractions=(0.05, 0.25, 0.5), step_s: float = 60.0) -> "Schedule":
        """One stage per fraction (0..1, or above for overload) of `peak_rate`, each `step_s` seconds.

        The default mirrors a canary's traffic weights: 5, 25, then 50 % of
        the production peak.
        """
        if not fractions:
            raise ValueError("fractions: give at least one fraction of the peak rate")
        return cls(tuple(Stage(float(peak_rate) * float(f), float(step_s)) for f in fractions))

    @classmethod
    def parse(cls, spec: str, duration_s: float | None = None) -> "Schedule":
        """A schedule from text.

        - "100": constant 100 requests/s for `duration_s`;
        - "steps:1000:0.05,0.25,0.5": those fractions of a 1000 requests/s
          peak, `duration_s` split evenly between the steps;
        - "50x10s,200x20s": explicit stages, rate x duration.
        """
        text = str(spec).strip()
        if text.startswith("steps:"):
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError(f"schedule: expected steps:PEAK:F1,F2,..., got {spec!r}")
            peak = parse_rate(parts[1], field="schedule peak rate")
            try:
                fractions = tuple(float(f) for f in parts[2].split(",") if f.strip())
            except ValueError:
                raise ValueError(f"schedule: fractions must be numbers, got {parts[2]!r}") from None
            if not fractions or any(f < 0 for f in fractions):
                raise ValueError(f"schedule: fractions must be >= 0, got {parts[2]!r}")
            if duration_s is None:
                raise ValueError("schedule: steps need a total duration")
            return cls.steps(peak, fractions, duration_s / len(fractions))
        if "x" in text:
            stages = []
            for item in text.split(","):
                rate_s, _, dur_s = item.partition("x")
                stages.append(Stage(parse_rate(rate_s, field="schedule stage rate"),
                                    parse_duration(dur_s, field="schedule stage duration")))
            return cls(tuple(stages))
        if duration_s is None:
            raise ValueError("schedule: a constant rate needs a duration")
        return cls.constant(parse_rate(text, field="rps"), duration_s)

    @property
    def duration_s(self) -> float:
        """Total length in seconds."""
        return sum(s.duration_s for s in self.stages)

    @property
    def requests(self) -> float:
        """Total requests scheduled."""
        return sum(s.requests for s in self.stages)

    @property
    def peak_rate(self) -> float:
        """Highest stage rate in requests/s."""
        return max(s.rate for s in self.stages)

    def scaled(self, factor: float) -> "Schedule":
        """The same timetable at `factor` times the rate (a worker's share is 1/N)."""
        return Schedule(tuple(Stage(s.rate * factor, s.duration_s) for s in self.stages))

    def describe(self) -> str:
        """Human text, e.g. '50 rps x 10s, 200 rps x 20s'."""
        return ", ".join(f"{s.rate:g} rps x {s.duration_s:g}s" for s in self.stages)
