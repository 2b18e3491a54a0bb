"""Clicks and impressions per version, from Prometheus, with a deadline.

The queries are the operator's PromQL templates; only `{version}` and
`{window}` are substituted, with values from the configuration (never from a
payload). Plain string replacement, not `str.format`: PromQL uses braces.
Any failure (Prometheus down, slow, an empty result) gives None: the window
then has no CTR and the judge reports no data for that check.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from analyses.window import CtrCounts

from .config import CtrConfig, TargetConfig

log = logging.getLogger(__name__)


def window_duration(seconds: float) -> str:
    """A PromQL range for a window length in seconds, at least 1s (e.g. `30s`)."""
    return f"{max(1, int(round(seconds)))}s"


def render(template: str, version: str, window_s: float) -> str:
    """The query for one version and window length (seconds)."""
    return template.replace("{version}", version).replace("{window}", window_duration(window_s))


class CtrSource:
    """Fetches CtrCounts for one analysis."""

    def __init__(self, config: CtrConfig, stable: TargetConfig, canary: TargetConfig) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.config = config
        self.versions = {
            "stable": config.versions.stable or stable.version_name(),
            "canary": config.versions.canary or canary.version_name(),
        }
        # No retries: the deadline is the whole budget, and the next window asks again.
        self._prom = PrometheusConnect(url=config.prometheus, disable_ssl=False, retry=Retry(total=0),
                                       timeout=config.timeout_s)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ctr")

    def _scalar(self, query: str) -> float | None:
        result = self._prom.custom_query(query, timeout=self.config.timeout_s)
        if not result:
            return None
        total = 0.0
        for series in result:  # a vector; sum it so `by (...)` queries still work
            value = float(series["value"][1])
            if not math.isfinite(value):
                return None
            total += value
        return total

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
            log.warning("Prometheus %s did not answer within %.1f s", self.config.prometheus, self.config.timeout_s)
            return None
        except Exception as exc:  # down, HTTP error, bad PromQL: no CTR for this window
            log.warning("CTR query to %s failed: %s", self.config.prometheus, exc)
            return None
        return CtrCounts(**values)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
