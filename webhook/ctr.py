"""Clicks and impressions per version, from Prometheus, with a deadline: the CTR counter pair.

CTR is one of the Prometheus checks (webhook/promchecks.py): a counter
pair, clicks over impressions per version, judged as a drop
(analyses.promchecks.counter_reading). This module keeps the `ctr:` section
of an analysis working as it always has: its queries are the operator's
PromQL templates in which only `{version}` and `{window}` are substituted,
with values from the configuration (never from a payload); plain string
replacement, not `str.format` (PromQL uses braces). Any failure (Prometheus
down, slow, an empty result, clicks included) gives None: the window then
has no CTR and the check's `on_missing` decides.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from analyses.window import CtrCounts

from .config import CtrConfig, TargetConfig
from .promchecks import NoData, PromClient, scalar, window_duration
from .redact import exception_text

log = logging.getLogger(__name__)

__all__ = ["CtrSource", "render", "window_duration"]


def render(template: str, version: str, window_s: float) -> str:
    """The query for one version and window length (seconds)."""
    return template.replace("{version}", version).replace("{window}", window_duration(window_s))


class CtrSource:
    """Fetches CtrCounts for one analysis."""

    def __init__(self, config: CtrConfig, stable: TargetConfig, canary: TargetConfig) -> None:
        self.config = config
        self.versions = {
            "stable": config.versions.stable or stable.version_name(),
            "canary": config.versions.canary or canary.version_name(),
        }
        self._prom = PromClient(config.prometheus, config.timeout_s)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ctr")

    def _scalar(self, query: str) -> float | None:
        try:
            return scalar(self._prom.instant(query))
        except NoData:
            return None

    def fetch(self, window_s: float) -> CtrCounts | None:
        """Counts over the last `window_s` seconds, or None within `timeout_s` seconds."""
        jobs = {}
        for version, name in self.versions.items():
            for kind in ("clicks", "impressions"):
                q = render(getattr(self.config, kind), name, window_s)
                jobs[f"{version}_{kind}"] = self._pool.submit(self._scalar, q)
        values: dict[str, float] = {}
        try:
            for key, fut in jobs.items():
                v = fut.result(timeout=self.config.timeout_s + 0.5)
                if v is None:
                    log.info("CTR query for %s returned no data", key)
                    return None
                values[key] = v
        except FutureTimeout:
            log.warning("Prometheus %s did not answer within %.1f s", self._prom.url, self.config.timeout_s)
            return None
        except Exception as exc:  # down, HTTP error, bad PromQL: no CTR for this window
            # The URL without credentials or query; the error (Prometheus' body) cut and scrubbed.
            log.warning("CTR query to %s failed: %s", self._prom.url, exception_text(exc, self._prom.secrets))
            return None
        return CtrCounts(**values)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
