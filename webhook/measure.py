"""The one place where sessions meet loadtest: load, shadow probes, live checks.

`LiveMeasurement` runs, for one run of one analysis, on the session loop:

- open-loop load (loadtest.load.LoadGenerator) on the canary, and on stable
  too when `load.targets` is "both" (so latency is compared like for like),
  with prebuilt requests from the golden inputs (loadtest.wire);
- shadow probes (loadtest.shadow.ShadowProber): golden inputs sent to both
  versions at the same moment, predictions kept for accuracy and drift;
- the live checks hooks need: is the canary loaded with stable's signature
  (confirm-rollout), and the whole golden set on both (pre-rollout).

Nothing of Shadowgate's is blamed on a version:
- every run (and every canary check) has connections of its own: no gRPC
  subchannel, reconnect backoff or HTTP pool is shared with another run, so
  a canary that died at this address before is not the new one's failure
  (loadtest.clients.ISOLATED_CHANNEL_OPTIONS);
- a request Shadowgate cancelled, one a server shed unanswered, one its loop
  held past the deadline or noticed late is no error of its version (counted
  as late; loadtest.errors); a window with more of them than the gate's
  max_late_ratio is marked unmeasured (Shadowgate's overload), and so is a
  window in which stable's server backed up under Shadowgate's load;
- the load adapts (loadtest.adapt.RateController): when a server of either
  version backs up, both versions' load and the probes are cut together,
  and grow back slowly while the servers answer on time.

Addresses come from the analysis configuration only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from typing import Any

from analyses.window import ProbePairs, VersionTraffic, Window

from .config import Analysis, TargetConfig
from .redact import redact_url

log = logging.getLogger(__name__)

_WIRE_PROTOCOL = {"tfserving-grpc": "grpc", "tfserving-rest": "rest"}


def _model_ref(t: TargetConfig):
    from loadtest.clients import ModelRef

    return ModelRef(name=t.model, version=t.version, label=t.label, signature=t.signature)


def _client(t: TargetConfig, timeout_s: float):
    from loadtest.clients import make_client

    return make_client(t.protocol, t.address, _model_ref(t), timeout_s=timeout_s, asynchronous=True)


async def _fresh(client, t: TargetConfig, method: str, attempts: int = 3):
    """(result, None) of `client.<method>()`, or (None, (ServingError, late)) where late is True
    when the failure was noticed well after the deadline (Shadowgate's loop was behind).

    A call cancelled or shed unanswered is tried again on a new client (a new connection), within
    the target's deadline in all; other exceptions (a bug, an unusable address) propagate."""
    import time

    from loadtest.errors import ServingError, late_slack_s, own_failure

    deadline = time.monotonic() + t.timeout_s
    extra = []
    try:
        for attempt in range(attempts):
            left = max(deadline - time.monotonic(), 0.05)
            t0 = time.monotonic()
            try:
                return await getattr(client, method)(timeout_s=left), None
            except ServingError as exc:
                late = time.monotonic() - t0 > left + late_slack_s(t.timeout_s)
                if not own_failure(exc.label) or attempt == attempts - 1 or deadline - time.monotonic() < 0.1:
                    return None, (exc, late)
            await asyncio.sleep(0.05)
            client = _client(t, t.timeout_s)
            extra.append(client)
        raise AssertionError("unreachable")
    finally:
        for c in extra:
            try:
                await c.close()
            except Exception:
                pass


def _ours(failure, address: str, other) -> str | None:
    """Why a failed check call is Shadowgate's, not the server's (None: it is the server's).

    failure, other: (ServingError, late) of this call and of the other version's (None: it
    answered). Shadowgate's: cancelled or shed unanswered every time it was tried; noticed well
    after its deadline (Shadowgate's loop was behind); or timed out while Shadowgate's own load
    backs that server up: a live run of this process cut its load there, or the other version's
    call timed out (or was shed) too, so it is the servers' load, not one version.
    """
    from loadtest.errors import own_failure

    exc, late = failure
    if own_failure(exc.label):
        return f"the call was cancelled or shed unanswered each time it was tried ({exc})"
    if exc.code == "DEADLINE_EXCEEDED":
        if late:
            return f"Shadowgate's own loop was late to hear the answer ({exc})"
        why = servers_backing_up().get(address)
        if why:
            return f"the server is backed up under Shadowgate's own load ({why}); {exc}"
        if other is not None and (own_failure(other[0].label) or other[0].code == "DEADLINE_EXCEEDED"):
            return (f"neither version answered in time, as when Shadowgate's load backs the servers up "
                    f"({exc}; the other: {other[0]})")
    return None


def _describe(role: str, t: TargetConfig) -> str:
    return f"{role} {t.model}:{t.version_name()} at {redact_url(t.address)}"


def _signature_diff(stable: dict[str, Any] | None, canary: dict[str, Any] | None) -> str | None:
    """None when the two signature defs match in names, dtypes and shapes; else what differs."""
    if canary is None:
        return "canary has no such signature"
    if stable is None:
        return "stable has no such signature"
    problems = []
    for part in ("inputs", "outputs"):
        s, c = stable.get(part, {}), canary.get(part, {})
        for k in sorted(set(s) | set(c)):
            if k not in c:
                problems.append(f"{part[:-1]} {k!r} missing on canary")
            elif k not in s:
                problems.append(f"{part[:-1]} {k!r} only on canary")
            elif s[k] != c[k]:
                problems.append(f"{part[:-1]} {k!r}: stable {s[k]['dtype']} {s[k]['shape']}, "
                                f"canary {c[k]['dtype']} {c[k]['shape']}")
    return "; ".join(problems) if problems else None


# Live measurements of this process, for servers_backing_up (read from any thread).
_LIVE: "weakref.WeakSet[LiveMeasurement]" = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def servers_backing_up() -> dict[str, str]:
    """Model server address -> why, for each server that a live run of this process is backing up
    now (its rate controller cut the load recently because that server's answers came late, timed
    out or were shed). For admission (no new run there while it backs up) and for the canary check
    (a check timing out there is Shadowgate's load, not the canary). Safe from any thread."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    out: dict[str, str] = {}
    for m in live:
        c = m.controller
        if not c.backing_up():
            continue
        for version in c.cut_keys:
            t = getattr(m.config, version, None)
            if t is not None:
                out.setdefault(t.address, f"run of analysis {m.analysis.name} cut its load to "
                                          f"{100 * c.factor:.0f} %: {c.reason}")
    return out


# Seconds between looks of the rate controller.
RATE_TICK_S = 1.0
# Shadowgate's own failures, as a share of a version's sends, that make a window unmeasured
# when the gate's max_late_ratio is smaller (a single shed request is no overload).
_MIN_OWN_RATIO = 0.01


class LiveMeasurement:
    """Load and probes of one run; every method runs on the session loop."""

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.config = analysis.config
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._load: dict[str, Any] = {}  # version -> LoadGenerator
        self._senders: list[Any] = []
        self._clients: list[Any] = []
        self._prober: Any = None
        self._rate_overridden = False
        load = self.config.load
        self._ceiling = load.schedule[0].rate if load.schedule else load.rate  # load req/s before adapting
        self.controller = self._make_controller()

    def _make_controller(self):
        from loadtest.adapt import RateController

        deadline = max(self.config.load.timeout_s, self.config.probe.timeout_s)
        return RateController(apply=self._apply_factor, hold_s=deadline + RATE_TICK_S, tick_s=RATE_TICK_S)

    # ------------------------------------------------------------ set-up

    def _ensure_prober(self):
        if self._prober is None:
            from loadtest.shadow import ShadowProber

            p = self.config.probe
            stable = _client(self.config.stable, p.timeout_s)
            canary = _client(self.config.canary, p.timeout_s)
            self._clients += [stable, canary]
            self._prober = ShadowProber(
                stable, canary, self.analysis.golden_inputs, self.analysis.golden_labels,
                input_name=p.input_name, scores_key=p.scores_key, rate=p.rate, timeout_s=p.timeout_s,
                max_pairs=p.max_pairs)
        return self._prober

    def _start_load(self, stop: asyncio.Event) -> None:
        from loadtest.load import LoadGenerator
        from loadtest.wire import Target, build_payloads, make_sender

        load = self.config.load
        rate = self._ceiling * self.controller.factor
        versions = ("stable", "canary") if load.targets == "both" else ("canary",)
        for i, version in enumerate(versions):
            t: TargetConfig = getattr(self.config, version)
            target = Target(address=t.address, model=t.model, protocol=_WIRE_PROTOCOL[t.protocol],
                            version=t.version, label=t.label, signature=t.signature)
            payloads = build_payloads(target, self.analysis.golden_inputs, self.config.probe.input_name)
            # load.connections: gRPC only (REST's pool follows the concurrency cap)
            sender = make_sender(target, payloads, timeout_s=load.timeout_s, concurrency=load.concurrency,
                                 connections=load.connections if target.protocol == "grpc" else None)
            self._senders.append(sender)
            # Interleave the two timetables so the versions do not get bursts at the same instants.
            gen = LoadGenerator(sender, rate=rate, concurrency=load.concurrency, warmup_s=load.warmup_s,
                                timeout_s=load.timeout_s, sample_size=8192, phase=i / len(versions))
            self._load[version] = gen
            self.controller.watch(version, gen.progress)
            self._tasks.append(asyncio.get_running_loop().create_task(gen.run(stop)))

    async def _walk_schedule(self) -> None:
        """Step the load through `load.schedule`; the last step's rate holds."""
        for step in self.config.load.schedule:
            if self._rate_overridden:
                return
            self._ceiling = step.rate
            self._apply_factor(self.controller.factor)
            await asyncio.sleep(step.duration_s)

    def _apply_factor(self, factor: float) -> None:
        """The rate controller's factor on every sender of the run: both versions' load and the probes."""
        for gen in self._load.values():
            gen.set_rate(self._ceiling * factor)
        if self._prober is not None:
            self._prober.set_rate(self.config.probe.rate * factor)

    async def start(self) -> None:
        """Begin load and probes (returns at once; they run until stop())."""
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if self.config.load.rate > 0 or self.config.load.schedule:
            self._start_load(self._stop)
        if self.config.load.schedule:
            self._tasks.append(loop.create_task(self._walk_schedule()))
        prober = self._ensure_prober()
        prober.set_rate(self.config.probe.rate * self.controller.factor)
        self.controller.watch("stable", lambda: prober.progress()["stable"], kind="probe")
        self.controller.watch("canary", lambda: prober.progress()["canary"], kind="probe")
        self._tasks.append(loop.create_task(prober.run(self._stop)))
        self._tasks.append(loop.create_task(self.controller.run(self._stop)))
        with _LIVE_LOCK:
            _LIVE.add(self)

    async def stop(self) -> None:
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self._stop is not None:
            self._stop.set()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=self.config.load.timeout_s + 2.0)
            for t in pending:
                t.cancel()
        for s in self._senders:
            try:
                await s.close()
            except Exception:
                pass
        for c in self._clients:
            try:
                await c.close()
            except Exception:
                pass
        self._tasks, self._senders, self._clients = [], [], []

    # ------------------------------------------------------------ what sessions read

    def set_rate(self, rate: float) -> None:
        """Requests per second for each loaded version from now on (hook metadata, already capped).

        The most the run sends: the rate controller may send less while the servers back up.
        """
        self._rate_overridden = True
        self._ceiling = float(rate)
        for gen in self._load.values():
            gen.set_rate(self._ceiling * self.controller.factor)

    def rates(self) -> dict[str, float]:
        """Requests/s this run sends each model server address now (load and probes, as adapted)."""
        cfg, f = self.config, self.controller.factor
        out: dict[str, float] = {}
        for version in ("stable", "canary"):
            address = getattr(cfg, version).address
            loaded = version in self._load or (not self._load and (cfg.load.targets == "both" or version == "canary"))
            out[address] = out.get(address, 0.0) + ((self._ceiling if loaded else 0.0) + cfg.probe.rate) * f
        return out

    def load_state(self) -> dict[str, Any]:
        """For admission and status: the rate controller's factor, whether the servers of this run
        are backing up under its load (recent cut), why, and the req/s per address now."""
        return {**self.controller.state(), "rates": self.rates()}

    def pending_probes(self) -> int:
        """Probe pairs in the open window."""
        if self._prober is None:
            return 0
        return self._prober.pending()

    def take_window(self) -> Window:
        """The open window's load and probe results (no CTR); a new window starts.

        `unmeasured` says why when the window measured Shadowgate rather than
        the versions (the session may add its own loop-lag reason).
        """
        from loadtest.load import to_version_traffic

        stats = {v: g.take_window() for v, g in self._load.items()}

        def traffic(version: str) -> VersionTraffic:
            if version not in stats:
                return VersionTraffic()
            t = to_version_traffic(stats[version])
            t.deadline_s = self.config.load.timeout_s  # failed requests count as latency at the deadline
            return t

        pstats = self._prober.take_window() if self._prober is not None else None
        probes = pstats.to_probe_pairs() if pstats is not None else ProbePairs()
        window = Window(stable=traffic("stable"), canary=traffic("canary"), probes=probes)
        window.unmeasured = self._unmeasured(stats, pstats, self.controller.take_window())
        return window

    def _unmeasured(self, stats: dict[str, Any], pstats: Any, control: dict[str, dict[str, int]]) -> str | None:
        """Why a window measured Shadowgate, not the versions (None: it measured them).

        - Shadowgate's own failures (cancelled, shed unanswered by a server it
          overloaded, late by its loop) above the gate's max_late_ratio of a
          version's sends or of the probe pairs;
        - stable's server backed up under the run's load in the window (the
          rate controller saw it, and more than max_late_ratio of stable's
          requests were late, timed out or shed): the versions were not
          compared at a load the servers carry. The canary alone backing up is
          evidence against it and leaves the window measured.
        """
        limit = max(float(getattr(self.analysis.judge_config, "max_late_ratio", 0.02)), _MIN_OWN_RATIO)
        parts = []
        for version, st in stats.items():
            if st.own and st.own > limit * max(st.intended, 1):
                codes = ", ".join(f"{k} {n}" for k, n in sorted(st.own_by_code.items()))
                parts.append(f"{version} {st.own} of {st.intended} sends ({codes})")
        if pstats is not None and pstats.unmeasured and pstats.unmeasured > limit * max(pstats.sent, 1):
            parts.append(f"probes {pstats.unmeasured} of {pstats.sent} pairs")
        reasons = []
        if parts:
            reasons.append("Shadowgate's own failures (cancelled, shed unanswered by an overloaded model server, "
                           "or late on its loop), not the versions': " + "; ".join(parts))
        st = control.get("stable", {})
        if st.get("ticks") and st.get("bad", 0) > limit * max(st.get("done", 0), 1):
            reasons.append(f"stable's model server backed up under Shadowgate's load "
                           f"({self.controller.reason or 'late, timed out or shed requests'}); "
                           f"load cut to {100 * self.controller.factor:.0f} % of its rate")
        return " | ".join(reasons) if reasons else None

    async def golden_check(self) -> Window:
        """The whole golden set on both versions, before any load: a window of probes only.

        The session runs it before the load starts, so its burst never lands in
        the latency evidence; failed probes count as errors of their version
        (analyses.gate counts probes in the error checks). Pairs with a request
        Shadowgate cancelled or a server shed are not kept; when those and
        stable's own timeouts are more than the gate's max_late_ratio of the
        pairs, stable's server was backed up (by this burst and the other runs'
        load): the window says so in `unmeasured` and its errors are no evidence.
        """
        stats = await self._ensure_prober().probe_all(concurrency=16)
        window = Window(probes=stats.to_probe_pairs(), golden=True)
        limit = max(float(getattr(self.analysis.judge_config, "max_late_ratio", 0.02)), _MIN_OWN_RATIO)
        timeouts = int(stats.stable_errors_by_code.get("DEADLINE_EXCEEDED", 0))
        if stats.sent and timeouts + stats.unmeasured > limit * stats.sent:
            window.unmeasured = (f"golden-set check: stable's model server backed up ({timeouts} of {stats.sent} "
                                 f"stable requests timed out, {stats.unmeasured} pairs cancelled or shed "
                                 "unanswered): Shadowgate's load, not the versions'")
        return window

    async def check_canary(self) -> tuple[bool, str, str | None]:
        """(ok, reason, culprit): the canary has an AVAILABLE version and stable's signature.

        culprit is "canary" or "stable" (which one is at fault), "shadowgate"
        when the check could not be made for Shadowgate's own reasons, None
        when ok. The check has clients of its own (fresh connections: nothing
        learnt by an earlier run at this address counts); a call cancelled or
        shed unanswered is tried again on a new connection within the target's
        deadline. A call that failed for Shadowgate's reasons is no fault of
        the server called (see _ours): still cancelled or shed after its
        retries, noticed late (Shadowgate's loop was behind), or timed out
        while Shadowgate's own load backs that server up (a live run of this
        process cut its load there, or the other version's call timed out too).
        The canary's status and stable's signature are asked at once, then
        the canary's signature: two deadlines at most, not three.
        """
        cfg = self.config
        stable = _client(cfg.stable, cfg.stable.timeout_s)
        canary = _client(cfg.canary, cfg.canary.timeout_s)
        try:
            (states, c_err), (s_meta, s_err) = await asyncio.gather(
                _fresh(canary, cfg.canary, "status"), _fresh(stable, cfg.stable, "metadata"))
            if c_err is not None:
                ours = _ours(c_err, cfg.canary.address, s_err)
                if ours:
                    return False, f"{_describe('canary', cfg.canary)} not checked: {ours}", "shadowgate"
                return False, f"{_describe('canary', cfg.canary)} is not ready: {c_err[0]}", "canary"
            if cfg.canary.version is not None:
                states = [s for s in states if s["version"] == cfg.canary.version]
            available = [s["version"] for s in states if s["state"] == "AVAILABLE"]
            if not available:
                seen = ", ".join(f"{s['version']}={s['state']}" for s in states) or "none"
                return (False, f"{_describe('canary', cfg.canary)} has no AVAILABLE version (states: {seen})",
                        "canary")
            c_meta, cm_err = await _fresh(canary, cfg.canary, "metadata")
            if cm_err is not None:
                ours = _ours(cm_err, cfg.canary.address, s_err)
                if ours:
                    return False, f"{_describe('canary', cfg.canary)} not checked: {ours}", "shadowgate"
                return False, f"{_describe('canary', cfg.canary)}: metadata failed: {cm_err[0]}", "canary"
            if s_err is not None:
                ours = _ours(s_err, cfg.stable.address, None)
                if ours:
                    return False, f"{_describe('stable', cfg.stable)} not checked: {ours}", "shadowgate"
                return (False, f"{_describe('stable', cfg.stable)} did not answer, signatures cannot be "
                              f"compared: {s_err[0]}", "stable")
            c_sig = c_meta["signatures"].get(cfg.canary.signature)
            s_sig = s_meta["signatures"].get(cfg.stable.signature)
            diff = _signature_diff(s_sig, c_sig)
            if diff is not None:
                return False, f"signature {cfg.canary.signature!r} differs from stable: {diff}", "canary"
            if cfg.probe.input_name not in c_sig.get("inputs", {}):
                return (False, f"signature {cfg.canary.signature!r} has no input {cfg.probe.input_name!r}"
                               " (probe.input_name)", "canary")
            version = c_meta.get("model_version") or max(available)
            return (True, f"{_describe('canary', cfg.canary)} is AVAILABLE (version {version}) and signature "
                          f"{cfg.canary.signature!r} matches stable", None)
        finally:
            for c in (stable, canary):
                try:
                    await c.close()
                except Exception:
                    pass
