"""Constructed windows with known answers for the judge's tests."""

from __future__ import annotations

import numpy as np

from analyses.window import CtrCounts, ProbePairs, VersionTraffic, Window


def latencies(rng: np.random.Generator, n: int, median_s: float = 0.020, scale: float = 1.0) -> np.ndarray:
    """Log-normal latencies in seconds."""
    return rng.lognormal(np.log(median_s), 0.3, n) * scale


def probes(n: int = 400, stable_wrong: int = 20, only_stable_right: int = 0, only_canary_right: int = 0,
           classes: int = 10, seed: int = 0, scores: bool = True) -> ProbePairs:
    """Paired probes with exact discordance counts.

    stable_wrong: probes both versions get wrong; only_stable_right /
    only_canary_right: the discordant probes.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    wrong = (labels + 1) % classes
    s = labels.copy()
    c = labels.copy()
    i = 0
    s[i:i + stable_wrong] = wrong[i:i + stable_wrong]
    c[i:i + stable_wrong] = wrong[i:i + stable_wrong]
    i += stable_wrong
    c[i:i + only_stable_right] = wrong[i:i + only_stable_right]
    i += only_stable_right
    s[i:i + only_canary_right] = wrong[i:i + only_canary_right]
    kw = {}
    if scores:
        def onehot(pred):
            sc = np.full((n, classes), 0.02)
            sc[np.arange(n), pred] = 1 - 0.02 * (classes - 1)
            return sc
        kw = {"stable_scores": onehot(s), "canary_scores": onehot(c)}
    return ProbePairs(labels=labels, stable_pred=s, canary_pred=c, **kw)


DEFAULT_CTR = CtrCounts(1750, 50_000, 1750, 50_000)  # 3.5 % on both versions


def window(seed: int = 0, n: int = 3000, scale: float = 1.0, errors_s: int = 3, errors_c: int = 3,
           pairs: ProbePairs | None = None, ctr: CtrCounts | None = DEFAULT_CTR, reference: bool = False,
           shift: float = 0.0) -> Window:
    """A window of identical versions unless told otherwise.

    scale: canary latencies multiplied by it; shift: standard deviations
    added to input feature 0 of the probes (with reference=True).
    """
    rng = np.random.default_rng(seed)
    pairs = pairs if pairs is not None else probes(seed=seed)
    ref = None
    if reference:
        ref = rng.normal(size=(800, 4))
        inputs = rng.normal(size=(len(pairs), 4))
        inputs[:, 0] += shift
        pairs.inputs = inputs
    return Window(
        stable=VersionTraffic(latencies_s=latencies(rng, n), requests=n, errors=errors_s),
        canary=VersionTraffic(latencies_s=latencies(rng, n, scale=scale), requests=n, errors=errors_c),
        probes=pairs,
        ctr=ctr,
        reference_inputs=ref,
    )
