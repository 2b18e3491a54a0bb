"""Fault injection: extra latency, injected errors and stalls on Predict.

Set at start with the CLI flags (`--latency`, `--latency-sigma`,
`--error-ratio`, `--error-code`, `--stall-for`, `--stall-every`,
`--fault-versions`, `--fault-labels`, `--fault-models`, `--faults JSON`)
and changed while running on the REST port:

    GET    /v1/_faults        -> the current faults as JSON
    PUT    /v1/_faults        <- JSON object: replaces all faults (absent
                                 fields take their defaults; `{}` clears)
    DELETE /v1/_faults        -> clears all faults

Fields (seconds in code, ratios 0..1):

    latency_s      extra delay per request; with latency_sigma > 0 it is the
                   median of a lognormal delay (exp(N(ln latency_s, sigma)))
    latency_sigma  shape of the lognormal (0 = fixed delay)
    error_ratio    share of requests answered with error_code (0..1)
    error_code     gRPC status name, e.g. "UNAVAILABLE"; REST answers with
                   TF Serving's HTTP code for it (503) and {"error": ...}
    stall_for_s    a stall: requests arriving in it wait until it ends
    stall_every_s  repeat the stall: stalled while (t - t0) mod every <
                   stall_for_s, t0 = when the faults were set; without it
                   there is one stall starting when the faults are set
    models, versions, labels
                   targets: faults apply only to requests resolving to one
                   of these models / versions / labelled versions (a label
                   is resolved to its version, so asking for version 2
                   directly is hit by a fault on label "canary" -> 2).
                   Absent or empty means every model or version.
    seed           seed of the random draws (latency, errors), for repeatable runs

Faults apply to Predict only (gRPC and REST), after the model version is
resolved and before inputs are checked, in this order: stall, latency, error.
Metadata, status, metrics and this endpoint are never delayed, so tests and
probes can always reach the server. All waits are asyncio sleeps: a delayed
request never blocks another one.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import asdict, dataclass, field

from modelserver.status import ERROR_CODES, ServingStatus


class FaultError(ValueError):
    """A fault setting is invalid (message names the field)."""


def _num(d: dict, key: str, default: float | None, lo: float | None = None,
         hi: float | None = None, allow_none: bool = False) -> float | None:
    v = d.get(key, default)
    if v is None:
        if allow_none:
            return None
        raise FaultError(f"{key}: a number is required")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise FaultError(f"{key}: expected a finite number, got {v!r}")
    if lo is not None and v < lo:
        raise FaultError(f"{key}: must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise FaultError(f"{key}: must be <= {hi}, got {v}")
    return float(v)


def _list(d: dict, key: str, kind: type) -> list:
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        v = [v]
    out = []
    for item in v:
        if kind is int:
            if isinstance(item, bool):
                raise FaultError(f"{key}: expected version numbers, got {item!r}")
            try:
                item = int(item)
            except (TypeError, ValueError):
                raise FaultError(f"{key}: expected version numbers, got {item!r}") from None
        elif not isinstance(item, str) or not item:
            raise FaultError(f"{key}: expected non-empty strings, got {item!r}")
        out.append(item)
    return out


@dataclass(frozen=True)
class Faults:
    """What to inject; see the module docstring for the fields."""

    latency_s: float = 0.0
    latency_sigma: float = 0.0
    error_ratio: float = 0.0
    error_code: str = "UNAVAILABLE"
    stall_for_s: float = 0.0
    stall_every_s: float | None = None
    models: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    seed: int | None = None

    _FIELDS = ("latency_s", "latency_sigma", "error_ratio", "error_code", "stall_for_s",
               "stall_every_s", "models", "versions", "labels", "seed")

    @classmethod
    def from_dict(cls, d: dict | None) -> "Faults":
        """Validate a JSON-like dict; raises FaultError naming the field."""
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise FaultError(f"faults must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - set(cls._FIELDS) - {"stalled"})
        if unknown:
            raise FaultError(f"unknown fault field(s) {unknown}; known: {list(cls._FIELDS)}")
        code = d.get("error_code", "UNAVAILABLE")
        if not isinstance(code, str) or code.upper() not in ERROR_CODES:
            raise FaultError(f"error_code: expected one of {list(ERROR_CODES)}, got {code!r}")
        stall_for = _num(d, "stall_for_s", 0.0, lo=0.0)
        every = _num(d, "stall_every_s", None, lo=0.0, allow_none=True)
        if every is not None and every <= stall_for:
            raise FaultError(f"stall_every_s: must be greater than stall_for_s ({stall_for}), "
                             f"got {every}")
        seed = d.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise FaultError(f"seed: expected an integer, got {seed!r}")
        return cls(
            latency_s=_num(d, "latency_s", 0.0, lo=0.0),
            latency_sigma=_num(d, "latency_sigma", 0.0, lo=0.0),
            error_ratio=_num(d, "error_ratio", 0.0, lo=0.0, hi=1.0),
            error_code=code.upper(),
            stall_for_s=stall_for,
            stall_every_s=every,
            models=_list(d, "models", str),
            versions=_list(d, "versions", int),
            labels=_list(d, "labels", str),
            seed=seed,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def active(self) -> bool:
        return bool(self.latency_s > 0 or self.error_ratio > 0 or self.stall_for_s > 0)


class FaultInjector:
    """Holds the current faults and applies them to one request at a time.

    clock: monotonic time in seconds (replaceable in tests).
    """

    def __init__(self, faults: Faults | None = None, clock=time.monotonic) -> None:
        self._clock = clock
        self.set(faults or Faults())

    def set(self, faults: Faults) -> None:
        """Replace the faults; the stall schedule restarts now."""
        self.faults = faults
        self._t0 = self._clock()
        self._rng = random.Random(faults.seed)

    def to_dict(self) -> dict:
        d = self.faults.to_dict()
        d["stalled"] = self.stall_remaining_s() > 0
        return d

    def targets(self, model_name: str, version: int, labels: dict[str, int]) -> bool:
        """Whether the faults apply to this model version (labels: the model's label map)."""
        f = self.faults
        if f.models and model_name not in f.models:
            return False
        if not f.versions and not f.labels:
            return True
        if version in f.versions:
            return True
        return any(labels.get(label) == version for label in f.labels)

    def stall_remaining_s(self, now: float | None = None) -> float:
        """Seconds until the current stall ends (0 when not stalled)."""
        f = self.faults
        if f.stall_for_s <= 0:
            return 0.0
        elapsed = (self._clock() if now is None else now) - self._t0
        if elapsed < 0:
            return 0.0
        phase = elapsed % f.stall_every_s if f.stall_every_s else elapsed
        return max(0.0, f.stall_for_s - phase)

    def draw_latency_s(self) -> float:
        f = self.faults
        if f.latency_s <= 0:
            return 0.0
        if f.latency_sigma <= 0:
            return f.latency_s
        return f.latency_s * math.exp(self._rng.gauss(0.0, f.latency_sigma))

    async def apply(self, model_name: str, version: int, labels: dict[str, int]) -> None:
        """Wait out stall and latency, then maybe raise the injected error."""
        if not self.faults.active or not self.targets(model_name, version, labels):
            return
        wait = self.stall_remaining_s()
        if wait > 0:
            await asyncio.sleep(wait)
        delay = self.draw_latency_s()
        if delay > 0:
            await asyncio.sleep(delay)
        f = self.faults
        if f.error_ratio > 0 and self._rng.random() < f.error_ratio:
            raise ServingStatus(f.error_code, f"injected fault: {f.error_code} "
                                f"(error_ratio {f.error_ratio:g})")
