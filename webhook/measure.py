"""The one place where sessions meet loadtest: load, shadow probes, live checks.

`LiveMeasurement` runs, for one run of one analysis, on the session loop:

- open-loop load (loadtest.load.LoadGenerator) on the canary, and on stable
  too when `load.targets` is "both" (so latency is compared like for like),
  with prebuilt requests from the golden inputs (loadtest.wire);
- shadow probes (loadtest.shadow.ShadowProber): golden inputs sent to both
  versions at the same moment, predictions kept for accuracy and drift;
- the live checks hooks need: is the canary loaded with stable's signature
  (confirm-rollout), and the whole golden set on both (pre-rollout).

Addresses come from the analysis configuration only.
"""

from __future__ import annotations

import asyncio
import logging
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
        rate = load.schedule[0].rate if load.schedule else load.rate
        versions = ("stable", "canary") if load.targets == "both" else ("canary",)
        for i, version in enumerate(versions):
            t: TargetConfig = getattr(self.config, version)
            target = Target(address=t.address, model=t.model, protocol=_WIRE_PROTOCOL[t.protocol],
                            version=t.version, label=t.label, signature=t.signature)
            payloads = build_payloads(target, self.analysis.golden_inputs, self.config.probe.input_name)
            sender = make_sender(target, payloads, timeout_s=load.timeout_s, concurrency=load.concurrency)
            self._senders.append(sender)
            # Interleave the two timetables so the versions do not get bursts at the same instants.
            gen = LoadGenerator(sender, rate=rate, concurrency=load.concurrency, warmup_s=load.warmup_s,
                                timeout_s=load.timeout_s, sample_size=8192, phase=i / len(versions))
            self._load[version] = gen
            self._tasks.append(asyncio.get_running_loop().create_task(gen.run(stop)))

    async def _walk_schedule(self) -> None:
        """Step the load through `load.schedule`; the last step's rate holds."""
        for step in self.config.load.schedule:
            if self._rate_overridden:
                return
            for gen in self._load.values():
                gen.set_rate(step.rate)
            await asyncio.sleep(step.duration_s)

    async def start(self) -> None:
        """Begin load and probes (returns at once; they run until stop())."""
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if self.config.load.rate > 0 or self.config.load.schedule:
            self._start_load(self._stop)
        if self.config.load.schedule:
            self._tasks.append(loop.create_task(self._walk_schedule()))
        prober = self._ensure_prober()
        self._tasks.append(loop.create_task(prober.run(self._stop)))

    async def stop(self) -> None:
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
        """Requests per second for each loaded version from now on (hook metadata, already capped)."""
        self._rate_overridden = True
        for gen in self._load.values():
            gen.set_rate(rate)

    def pending_probes(self) -> int:
        """Probe pairs in the open window."""
        if self._prober is None:
            return 0
        return self._prober.pending()

    def take_window(self) -> Window:
        """The open window's load and probe results (no CTR); a new window starts."""
        from loadtest.load import to_version_traffic

        def traffic(version: str) -> VersionTraffic:
            if version not in self._load:
                return VersionTraffic()
            t = to_version_traffic(self._load[version].take_window())
            t.deadline_s = self.config.load.timeout_s  # failed requests count as latency at the deadline
            return t

        probes = self._prober.take_window().to_probe_pairs() if self._prober is not None else ProbePairs()
        return Window(stable=traffic("stable"), canary=traffic("canary"), probes=probes)

    async def golden_check(self) -> Window:
        """The whole golden set on both versions, before any load: a window of probes only.

        The session runs it before the load starts, so its burst never lands in
        the latency evidence; failed probes count as errors of their version
        (analyses.gate counts probes in the error checks).
        """
        stats = await self._ensure_prober().probe_all(concurrency=16)
        return Window(probes=stats.to_probe_pairs(), golden=True)

    async def check_canary(self) -> tuple[bool, str, str | None]:
        """(ok, reason, culprit): the canary has an AVAILABLE version and stable's signature.

        culprit is "canary" or "stable" (which one is at fault), None when ok.
        """
        from loadtest.errors import ServingError

        cfg = self.config
        stable = _client(cfg.stable, cfg.stable.timeout_s)
        canary = _client(cfg.canary, cfg.canary.timeout_s)
        try:
            try:
                states = await canary.status()
            except ServingError as exc:
                return False, f"{_describe('canary', cfg.canary)} is not ready: {exc}", "canary"
            if cfg.canary.version is not None:
                states = [s for s in states if s["version"] == cfg.canary.version]
            available = [s["version"] for s in states if s["state"] == "AVAILABLE"]
            if not available:
                seen = ", ".join(f"{s['version']}={s['state']}" for s in states) or "none"
                return (False, f"{_describe('canary', cfg.canary)} has no AVAILABLE version (states: {seen})",
                        "canary")
            try:
                c_meta = await canary.metadata()
            except ServingError as exc:
                return False, f"{_describe('canary', cfg.canary)}: metadata failed: {exc}", "canary"
            try:
                s_meta = await stable.metadata()
            except ServingError as exc:
                return (False, f"{_describe('stable', cfg.stable)} did not answer, signatures cannot be "
                              f"compared: {exc}", "stable")
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
