"""A measurement that plays back prepared windows, to drive sessions from tests.

It stands in for the load generator and probes only (the part that talks to
model servers); the app, sessions, judge and store under test are real.
"""

from __future__ import annotations

import numpy as np

from analyses.window import ProbePairs, VersionTraffic, Window


def traffic(n: int = 2000, median_s: float = 0.010, errors: int = 0, seed: int = 0) -> VersionTraffic:
    rng = np.random.default_rng(seed)
    lat = rng.lognormal(np.log(median_s), 0.3, size=n - errors)
    return VersionTraffic(latencies_s=lat, requests=n, errors=errors,
                          errors_by_code={"UNAVAILABLE": errors} if errors else {})


def probes(n: int = 300, stable_acc: float = 0.95, canary_acc: float = 0.95, seed: int = 0,
           stable_down: bool = False, canary_down: bool = False, classes: int = 10) -> ProbePairs:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)

    def preds(acc: float, down: bool) -> np.ndarray:
        if down:
            return np.full(n, -1)
        p = labels.copy()
        wrong = rng.random(n) > acc
        p[wrong] = (labels[wrong] + 1 + rng.integers(0, classes - 1, size=int(wrong.sum()))) % classes
        return p

    return ProbePairs(labels=labels, stable_pred=preds(stable_acc, stable_down),
                      canary_pred=preds(canary_acc, canary_down))


def window(canary_acc: float = 0.95, stable_acc: float = 0.95, canary_median_s: float = 0.010,
           canary_errors: int = 0, stable_down: bool = False, canary_down: bool = False,
           seed: int = 0, n: int = 300) -> Window:
    """A window of `n` probe pairs and 2000 load requests per version."""
    stable = traffic(2000, 0.010, errors=2000 if stable_down else 0, seed=seed)
    canary = traffic(2000, canary_median_s, errors=2000 if canary_down else canary_errors, seed=seed + 1)
    return Window(stable=stable, canary=canary,
                  probes=probes(n, stable_acc, canary_acc, seed=seed + 2, stable_down=stable_down,
                                canary_down=canary_down))


GOOD = dict(canary_acc=0.95)
BAD = dict(canary_acc=0.60)


class ScriptedMeasurement:
    """Each take_window() returns the next window made by `make(**spec)` with a growing seed."""

    def __init__(self, spec: dict | None = None, golden: dict | None = None,
                 canary_check: tuple = (True, "canary digits:canary is AVAILABLE", None)) -> None:
        self.spec = dict(spec or GOOD)
        self.golden_spec = dict(golden or self.spec)
        self.canary_check = canary_check
        self.seed = 0
        self.rates: list[float] = []
        self.started = 0
        self.stopped = 0

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    def set_rate(self, rate: float) -> None:
        self.rates.append(rate)

    def pending_probes(self) -> int:
        return 300 if self.spec is not None else 0

    def take_window(self) -> Window:
        self.seed += 10
        if self.spec is None:
            return Window()
        return window(seed=self.seed, **self.spec)

    async def golden_check(self) -> Window:
        self.seed += 10
        return window(seed=self.seed, **self.golden_spec)

    async def check_canary(self):
        return self.canary_check


class Factory:
    """measurement_factory for create_app: one ScriptedMeasurement per analysis name, changeable by tests."""

    def __init__(self, **defaults) -> None:
        self.defaults = defaults
        self.by_analysis: dict[str, ScriptedMeasurement] = {}

    def __call__(self, analysis):
        m = self.by_analysis.get(analysis.name)
        if m is None:
            m = self.by_analysis[analysis.name] = ScriptedMeasurement(**self.defaults)
        return m
