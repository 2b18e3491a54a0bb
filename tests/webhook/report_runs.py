"""Runs for the report tests, made by the real app, sessions, gate and store.

Only the measurement is played back (as in scripted.py), with everything a
report shows: class scores and inputs on the probes, golden rows, late
sends, errors by status code. Flagger's calls follow its real order (see
tests/webhook/drivers.py): confirm-rollout, pre-rollout, then per interval
rollback, rollout and confirm-traffic-increase, confirm-promotion at the
end, post-rollout.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry

from analyses.window import ProbePairs, VersionTraffic, Window
from tests.webhook.conftest import payload
from webhook.app import create_app
from webhook.config import load_settings

GOLDEN_ROWS = 400
FEATURES = 6
CLASSES = 10


def _scores(rng, pred: np.ndarray, right_conf: float) -> np.ndarray:
    n = pred.size
    conf = np.clip(rng.beta(8 * right_conf, 2, n), 0.11, 0.999)
    s = np.repeat(((1 - conf) / (CLASSES - 1))[:, None], CLASSES, axis=1)
    ok = pred >= 0
    s[np.arange(n)[ok], pred[ok]] = conf[ok]
    s[~ok] = np.nan
    return s


@dataclass
class Spec:
    """A canary: accuracy drop (0..1), latency factor, error ratio; late sends per window."""

    accuracy_drop: float = 0.0
    latency_scale: float = 1.0
    canary_errors: float = 0.001
    late: int = 0
    probes: int = 200
    requests: int = 2000


class RichMeasurement:
    """Plays back windows like a live session's, with every field the report reads."""

    def __init__(self, spec: Spec, golden: np.ndarray, labels: np.ndarray, seed: int = 0) -> None:
        self.spec = spec
        self.golden, self.labels = golden, labels
        self.rng = np.random.default_rng(seed)
        self.started = 0

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        pass

    def set_rate(self, rate: float) -> None:
        pass

    def pending_probes(self) -> int:
        return self.spec.probes

    async def check_canary(self):
        return True, "canary digits:canary is AVAILABLE", None

    async def golden_check(self) -> Window:
        w = self._window(np.arange(GOLDEN_ROWS), load=False)
        return w

    def take_window(self) -> Window:
        return self._window(self.rng.integers(0, GOLDEN_ROWS, self.spec.probes), load=True)

    def _traffic(self, n: int, median_s: float, error_ratio: float, late: int) -> VersionTraffic:
        errors = int(self.rng.binomial(n, error_ratio))
        lat = self.rng.lognormal(np.log(median_s), 0.35, n - errors)
        deadline = int(errors * 0.3)
        codes = {k: v for k, v in (("UNAVAILABLE", errors - deadline), ("DEADLINE_EXCEEDED", deadline)) if v}
        return VersionTraffic(latencies_s=lat, requests=n, errors=errors, errors_by_code=codes, late=late,
                              intended=n + late, deadline_s=2.0)

    def _window(self, rows: np.ndarray, load: bool) -> Window:
        sp = self.spec
        rng = self.rng
        labels = self.labels[rows]
        # a deterministic stable model: right on 95 % of golden rows (fixed per row)
        s_right = (rows * 7919 % 100) < 95
        c_right = s_right & ~((rows * 104729 % 1000) < 1000 * sp.accuracy_drop)
        stable_pred = np.where(s_right, labels, (labels + 1) % CLASSES)
        canary_pred = np.where(c_right, labels, (labels + 1 + rows % 3) % CLASSES)
        probes = ProbePairs(labels=labels, stable_pred=stable_pred, canary_pred=canary_pred,
                            stable_scores=_scores(rng, stable_pred, 1.0),
                            canary_scores=_scores(rng, canary_pred, 1.0 - sp.accuracy_drop),
                            inputs=self.golden[rows], rows=rows)
        if not load:
            return Window(probes=probes)
        return Window(stable=self._traffic(sp.requests, 0.010, 0.001, 0),
                      canary=self._traffic(sp.requests, 0.010 * sp.latency_scale, sp.canary_errors, sp.late),
                      probes=probes)


class RichFactory:
    """measurement_factory: one RichMeasurement per analysis, with that analysis' spec."""

    def __init__(self, specs: dict[str, Spec], golden: np.ndarray, labels: np.ndarray) -> None:
        self.specs, self.golden, self.labels = specs, golden, labels
        self.by_analysis: dict[str, RichMeasurement] = {}

    def __call__(self, analysis):
        m = self.by_analysis.get(analysis.name)
        if m is None:
            m = self.by_analysis[analysis.name] = RichMeasurement(
                self.specs.get(analysis.name, Spec()), self.golden, self.labels, seed=len(self.by_analysis))
        return m


def rich_config(tmp_path, analyses: tuple[str, ...] = ("digits", "podinfo"), **server) -> dict:
    rng = np.random.default_rng(0)
    golden = rng.normal(size=(GOLDEN_ROWS, FEATURES)).astype(np.float32)
    np.savez(tmp_path / "golden.npz", inputs=golden, labels=rng.integers(0, CLASSES, GOLDEN_ROWS))
    np.savez(tmp_path / "reference.npz", inputs=rng.normal(size=(1000, FEATURES)).astype(np.float32))
    target = {"protocol": "tfserving-grpc", "address": "127.0.0.1:1", "model": "digits"}
    analysis = {"stable": {**target, "label": "stable"}, "canary": {**target, "label": "canary"},
                "golden": "golden.npz", "reference": "reference.npz", "interval_s": 3600}
    return {"server": {"store": str(tmp_path / "runs.db"), "interval_s": 3600, **server},
            "analyses": {name: copy.deepcopy(analysis) for name in analyses}}


def rich_app(tmp_path, specs: dict[str, Spec], config: dict | None = None):
    """An app whose analyses play back windows of the given specs (default Spec(): a good canary)."""
    cfg = config or rich_config(tmp_path)
    settings = load_settings(cfg, tmp_path)
    data = np.load(tmp_path / "golden.npz")
    factory = RichFactory(specs, data["inputs"], data["labels"])
    app = create_app(settings, registry=CollectorRegistry(), measurement_factory=factory)
    app.testing = True
    app.factory = factory
    return app


def _session(app, run_id: str):
    svc = app.extensions["shadowgate"]
    deadline = time.time() + 10
    while time.time() < deadline:
        s = svc.sessions.live(run_id)
        if s is not None:
            return s
        time.sleep(0.01)
    raise AssertionError(f"no live session for {run_id}")


def close(app, run_id: str) -> None:
    """Close the run's open window now (the interval would, in a real run)."""
    s = _session(app, run_id)
    s.golden_done.result(timeout=10)
    app.extensions["shadowgate"].sessions.call(s.close_window("interval"), 10)


def flagger_run(app, name: str, *, windows: int = 16, finish: bool = True, namespace: str = "test",
                checksum: str = "85d557f47b", headers: dict | None = None, steps: int = 2) -> str:
    """A rollout in Flagger's order; stops at promotion, at rollback, or (finish=False) in progress.

    As Flagger: `steps` weight increases (confirm-traffic-increase), then confirm-promotion every
    interval until it answers 200 (the last stage's pass) or `windows` windows have passed."""
    c = app.test_client()
    kw = dict(name=name, namespace=namespace, checksum=checksum)

    def hook(kind: str, phase: str = "Progressing", **meta: str):
        r = c.post(f"/flagger/{kind}", json=payload(phase=phase, **kw, **meta), headers=headers or {})
        assert r.status_code in (200, 409, 412), r.json
        return r

    hook("event", phase="Initializing", eventType="Normal",
         eventMessage=f"New revision detected! Scaling up {name}.{namespace}")
    run_id = hook("confirm-rollout", phase="Initialized").json["run"]
    hook("pre-rollout")
    promoted = False
    for k in range(windows):
        if hook("rollback").status_code == 200:
            if finish:
                hook("event", phase="Failed", eventType="Warning",
                     eventMessage=f"Canary failed! Scaling down {name}.{namespace}")
                hook("post-rollout", phase="Failed")
            return run_id
        close(app, run_id)
        if hook("rollout").status_code != 200:
            continue
        if k < steps:
            hook("confirm-traffic-increase")
        elif finish and hook("confirm-promotion", phase="Promoting").status_code == 200:
            promoted = True
            break
    if finish:
        if promoted:
            hook("event", phase="Succeeded", eventType="Normal", eventMessage="Promotion completed! "
                 f"Scaling down {name}.{namespace}")
            hook("post-rollout", phase="Succeeded")
        else:
            hook("post-rollout", phase="Failed")
    return run_id
