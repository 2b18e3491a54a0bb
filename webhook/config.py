"""analyses.yaml: the service's configuration, validated once at start-up.

Every address the service connects to (model servers, Prometheus) comes from
this file, never from a webhook payload. A bad file stops start-up with a
`ConfigError` naming the dotted field (`analyses.digits.canary.address`).

Units: seconds (`*_s`), requests per second (`rate`), bytes (`*_bytes`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Identifiers that end up in URLs, SQL parameters and metric labels.
ANALYSIS_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Used when the file sets no `server.auth` / `server.namespaces` (the Helm chart sets these).
TOKEN_ENV = "SHADOWGATE_TOKEN"
NAMESPACES_ENV = "SHADOWGATE_ALLOWED_NAMESPACES"


class ConfigError(Exception):
    """The configuration is invalid; `field` is the dotted path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetConfig(_Strict):
    """One model version to call: stable or canary."""

    protocol: Literal["tfserving-grpc", "tfserving-rest"]
    address: str = Field(min_length=1, description="host:port for gRPC, URL or host:port for REST")
    model: str = Field(min_length=1)
    version: int | None = Field(default=None, ge=0)
    label: str | None = None
    signature: str = "serving_default"
    timeout_s: float = Field(default=2.0, gt=0, le=60)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if any(c.isspace() for c in v):
            raise ValueError("must not contain spaces")
        return v

    @field_validator("label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        if v is not None and not _LABEL_RE.match(v):
            raise ValueError("letters, digits, '_', '.', '-' only")
        return v

    @model_validator(mode="after")
    def _one_of(self) -> "TargetConfig":
        if self.version is not None and self.label is not None:
            raise ValueError("give version or label, not both")
        return self

    def version_name(self) -> str:
        """How this version is named in metrics and CTR queries: its label, number, or 'latest'."""
        if self.label is not None:
            return self.label
        if self.version is not None:
            return str(self.version)
        return "latest"


class DataSetConfig(_Strict):
    """An .npz file: a `path` (relative to the configuration file) or a `url`.

    `url`: https://, s3://, gs:// (s3 and gs through fsspec, with the
    optional extras); http:// only with `allow_http: true`. An http(s) URL
    is fetched by Shadowgate itself: redirects are followed by hand (at most
    5) and every hop, the first included, must be http(s) and resolve to
    public addresses only: no loopback, link-local, private (RFC 1918,
    fc00::/7), unspecified, multicast or reserved address, unless
    `allow_private` is true (any) or a list of networks (CIDR, only those).
    A `path` given as a URL is taken as `url`. `sha256` (hex) pins the
    content. The set is re-read when its source changes, looked at every
    `reload_s` seconds (0: never). See webhook/datasets.py.
    """

    path: str | None = None
    url: str | None = Field(default=None, repr=False)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    inputs_key: str = "inputs"
    labels_key: str = "labels"
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False,
                                            description="fsspec options for an s3:// or gs:// `url`; "
                                                        "`headers` for an http(s) one")
    timeout_s: float = Field(default=30.0, gt=0, le=600, description="deadline of reading a URL")
    reload_s: float = Field(default=60.0, ge=0, description="how often to look for a changed source; 0 never")
    allow_http: bool = Field(default=False, description="accept http:// (plain text) for `url` and its redirects")
    allow_private: bool | list[str] = Field(
        default=False, description="let `url` and its redirects reach loopback, link-local and private "
                                   "addresses: true for any, or a list of networks (CIDR) allowed")

    @field_validator("allow_private")
    @classmethod
    def _networks(cls, v: bool | list[str]) -> bool | list[str]:
        if isinstance(v, list):
            import ipaddress

            out = []
            for item in v:
                try:
                    out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
                except ValueError:
                    raise ValueError(f"{item!r} is not an IP network (CIDR, e.g. 10.0.0.0/8)") from None
            return out
        return v

    @model_validator(mode="before")
    @classmethod
    def _url_in_path(cls, v: Any) -> Any:
        if isinstance(v, dict) and isinstance(v.get("path"), str) and "://" in v["path"] and not v.get("url"):
            v = dict(v)
            v["url"] = v.pop("path")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "DataSetConfig":
        if (self.path is None) == (self.url is None):
            raise ValueError("give path or url (one of them)")
        if self.url is not None and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$", self.url):
            from .redact import redact_url

            raise ValueError(f"url: not a URL: {redact_url(self.url)!r}")
        return self


class ProbeConfig(_Strict):
    """Shadow probes: golden inputs sent to stable and canary at the same moment."""

    rate: float = Field(default=10.0, gt=0, le=10_000, description="probe pairs per second")
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    max_pairs: int = Field(default=20_000, ge=1, description="per window; older pairs are dropped")
    input_name: str = "x"
    scores_key: str = "probabilities"


class LoadStep(_Strict):
    rate: float = Field(ge=0, le=100_000, description="requests per second")
    duration_s: float = Field(gt=0)


class LoadConfig(_Strict):
    """Open-loop load: requests are sent on schedule whether or not earlier ones answered."""

    rate: float = Field(default=40.0, ge=0, le=100_000, description="requests per second (per version with "
                        "targets: both); 40 x the default 30 s window = 1200, twice what a P99 needs")
    max_rate: float = Field(default=200.0, gt=0, le=100_000,
                            description="cap for a rate asked by hook metadata")
    schedule: list[LoadStep] = Field(default_factory=list)
    concurrency: int = Field(default=64, ge=1, le=10_000, description="requests in flight at most")
    connections: int = Field(default=1, ge=1, le=16, description=(
        "gRPC only: HTTP/2 connections the load sender opens to each version, requests spread over them "
        "in turn. A version served by several processes or pods behind one address (a Kubernetes "
        "Service, SO_REUSEPORT) is balanced per connection, not per request: one connection loads one of "
        "them, so open a few per backend (e.g. 4 x their count). REST: unused, its connection pool follows "
        "concurrency. Counted by server.max_connections_per_namespace"))
    warmup_s: float = Field(default=0.0, ge=0)
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    targets: Literal["both", "canary"] = Field(
        default="both", description="load the canary only, or both (latency compared like for like)")

    @model_validator(mode="after")
    def _cap(self) -> "LoadConfig":
        if self.rate > self.max_rate:
            raise ValueError(f"rate {self.rate:g} exceeds max_rate {self.max_rate:g}")
        return self


class CtrVersions(_Strict):
    stable: str | None = None
    canary: str | None = None


class CtrConfig(_Strict):
    """Clicks and impressions per version from Prometheus.

    `clicks` and `impressions` are PromQL templates; only `{version}` (the
    names in `versions`, default: each target's label or version) and
    `{window}` (the window length, e.g. `30s`) are substituted.
    """

    prometheus: str = Field(repr=False)
    clicks: str = Field(min_length=1)
    impressions: str = Field(min_length=1)
    timeout_s: float = Field(default=3.0, gt=0, le=30)
    versions: CtrVersions = Field(default_factory=CtrVersions)

    @field_validator("prometheus")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+(/\S*)?$", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @field_validator("clicks", "impressions")
    @classmethod
    def _placeholder(cls, v: str) -> str:
        if "{version}" not in v:
            raise ValueError("must contain {version} so stable and canary are told apart")
        return v


class PrometheusVersions(_Strict):
    stable: str | None = Field(default=None, min_length=1, max_length=200)
    canary: str | None = Field(default=None, min_length=1, max_length=200)


class PrometheusSelectors(_Strict):
    """PromQL label matchers picking each version's series, substituted for `{selector}`."""

    stable: str = Field(min_length=1, max_length=1000)
    canary: str = Field(min_length=1, max_length=1000)


class PrometheusConfig(_Strict):
    """Where the Prometheus checks (`checks.prometheus`) read production metrics.

    selectors: label matchers of each version's series for sources without
        a version label (TF Serving, DCGM: one process or pod per version),
        e.g. `job="tfserving-canary"` or `pod=~"digits-canary-.*"`; they may
        use {version}, {namespace}, {name}. Presets with a version label
        (Istio, NGINX) bring their own; a check's own `selectors` wins.
    versions: the names substituted for {version} (default: each target's
        label or version number).
    timeout_s: the deadline of one window's fetch (every query at once).
    lag_s: evaluate at the window's end minus this, so the last scrape has
        landed (windows stay back to back).
    step_s: gauges, the step of the range query over the window.
    """

    url: str = Field(repr=False)
    timeout_s: float = Field(default=3.0, gt=0, le=30)
    lag_s: float = Field(default=0.0, ge=0, le=600)
    step_s: float = Field(default=15.0, gt=0, le=3600)
    selectors: PrometheusSelectors | None = None
    versions: PrometheusVersions = Field(default_factory=PrometheusVersions)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+(/\S*)?$", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")


class AnalysisConfig(_Strict):
    """One named analysis: what to compare, with which data, judged how."""

    stable: TargetConfig
    canary: TargetConfig
    golden: DataSetConfig
    reference: DataSetConfig | None = None
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    load: LoadConfig = Field(default_factory=LoadConfig)
    checks: dict[str, Any] = Field(default_factory=dict)
    ctr: CtrConfig | None = None
    prometheus: PrometheusConfig | None = None
    interval_s: float | None = Field(default=None, gt=0, description="overrides server.interval_s")
    min_window_probes: int = Field(default=20, ge=1,
                                   description="probe pairs needed to close a window early on a hook call")
    allow_undecidable: bool = Field(default=False, description="start even when a check can never decide "
                                    "with these rates (the run can then never pass)")
    stage_on_traffic_increase: bool = Field(default=True, description="each confirm-traffic-increase that "
                                            "answers 200 starts a stage: passes are earned again at the new weight")

    @field_validator("golden", "reference", mode="before")
    @classmethod
    def _path_shorthand(cls, v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v


class AuthConfig(_Strict):
    """A shared token, accepted as `Authorization: Bearer <token>` or as the
    password of HTTP basic auth (Flagger cannot set headers, but it sends the
    user info of its webhook URL `http://shadowgate:<token>@host/...`)."""

    token: str | None = Field(default=None, min_length=16)
    token_env: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "AuthConfig":
        if self.token is not None and self.token_env is not None:
            raise ValueError("give token or token_env, not both")
        return self


def check_store(v: str) -> str:
    """`server.store`: a SQLite file path, or a postgresql:// URL with a host and a database.

    Errors never quote the URL's password (webhook.redact)."""
    from .redact import redact_url
    from .store import is_postgres_url

    if not v or not v.strip():
        raise ValueError("must be a SQLite file path or a postgresql:// URL")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", v) and not is_postgres_url(v):
        raise ValueError(f"{redact_url(v)}: only postgresql:// URLs (or a SQLite file path) are supported")
    if not is_postgres_url(v):
        return v
    from urllib.parse import urlsplit

    shown = redact_url(v)
    try:
        u = urlsplit(v)
        port = u.port
    except ValueError:
        raise ValueError(f"{shown}: not a valid URL (the port must be a number from 1 to 65535)") from None
    if not u.hostname:
        raise ValueError(f"{shown}: the URL needs a host (postgresql://user:pass@host:5432/db)")
    if port == 0:
        raise ValueError(f"{shown}: the port must be a number from 1 to 65535")
    if not u.path.strip("/"):
        raise ValueError(f"{shown}: the URL needs a database name (postgresql://user:pass@host:5432/db)")
    return v


STORE_ENV = "SHADOWGATE_STORE"


class ServerConfig(_Strict):
    """The service process: its HTTP front (webhook/front.py), store and retention. Units: seconds, bytes.

    Hooks and capacity: a hook (/flagger/*, /argo/*) never gets 503 for Shadowgate's own capacity:
    `max_hook_queue`, `hook_queue_timeout_s`, answered within `hook_deadline_s` + 0.5 s (webhook/busy.py).
    Isolation, per rollout namespace: `max_sessions_per_namespace` (admitted runs),
    `max_rate_per_namespace` (planned requests/s, the load budget), `max_connections_per_namespace`
    (outbound connections), `max_blocking_hooks_per_namespace` (threads waiting on live checks).
    """

    bind: str = "127.0.0.1:8080"
    threads: int = Field(default=16, ge=1, le=512, description="app threads for hooks and the API; "
                         "slow clients never hold one (the front reads whole requests first)")
    timeout_s: float = Field(default=30.0, gt=0, description="on SIGTERM, requests in flight get this long to finish")
    read_timeout_s: float = Field(default=10.0, gt=0, le=300,
                                  description="a request's head and body must arrive within this of its first "
                                              "byte, else 408 and the connection closes")
    keepalive_s: float = Field(default=75.0, gt=0, le=3600,
                               description="an idle kept-alive connection is closed after this")
    max_connections: int = Field(default=1000, ge=8, le=100_000,
                                 description="open connections; beyond, the one waiting longest for its "
                                             "request is closed")
    max_queue: int = Field(default=64, ge=0, le=100_000,
                           description="requests waiting for a free thread; beyond, 503 at once")
    queue_timeout_s: float = Field(default=1.0, gt=0, le=10,
                                   description="a request that waited this long (from its first byte) for a "
                                               "thread gets 503 (never a hook: see max_hook_queue)")
    max_hook_queue: int = Field(default=1000, ge=0, le=100_000,
                                description="hook calls (/flagger/*, /argo/*) waiting for a thread, in their "
                                            "own queue served first; a hook never gets 503 for Shadowgate's "
                                            "capacity: beyond this, or after hook_queue_timeout(), it gets the "
                                            "busy answer (webhook/busy.py: confirm-* 412, rollback 409, "
                                            "pre-rollout/rollout 200 unless the run already failed, Argo "
                                            "Inconclusive), always within hook_deadline_s + 0.5 s")
    hook_queue_timeout_s: float | None = Field(default=None, gt=0, lt=10,
                                               description="a hook waiting this long (from its first byte) for a "
                                                           "thread gets the busy answer; default 3/4 of "
                                                           "hook_deadline_s (6 s)")
    retention_days: float | None = Field(default=365.0, gt=0,
                                         description="finished runs not updated for this long are deleted "
                                                     "with their windows and timeline; null keeps them")
    compact_after_days: float = Field(default=0.0, ge=0,
                                      description="raw window data (samples) of runs finished this long ago is "
                                                  "replaced by per-window summaries (0: when the run finishes); "
                                                  "verdicts, checks and timeline stay")
    keep_raw_windows: int | None = Field(default=50, ge=1,
                                         description="raw windows a live run keeps (its newest); older ones keep "
                                                     "a summary; null keeps all")
    prune_interval_s: float = Field(default=3600.0, gt=0, description="how often retention runs")
    store: str = Field(default="shadowgate.db", description="SQLite file (relative to the config file; one "
                       "process), or postgresql://user:pass@host:port/db: any number of replicas share it "
                       "(README \"Replicas on PostgreSQL\"); the SHADOWGATE_STORE environment variable overrides it")
    lease_ttl_s: float | None = Field(default=None, ge=0.5, le=300,
                                      description="PostgreSQL store: a run's lease lasts this long unrenewed; a "
                                                  "dead replica's runs resume elsewhere within 1.75x it. Default: "
                                                  "half the shortest analysis interval, 1 to 30 s")
    public_url: str | None = Field(default=None, description="base URL SREs reach the service at "
                                   "(e.g. https://shadowgate.example.com); answers link each run's report")
    interval_s: float = Field(default=30.0, gt=0, description="window length")
    idle_timeout_s: float | None = Field(default=None, gt=0,
                                         description="stop a run's load after no call for this long "
                                                     "(default: 10 intervals, at least 120 s)")
    hook_deadline_s: float = Field(default=8.0, gt=0, lt=10,
                                   description="live checks in a hook answer within this; "
                                               "Flagger and Argo give up at 10 s")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_sessions: int = Field(default=50, ge=1, le=10_000,
                              description="runs admitted at once (each holds its slot until it ends); a new run "
                                          "beyond waits in the admission queue: Flagger's confirm-* hooks answer "
                                          "412 (waits, not counted), Argo gets 200 Inconclusive")
    max_sessions_per_analysis: int = Field(default=10, ge=1, le=10_000,
                                           description="runs of one analysis admitted at once")
    max_sessions_per_namespace: int | None = Field(default=None, ge=1, le=10_000,
                                                   description="runs of one rollout namespace admitted at once; "
                                                               "null: no cap beyond max_sessions (the queue "
                                                               "still admits the namespace with the fewest "
                                                               "admitted runs first)")
    max_target_rate: float = Field(default=1000.0, gt=0,
                                   description="requests/s Shadowgate may plan for one model server (load and "
                                               "probes of every admitted run); a run that would exceed it waits "
                                               "in the queue, a rate change beyond it is not applied")
    max_rate_per_namespace: float | None = Field(default=None, gt=0,
                                                 description="isolation: requests/s (load and probes, over every "
                                                             "model server) the admitted runs of one rollout "
                                                             "namespace may plan; a run beyond waits in the "
                                                             "admission queue (412 / Inconclusive) while other "
                                                             "namespaces are admitted, a metadata.rate beyond is "
                                                             "not applied. null: only max_target_rate")
    max_connections_per_namespace: int | None = Field(default=None, ge=1, le=1_000_000,
                                                      description="isolation: outbound connections to model "
                                                                  "servers the admitted runs of one rollout "
                                                                  "namespace may hold (per run: gRPC 1 per client, "
                                                                  "REST up to its concurrency; webhook.admission."
                                                                  "planned_connections); a run beyond waits in the "
                                                                  "admission queue. null: no cap")
    max_loop_lag_s: float = Field(default=0.25, gt=0,
                                  description="when Shadowgate's own event loop runs this late, no new run is "
                                              "admitted (admitted runs keep their slots)")
    admission_queue_ttl_s: float = Field(default=180.0, gt=0,
                                         description="a queued run not asked about for this long leaves the queue "
                                                     "(and a slot reserved for it is given back); Flagger and Argo "
                                                     "ask every analysis interval: keep it above 3 intervals")
    admission_ttl_s: float | None = Field(default=None, gt=0,
                                          description="an admitted run no caller asked about for this long gives "
                                                      "its slot back (Argo has no end hook; a deleted Canary never "
                                                      "calls); default max(600 s, the idle timeout), never below "
                                                      "the idle timeout. If it calls again it is admitted at once")
    max_blocking_hooks: int | None = Field(default=None, ge=0, le=512,
                                           description="hooks that may wait on a live check at once (pre-rollout's "
                                                       "canary check and golden-set wait); beyond, the check goes "
                                                       "on in the background and gates the next hooks. Default "
                                                       "threads // 2; must be below threads")
    max_blocking_hooks_per_namespace: int = Field(default=2, ge=0, le=512,
                                                  description="hooks of one rollout namespace that may wait on a "
                                                              "live check at once")
    golden_wait_s: float | None = Field(default=1.5, gt=0,
                                        description="pre-rollout waits at most this long (from its arrival) for "
                                                    "the golden-set check; a check still running then answers 200 "
                                                    "(\"golden-set check still running: its result gates the next "
                                                    "hooks\": a failing golden set is the next rollout's 412). "
                                                    "1.5 keeps pre-rollout under 2 s with 20 analyses starting "
                                                    "together (bench.prerollout_burst); null waits the whole "
                                                    "hook_deadline_s")
    namespaces: list[str] = Field(default_factory=list, description="allow-list; empty allows all")
    auth: AuthConfig | None = None

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        return check_store(v)

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        if not re.match(r"^[^\s:]*:\d{1,5}$", v) and not v.startswith("unix:"):
            raise ValueError("must be host:port or unix:/path")
        return v

    @model_validator(mode="after")
    def _admission(self) -> "ServerConfig":
        if self.admission_ttl_s is not None and self.admission_ttl_s < self.idle_timeout():
            raise ValueError(f"admission_ttl_s ({self.admission_ttl_s:g}) must be at least the idle timeout "
                             f"({self.idle_timeout():g} s): a run whose load is still on keeps its slot")
        if self.max_blocking_hooks is not None and self.max_blocking_hooks >= self.threads:
            raise ValueError(f"max_blocking_hooks ({self.max_blocking_hooks}) must be below threads "
                             f"({self.threads}): the other hooks need threads while checks wait")
        return self

    def idle_timeout(self) -> float:
        """Seconds without a hook call after which a run's load stops."""
        if self.idle_timeout_s is not None:
            return self.idle_timeout_s
        return max(10 * self.interval_s, 120.0)

    def admission_ttl(self) -> float:
        """Seconds without a call after which an admitted run gives its slot back."""
        if self.admission_ttl_s is not None:
            return self.admission_ttl_s
        return max(600.0, self.idle_timeout())

    def hook_queue_timeout(self) -> float:
        """Seconds a hook may wait for a thread before the front answers it busy (below hook_deadline_s)."""
        if self.hook_queue_timeout_s is not None:
            return min(self.hook_queue_timeout_s, self.hook_deadline_s)
        return 0.75 * self.hook_deadline_s

    def blocking_hooks(self) -> int:
        """Hooks that may wait on a live check at once (always below `threads`)."""
        if self.max_blocking_hooks is not None:
            return self.max_blocking_hooks
        return self.threads // 2


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    analyses: dict[str, AnalysisConfig] = Field(min_length=1)

    @field_validator("analyses")
    @classmethod
    def _names(cls, v: dict[str, AnalysisConfig]) -> dict[str, AnalysisConfig]:
        for name in v:
            if not ANALYSIS_NAME_RE.match(name):
                raise ValueError(f"analysis name {name!r}: letters, digits, '_', '.', '-', at most 63")
        return v


@dataclass
class Analysis:
    """An analysis ready to run: its configuration plus data loaded from disk."""

    name: str
    config: AnalysisConfig
    judge_config: Any  # analyses.config.JudgeConfig
    golden_inputs: np.ndarray
    golden_labels: np.ndarray
    reference_inputs: np.ndarray | None
    interval_s: float
    gate: Any = None  # analyses.gate.Gate: the run decision of this analysis
    prometheus: Any = None  # webhook.promchecks: {name: CheckQueries} of the Prometheus checks

    def plan(self) -> tuple[list[Any], Any]:
        """`analyses.plan.plan` with this analysis' rates, interval and golden set."""
        from analyses.plan import plan

        load = self.config.load
        rate = max([load.rate] + [st.rate for st in load.schedule]) if load.schedule else load.rate
        return plan(self.judge_config, requests_per_window=rate * self.interval_s,
                    probes_per_window=self.config.probe.rate * self.interval_s,
                    golden_rows=int(self.golden_inputs.shape[0]), active=self.gate.active)


@dataclass
class Settings:
    """The whole loaded configuration."""

    config: Config
    analyses: dict[str, Analysis]
    store_path: str
    token: str | None
    base_dir: Path

    @property
    def server(self) -> ServerConfig:
        return self.config.server


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _first_error(err: ValidationError, prefix: str = "") -> ConfigError:
    e = err.errors()[0]
    field = _dotted(e["loc"])
    if prefix:
        field = f"{prefix}.{field}" if field else prefix
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return ConfigError(field, msg)


def _load_npz(base: Path, ds: DataSetConfig, field: str, need_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    # From a file or a URL, checked against `sha256`; errors name the field (webhook/datasets.py).
    from .datasets import load

    loaded = load(base, ds, field, need_labels)
    return loaded.inputs, loaded.labels


def _judge_config(checks: dict[str, Any], field: str) -> Any:
    from analyses.config import load_judge_config

    try:
        return load_judge_config(checks, prefix=field)
    except ValueError as exc:
        # The message is "<dotted.field>: <problem>[; ...]"; report the first.
        first = str(exc).split("; ")[0]
        name, sep, msg = first.partition(": ")
        if sep and name.startswith(field):
            raise ConfigError(name, msg) from None
        raise ConfigError(field, first) from None


def _refuse_undecidable(analysis: "Analysis", field: str) -> None:
    """A critical check that can never decide means a run that can never pass: refuse it at start,
    saying what would let it decide (the analysis may opt in with allow_undecidable: true)."""
    rows, _ = analysis.plan()
    for r in rows:
        if r.undecidable and analysis.judge_config.check(r.check).critical:
            load = analysis.config.load
            rate = max([load.rate] + [st.rate for st in load.schedule])
            need = analysis.judge_config.latency.min_samples
            raise ConfigError(f"{field}.load.rate",
                              f"{r.undecidable}: raise load.rate to >= {math.ceil(need / analysis.interval_s)} "
                              f"requests/s or interval_s to >= {math.ceil(need / max(rate, 1e-9))} s, or set "
                              f"allow_undecidable: true (a run can then never pass)")


def _gate(judge_config: Any, ac: "AnalysisConfig", golden_rows: int) -> Any:
    """The analysis' gate; alpha is split over the checks that can have data here."""
    from analyses.gate import Gate

    active = ["accuracy", "errors", "errors_increase"]
    if ac.load.rate > 0 or ac.load.schedule:
        active.append("latency")
    if ac.ctr is not None:
        active.append("ctr")
    if ac.prometheus is not None:
        active += [n for n, c in judge_config.prometheus.items() if c.enabled]
    return Gate(judge_config, active=active, golden_rows=golden_rows)


def _prometheus_checks(ac: "AnalysisConfig", field: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`checks` with `prometheus` reduced to what the gate needs, and the checks' queries (by name)."""
    from .promchecks import CheckError, render, resolve_checks
    from .verdicts import RESERVED

    checks = dict(ac.checks)
    raw = checks.get("prometheus")
    if not raw:
        return checks, {}
    if ac.prometheus is None:
        raise ConfigError(f"{field}.prometheus", "checks.prometheus is set but no prometheus source (url) is")
    sel = ac.prometheus.selectors
    try:
        stat, queries = resolve_checks(raw, (sel.stable, sel.canary) if sel else None, reserved=set(RESERVED))
    except CheckError as err:
        where = f"{field}.checks.prometheus" + (f".{err.field}" if err.field else "")
        raise ConfigError(where, err.message) from None
    versions = prometheus_versions(ac)
    for name, q in queries.items():
        if q.selectors is None:
            continue
        rendered = [render(s, version=versions[v], namespace="ns", name="name", model="m")
                    for s, v in zip(q.selectors, ("stable", "canary"))]
        if rendered[0] == rendered[1]:
            raise ConfigError(f"{field}.checks.prometheus.{name}.selectors",
                              f"stable and canary select the same series ({rendered[0]}): set "
                              "prometheus.versions or selectors")
    checks["prometheus"] = stat
    return checks, queries


def prometheus_versions(ac: "AnalysisConfig") -> dict[str, str]:
    """The names substituted for {version}: configured, else each target's label or version."""
    v = ac.prometheus.versions if ac.prometheus is not None else PrometheusVersions()
    return {"stable": v.stable or ac.stable.version_name(), "canary": v.canary or ac.canary.version_name()}


def _register_secrets(config: Config, token: str | None) -> None:
    """Every configured URL's credentials and query, and the service token: never printed (webhook.redact)."""
    from .redact import option_secrets, register, register_secret

    register_secret(token)
    from .store import is_postgres_url

    if is_postgres_url(config.server.store):
        register(config.server.store)  # the password in a postgresql:// URL
    for ac in config.analyses.values():
        register(ac.stable.address, ac.canary.address)
        if ac.ctr is not None:
            register(ac.ctr.prometheus)
        if ac.prometheus is not None:
            register(ac.prometheus.url)
        for ds in (ac.golden, ac.reference):
            if ds is not None and ds.url:
                register(ds.url)
                register_secret(*option_secrets(ds.storage_options))


def load_settings(data: dict[str, Any], base_dir: Path | str = ".") -> Settings:
    """Validate a parsed configuration and load its data sets. Raises ConfigError."""
    base = Path(base_dir)
    if not isinstance(data, dict):
        raise ConfigError("", "the configuration must be a YAML mapping with 'analyses'")
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        raise _first_error(err) from None

    token = None
    auth = config.server.auth
    if auth is not None:
        if auth.token_env is not None:
            token = os.environ.get(auth.token_env)
            if not token:
                raise ConfigError("server.auth.token_env", f"environment variable {auth.token_env} is not set")
            if len(token) < 16:
                raise ConfigError("server.auth.token_env", "the token must have at least 16 characters")
        else:
            token = auth.token
    elif os.environ.get(TOKEN_ENV):
        # Deployments (the Helm chart) hand the token over in the environment.
        token = os.environ[TOKEN_ENV]
        if len(token) < 16:
            raise ConfigError(TOKEN_ENV, "the token must have at least 16 characters")

    namespaces = list(config.server.namespaces)
    if not namespaces and os.environ.get(NAMESPACES_ENV):
        namespaces = [n.strip() for n in os.environ[NAMESPACES_ENV].split(",") if n.strip()]
        config = config.model_copy(update={"server": config.server.model_copy(update={"namespaces": namespaces})})
    if os.environ.get(STORE_ENV, "").strip():
        # Deployments (the Helm chart) hand a PostgreSQL URL over from a Secret: it holds a password.
        try:
            store_url = check_store(os.environ[STORE_ENV].strip())
        except ValueError as exc:
            raise ConfigError(f"server.store ({STORE_ENV})", str(exc)) from None
        config = config.model_copy(update={"server": config.server.model_copy(update={"store": store_url})})
    for i, ns in enumerate(config.server.namespaces):
        if not re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", ns):
            raise ConfigError(f"server.namespaces.{i}", f"{ns!r} is not a Kubernetes namespace name")

    _register_secrets(config, token)
    analyses: dict[str, Analysis] = {}
    for name, ac in config.analyses.items():
        field = f"analyses.{name}"
        inputs, labels = _load_npz(base, ac.golden, f"{field}.golden", need_labels=True)
        ref = None
        if ac.reference is not None:
            ref, _ = _load_npz(base, ac.reference, f"{field}.reference", need_labels=False)
        checks, prom_queries = _prometheus_checks(ac, field)
        judge_config = _judge_config(checks, f"{field}.checks")
        if ac.ctr is None:
            explicit = isinstance(ac.checks.get("ctr"), dict) and ac.checks["ctr"].get("enabled") is True
            if explicit:
                raise ConfigError(f"{field}.ctr", "checks.ctr is enabled but no ctr source (Prometheus) is set")
            # Without a source the check could only ever say "no data".
            judge_config = judge_config.model_copy(
                update={"ctr": judge_config.ctr.model_copy(update={"enabled": False})})
        for i, step in enumerate(ac.load.schedule):
            if step.rate > ac.load.max_rate:
                raise ConfigError(f"{field}.load.schedule.{i}.rate",
                                  f"{step.rate:g} exceeds max_rate {ac.load.max_rate:g}")
        analyses[name] = Analysis(
            name=name, config=ac, judge_config=judge_config,
            golden_inputs=inputs, golden_labels=labels, reference_inputs=ref,
            interval_s=ac.interval_s or config.server.interval_s,
            gate=_gate(judge_config, ac, int(inputs.shape[0])),
            prometheus=prom_queries,
        )
        if not ac.allow_undecidable:
            _refuse_undecidable(analyses[name], field)

    from .store import is_postgres_url

    store = Path(config.server.store)
    if is_postgres_url(config.server.store):
        store_path = config.server.store  # a URL, not a file: nothing to resolve
    else:
        store_path = config.server.store if config.server.store == ":memory:" else str(
            store if store.is_absolute() else base / store)
    return Settings(config=config, analyses=analyses, store_path=store_path, token=token, base_dir=base)


def load_config(path: str | os.PathLike) -> Settings:
    """Read and validate analyses.yaml. Raises ConfigError naming the field."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError("", f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError("", f"{p} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return load_settings(data, p.parent)
