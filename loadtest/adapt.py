"""Load that adapts to what the model servers answer on time: AIMD on a run's rate.

A fixed rate is only honest while the servers keep up. Past that point the
extra requests queue (in flight at the concurrency cap, answers later and
later, deadlines missed) or are shed unanswered (CANCELLED), and what the
run measures is Shadowgate's own pressure, not the versions. So each run
has one `RateController` over all its senders (load generators of both
versions and the shadow prober): when any of them sees its server back up,
the run's load factor is cut multiplicatively, for both versions at once,
so the comparison stays like for like; while the servers answer on time it
grows back additively, slowly (AIMD, as TCP shares a link). Runs sharing a
server each back off on their own and together settle near what it serves.

Signals, per tick, from each source's cumulative `progress()` counters:
- `own`: Shadowgate's own failures (cancelled, shed unanswered, a deadline
  noticed late; see loadtest.errors), and
- `timeouts`: DEADLINE_EXCEEDED of requests that left on time, and
- `late`: sends that had to wait because the concurrency cap was reached,
  or a backlog still waiting at the tick.
A tick is "backed up" when these are more than `bad_ratio` of the requests
done in it (and at least one). After a cut, `hold_s` passes (requests sent
before the cut still finish) before the next cut or raise.

Units: seconds; the factor multiplies every configured rate (0 < factor <= 1).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

_KEYS = ("done", "bad")


@dataclass
class Source:
    """One sender the controller watches: `progress()` gives cumulative counters.

    key: what its signals are reported under: the model server it sends to,
        or the version it measures (webhook.measure uses "stable" and
        "canary", so stable's server backing up can be told from the canary's).
    kind: "load" (a loadtest.load.LoadGenerator) or "probe" (a loadtest.shadow.ShadowProber).
    """

    key: str
    progress: Callable[[], dict]
    kind: str = "load"
    last: dict = field(default_factory=lambda: dict.fromkeys(_KEYS, 0))


def _counts(kind: str, p: dict) -> tuple[int, int, int]:
    """(done, bad, backlog) so far from one source's progress counters."""
    if kind == "probe":
        return int(p.get("requests", 0)), int(p.get("own", 0)) + int(p.get("timeouts", 0)), 0
    done = int(p.get("ok", 0)) + int(p.get("errors", 0)) + int(p.get("own", 0))
    bad = int(p.get("own", 0)) + int(p.get("timeouts", 0)) + int(p.get("late", 0))
    return done, bad, int(p.get("backlog", 0))


@dataclass
class Tick:
    """What one tick saw, per key: requests done, bad ones, backlog waiting."""

    done: dict[str, int] = field(default_factory=dict)
    bad: dict[str, int] = field(default_factory=dict)
    backlog: dict[str, int] = field(default_factory=dict)


class RateController:
    """AIMD on one run's load factor, from what its servers answer on time.

    decrease: the factor is multiplied by this on a backed-up tick (0..1).
    increase: added to the factor on a tick with no sign of backing up.
    min_factor: the factor never goes below this (the run keeps measuring).
    bad_ratio: share of a tick's requests that were own failures, timeouts
        or late sends above which the servers are backing up.
    hold_s: after a cut, seconds with neither cut nor raise (requests sent
        before it finish first); use about the request deadline.
    tick_s: seconds between looks in `run`.
    apply: called with the new factor whenever it changes.
    clock: time source (seconds), for tests.
    """

    def __init__(self, *, apply: Callable[[float], Any] | None = None, decrease: float = 0.5,
                 increase: float = 0.05, min_factor: float = 0.05, bad_ratio: float = 0.05,
                 hold_s: float = 2.0, tick_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0.0 < decrease < 1.0:
            raise ValueError(f"decrease: must be within (0, 1), got {decrease!r}")
        if not (0.0 < increase <= 1.0):
            raise ValueError(f"increase: must be within (0, 1], got {increase!r}")
        if not 0.0 < min_factor <= 1.0:
            raise ValueError(f"min_factor: must be within (0, 1], got {min_factor!r}")
        if not 0.0 <= bad_ratio < 1.0:
            raise ValueError(f"bad_ratio: must be within [0, 1), got {bad_ratio!r}")
        if not (math.isfinite(tick_s) and tick_s > 0):
            raise ValueError(f"tick_s: must be > 0 seconds, got {tick_s!r}")
        self.apply = apply
        self.decrease, self.increase = float(decrease), float(increase)
        self.min_factor, self.bad_ratio = float(min_factor), float(bad_ratio)
        self.hold_s, self.tick_s = max(0.0, float(hold_s)), float(tick_s)
        self.clock = clock
        self.factor = 1.0
        self.sources: list[Source] = []
        self.cuts = 0
        self.last_cut_at: float | None = None
        self.backed_up: dict[str, bool] = {}  # key -> backing up at the last tick
        self.reason: str | None = None  # why the last cut
        self.cut_keys: list[str] = []  # the keys backing up at the last cut
        self._hold_until = -math.inf
        self._window: dict[str, dict[str, int]] = {}  # key -> done, bad, backed-up ticks since take_window

    def watch(self, key: str, progress: Callable[[], dict], kind: str = "load") -> None:
        """Add a sender under `key` (an address or a version); its counters count from now on."""
        src = Source(key, progress, kind)
        done, bad, _ = _counts(kind, progress())
        src.last = {"done": done, "bad": bad}
        self.sources.append(src)
        self.backed_up.setdefault(key, False)

    def observe(self) -> Tick:
        """Read every source's counters since the last look."""
        tick = Tick()
        for src in self.sources:
            done, bad, backlog = _counts(src.kind, src.progress())
            a = src.key
            tick.done[a] = tick.done.get(a, 0) + done - src.last["done"]
            tick.bad[a] = tick.bad.get(a, 0) + bad - src.last["bad"]
            tick.backlog[a] = tick.backlog.get(a, 0) + backlog
            src.last = {"done": done, "bad": bad}
        return tick

    def step(self, tick: Tick | None = None) -> float:
        """One look: cut on a backed-up tick, raise on a clean one; returns the factor."""
        tick = self.observe() if tick is None else tick
        now = self.clock()
        backing: list[str] = []
        for a in set(tick.done) | set(tick.backlog):
            done, bad, backlog = tick.done.get(a, 0), tick.bad.get(a, 0), tick.backlog.get(a, 0)
            up = backlog > 0 or (bad > 0 and bad > self.bad_ratio * max(done, 1))
            self.backed_up[a] = up
            w = self._window.setdefault(a, {"done": 0, "bad": 0, "ticks": 0})
            w["done"] += done
            w["bad"] += bad
            w["ticks"] += int(up)
            if up:
                backing.append(f"{a}: {bad} of {done} late, failed by Shadowgate or timed out"
                               + (f", {backlog} waiting" if backlog else ""))
        old = self.factor
        if now < self._hold_until:
            return self.factor
        if backing:
            self.factor = max(self.min_factor, self.factor * self.decrease)
            self.cuts += 1
            self.last_cut_at = now
            self.reason = "; ".join(sorted(backing))
            self.cut_keys = sorted(k for k, up in self.backed_up.items() if up)
            self._hold_until = now + self.hold_s
        elif any(tick.done.values()) and self.factor < 1.0:
            self.factor = min(1.0, self.factor + self.increase)
        if self.factor != old and self.apply is not None:
            self.apply(self.factor)
        return self.factor

    def take_window(self) -> dict[str, dict[str, int]]:
        """Per key since the last call (a window's worth), then start again: requests done,
        bad ones (own failures, timeouts, late sends) and backed-up ticks."""
        out, self._window = self._window, {}
        return out

    def backing_up(self, within_s: float | None = None) -> bool:
        """True when the last cut is recent: within `within_s` seconds (default hold_s + 2 ticks)."""
        if self.last_cut_at is None:
            return False
        within = self.hold_s + 2 * self.tick_s if within_s is None else within_s
        return self.clock() - self.last_cut_at <= within

    def state(self) -> dict:
        """JSON-ready: factor, cuts, backing_up, backed_up per key at the last tick, reason of the last cut."""
        return {"factor": self.factor, "cuts": self.cuts, "backing_up": self.backing_up(),
                "backed_up": dict(self.backed_up), "cut_keys": list(self.cut_keys), "reason": self.reason}

    async def run(self, stop: asyncio.Event) -> None:
        """Look every tick_s until `stop` is set."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.tick_s)
                return
            except asyncio.TimeoutError:
                pass
            self.step()
