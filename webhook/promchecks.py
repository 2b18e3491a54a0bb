"""Prometheus checks, fetching side: presets, query templates, and the fetch when a window closes.

A check in `checks.prometheus` names a preset (one line) or gives its own
PromQL templates; this module resolves it into the gate's statistical part
(analyses.config.PrometheusCheckConfig, validated there) and the queries
kept here. Templates are plain text with placeholders, substituted from the
configuration and the run only, never from a webhook payload:

    {selector}   the version's label matchers (from the check, the preset or
                 `prometheus.selectors`); may itself contain the others
    {version}    the version's name (`prometheus.versions`, default each
                 target's label or version number)
    {window}     the window's length as a PromQL range (`30s`)
    {namespace}  the rollout's namespace, {name} its name (Canary / Rollout)
    {model}      the target's model name

Values are escaped for PromQL strings; `{namespace}` and `{name}` must be
Kubernetes names (they were checked when the run started, and are checked
again here). Plain replacement, not `str.format`: PromQL has braces.

Counters are `sum(increase(...[{window}]))`: counts over the window, never a
rate, and windows never overlap (a longer range would count the same
requests in two windows, which the sequential test must not see). The
queries are evaluated at the window's end (minus `prometheus.lag_s`); gauges
with a range query over the window at `prometheus.step_s`. Every request has
the deadline `prometheus.timeout_s` (also sent to Prometheus as its own
query timeout); whatever has not answered by then is missing data for its
check, and the check's `on_missing` decides. Nothing here runs on a hook's
path: the session fetches in its I/O pool when a window closes.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analyses.window import PromCounts

from .redact import LIMIT, exception_text, redact_url, register, url_secrets

log = logging.getLogger(__name__)

__all__ = ["PRESETS", "CheckQueries", "Preset", "PromChecksSource", "PromClient", "render", "resolve_checks",
           "source_for"]

PLACEHOLDERS = ("selector", "version", "window", "namespace", "name", "model")
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_K8S_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")
# Top-level keys of the Argo answer a check's name must not shadow (webhook/verdicts.py).
_SOURCE_KEYS = ("preset", "numerator", "denominator", "buckets", "query", "selectors")
_QUERIES = {"counter_ratio": ("numerator", "denominator"), "histogram_quantile": ("buckets",),
            "gauge_ceiling": ("query",)}


@dataclass(frozen=True)
class Preset:
    """A known source: the kind, the PromQL it runs, default thresholds and version selectors.

    selectors: (stable, canary) label matchers when the source has a version
    label (Istio, NGINX); None when each version is its own process or pod
    (TF Serving, DCGM): then `selectors` must be configured.
    """

    kind: str
    queries: dict[str, str]
    alert: float
    rollback: float
    about: str
    compare: str | None = None
    selectors: tuple[str, str] | None = None
    unit: str = ""
    quantile: float | None = None


_ISTIO = 'reporter="destination",destination_workload_namespace="{namespace}"'
_NGINX = 'namespace="{namespace}",ingress="{name}"'

PRESETS: dict[str, Preset] = {
    "tfserving-errors": Preset(
        "counter_ratio",
        {"numerator": 'sum(increase(:tensorflow:serving:request_count{model_name="{model}",status!="OK",'
                      '{selector}}[{window}]))',
         "denominator": 'sum(increase(:tensorflow:serving:request_count{model_name="{model}",{selector}}'
                        '[{window}]))'},
        0.005, 0.01, "TF Serving's failed requests (status other than OK) over all, canary minus stable",
        compare="difference"),
    "tfserving-latency": Preset(
        "histogram_quantile",
        {"buckets": 'sum by (le) (increase(:tensorflow:serving:request_latency_bucket{model_name="{model}",'
                    '{selector}}[{window}]))'},
        1.5, 2.0, "TF Serving's request latency histogram (microseconds), P99 canary/stable",
        unit="us", quantile=0.99),
    "istio-5xx": Preset(
        "counter_ratio",
        {"numerator": 'sum(increase(istio_requests_total{' + _ISTIO + ',response_code=~"5..",{selector}}'
                      '[{window}]))',
         "denominator": 'sum(increase(istio_requests_total{' + _ISTIO + ',{selector}}[{window}]))'},
        0.005, 0.01, "Istio's 5xx responses over all, per destination version, canary minus stable",
        compare="difference", selectors=('destination_version="{version}"', 'destination_version="{version}"')),
    "istio-latency": Preset(
        "histogram_quantile",
        {"buckets": 'sum by (le) (increase(istio_request_duration_milliseconds_bucket{' + _ISTIO +
                    ',{selector}}[{window}]))'},
        1.5, 2.0, "Istio's request duration histogram (milliseconds), P99 canary/stable",
        selectors=('destination_version="{version}"', 'destination_version="{version}"'), unit="ms",
        quantile=0.99),
    "dcgm-gpu-util": Preset(
        "gauge_ceiling", {"query": "avg(DCGM_FI_DEV_GPU_UTIL{{selector}})"},
        90.0, 95.0, "NVIDIA DCGM's GPU utilisation (percent), the canary's mean level", compare="level", unit="%"),
    "nginx-5xx": Preset(
        "counter_ratio",
        {"numerator": 'sum(increase(nginx_ingress_controller_requests{' + _NGINX + ',status=~"5..",{selector}}'
                      '[{window}]))',
         "denominator": 'sum(increase(nginx_ingress_controller_requests{' + _NGINX + ',{selector}}[{window}]))'},
        0.005, 0.01, "NGINX ingress canary: 5xx over all, canary (canary label set) minus stable",
        compare="difference", selectors=('canary=""', 'canary!=""')),
    "nginx-latency": Preset(
        "histogram_quantile",
        {"buckets": 'sum by (le) (increase(nginx_ingress_controller_request_duration_seconds_bucket{' + _NGINX +
                    ',{selector}}[{window}]))'},
        1.5, 2.0, "NGINX ingress canary: request duration histogram (seconds), P99 canary/stable",
        selectors=('canary=""', 'canary!=""'), unit="s", quantile=0.99),
}


# ------------------------------------------------------------------ configuration


class VersionSelectors(BaseModel):
    """PromQL label matchers that pick one version's series, e.g. `job="tfserving-canary"`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stable: str = Field(min_length=1, max_length=1000)
    canary: str = Field(min_length=1, max_length=1000)


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    preset: str | None = None
    numerator: str | None = Field(None, min_length=1, max_length=4000)
    denominator: str | None = Field(None, min_length=1, max_length=4000)
    buckets: str | None = Field(None, min_length=1, max_length=4000)
    query: str | None = Field(None, min_length=1, max_length=4000)
    selectors: VersionSelectors | None = None


@dataclass(frozen=True)
class CheckQueries:
    """The queries of one Prometheus check: templates by role, and each version's selector template."""

    name: str
    kind: str
    templates: dict[str, str]
    selectors: tuple[str, str] | None


class CheckError(ValueError):
    """A Prometheus check is misconfigured; `field` is the dotted path below the check."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


def _placeholders(template: str) -> set[str]:
    return set(_PLACEHOLDER_RE.findall(template))


def resolve_checks(raw: Any, default_selectors: tuple[str, str] | None, reserved: set[str] | frozenset = frozenset()
                   ) -> tuple[dict[str, dict], dict[str, CheckQueries]]:
    """Split `checks.prometheus` into the gate's part (plain dicts for analyses.config) and the queries.

    default_selectors: `prometheus.selectors` of the analysis. reserved:
    names a check may not take. Raises CheckError with the field below
    `checks.prometheus` (e.g. "p99.preset").
    """
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict):
        raise CheckError("", f"must be a mapping of check names, got {type(raw).__name__}")
    stats: dict[str, dict] = {}
    queries: dict[str, CheckQueries] = {}
    for name, spec in raw.items():
        name = str(name)
        if name in reserved:
            raise CheckError(name, "this name is a key of the answers already; choose another")
        if isinstance(spec, str):  # `p99: tfserving-latency`, the shortest form
            spec = {"preset": spec}
        if not isinstance(spec, dict):
            raise CheckError(name, "must be a mapping (or a preset's name)")
        try:
            src = _Source.model_validate({k: v for k, v in spec.items() if k in _SOURCE_KEYS})
        except ValidationError as err:
            e = err.errors()[0]
            raise CheckError(".".join([name] + [str(x) for x in e["loc"]]),
                             e["msg"].removeprefix("Value error, ")) from None
        stat = {k: v for k, v in spec.items() if k not in _SOURCE_KEYS}
        preset = None
        if src.preset is not None:
            preset = PRESETS.get(src.preset)
            if preset is None:
                raise CheckError(f"{name}.preset", f"unknown preset {src.preset!r}; known: {', '.join(PRESETS)}")
            if "kind" in stat and stat["kind"] != preset.kind:
                raise CheckError(f"{name}.kind", f"preset {src.preset} is a {preset.kind} check")
            defaults = {"kind": preset.kind, "alert": preset.alert, "rollback": preset.rollback, "unit": preset.unit}
            if preset.compare and "compare" not in stat:
                defaults["compare"] = preset.compare
            if preset.quantile is not None:
                defaults["quantile"] = preset.quantile
            stat = {**defaults, **stat}
        kind = stat.get("kind")
        if kind not in _QUERIES:
            raise CheckError(f"{name}.kind", "give a preset, or a kind: counter_ratio, histogram_quantile or "
                                             "gauge_ceiling")
        templates = dict(preset.queries) if preset else {}
        for role in ("numerator", "denominator", "buckets", "query"):
            value = getattr(src, role)
            if value is None:
                continue
            if role not in _QUERIES[kind]:
                raise CheckError(f"{name}.{role}", f"not a query of a {kind} check (those are "
                                                   f"{', '.join(_QUERIES[kind])})")
            templates[role] = value
        for role in _QUERIES[kind]:
            if role not in templates:
                raise CheckError(f"{name}.{role}", f"required for a {kind} check (or give a preset)")
        selectors = ((src.selectors.stable, src.selectors.canary) if src.selectors is not None
                     else preset.selectors if preset is not None and preset.selectors is not None
                     else default_selectors)
        for role, template in templates.items():
            unknown = _placeholders(template) - set(PLACEHOLDERS)
            if unknown:
                raise CheckError(f"{name}.{role}", f"unknown placeholder {{{sorted(unknown)[0]}}} (known: "
                                                   f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)})")
            used = _placeholders(template)
            if "selector" in used and selectors is None:
                raise CheckError(f"{name}.selectors", "this source has no version label (one process or pod per "
                                                      "version): give selectors here or in prometheus.selectors")
            if "selector" not in used and "version" not in used:
                raise CheckError(f"{name}.{role}", "must contain {selector} or {version} so stable and canary "
                                                   "are told apart")
        if selectors is not None:
            for which, sel in zip(("stable", "canary"), selectors):
                unknown = _placeholders(sel) - set(PLACEHOLDERS) | (_placeholders(sel) & {"selector"})
                if unknown:
                    raise CheckError(f"{name}.selectors.{which}", f"unknown placeholder {{{sorted(unknown)[0]}}}")
        stats[name] = stat
        queries[name] = CheckQueries(name, kind, templates, selectors)
    return stats, queries


# ------------------------------------------------------------------ rendering


def window_duration(seconds: float) -> str:
    """A PromQL range for a window length in seconds, at least 1s (e.g. `30s`)."""
    return f"{max(1, int(round(seconds)))}s"


def _escape(value: str) -> str:
    """A value safe inside a PromQL double-quoted string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(template: str, *, selector: str = "", version: str = "", window_s: float | None = None,
           namespace: str | None = None, name: str | None = None, model: str = "") -> str:
    """The query for one version: {selector} first (it may hold the others), then every placeholder once.

    Raises ValueError when the template needs a value this context lacks
    ({namespace}/{name} outside a rollout) or one that is not a Kubernetes name.
    """
    text = template.replace("{selector}", selector)
    values: dict[str, str] = {"version": _escape(version), "model": _escape(model)}
    if window_s is not None:
        values["window"] = window_duration(window_s)
    for key, v in (("namespace", namespace), ("name", name)):
        if v is not None:
            if not _K8S_NAME_RE.match(v):
                raise ValueError(f"{{{key}}} {v!r} is not a Kubernetes name")
            values[key] = v

    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key not in values:
            if key in PLACEHOLDERS:
                raise ValueError(f"{{{key}}} is not known here (no rollout context)")
            return m.group(0)
        return values[key]

    return _PLACEHOLDER_RE.sub(sub, text)


# ------------------------------------------------------------------ the client


def split_url(url: str) -> tuple[str, tuple[str, str] | None, dict[str, str]]:
    """(base URL without userinfo, query or fragment; basic auth from the userinfo; the query's parameters).

    `https://user:pass@prom/x?sig=s` queries `https://prom/x/api/v1/query?sig=s&query=...` with basic
    auth, rather than appending the API path to the query string.
    """
    u = urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    base = f"{u.scheme}://{host}{f':{u.port}' if u.port is not None else ''}{u.path}".rstrip("/")
    auth = (unquote(u.username or ""), unquote(u.password or "")) if "@" in u.netloc else None
    return base, auth, dict(parse_qsl(u.query, keep_blank_values=True))


class PromClient:
    """Instant and range queries with one deadline, no retries (the next window asks again).

    `url` may carry basic-auth credentials and query parameters (a signed
    proxy's `?sig=`): both are sent with every query and never shown;
    `url` (the attribute) is the redacted form, `secrets` what error texts
    are scrubbed of.
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        base, auth, self._extra = split_url(url)
        self.url, self.secrets, self.timeout_s = redact_url(url), url_secrets(url), timeout_s
        register(url)
        self._prom = PrometheusConnect(url=base, disable_ssl=False, retry=Retry(total=0), timeout=timeout_s,
                                       auth=auth)

    def _params(self, **kw: Any) -> dict[str, Any]:
        # Prometheus stops evaluating after this too, so a heavy query does not outlive its answer.
        return {**self._extra, "timeout": f"{self.timeout_s:g}s", **kw}

    def instant(self, query: str, at: float | None = None) -> list[dict]:
        """An instant vector at unix time `at` (now when None): [{"metric": {...}, "value": [t, "v"]}]."""
        params = self._params(**({"time": f"{at:.3f}"} if at is not None else {}))
        return self._prom.custom_query(query, params=params, timeout=self.timeout_s)

    def range(self, query: str, start: float, end: float, step_s: float) -> list[dict]:
        """A range query: [{"metric": {...}, "values": [[t, "v"], ...]}]."""
        return self._prom.custom_query_range(
            query, start_time=datetime.fromtimestamp(start, timezone.utc),
            end_time=datetime.fromtimestamp(end, timezone.utc), step=f"{step_s:g}s", params=self._params(),
            timeout=self.timeout_s)


class NoData(Exception):
    """A query answered without usable data (the message says what is missing)."""


def scalar(result: list[dict], empty: float | None = None) -> float:
    """The sum of an instant vector's values; `empty` for an empty one (NoData if None)."""
    if not result:
        if empty is None:
            raise NoData("no series")
        return empty
    total = 0.0
    for series in result:  # a vector: summed, so `by (...)` queries still work
        value = float(series["value"][1])
        if not math.isfinite(value):
            raise NoData("not a finite number")
        total += value
    return total


def buckets(result: list[dict]) -> tuple[list[float], list[float]]:
    """(upper bounds, cumulative counts) of a `sum by (le)` vector, +Inf last."""
    by_le: dict[float, float] = {}
    for series in result:
        le = series.get("metric", {}).get("le")
        if le is None:
            raise NoData("a series without an `le` label (sum by (le) expected)")
        bound = math.inf if le in ("+Inf", "Inf", "inf") else float(le)
        value = float(series["value"][1])
        if math.isfinite(value):
            by_le[bound] = by_le.get(bound, 0.0) + value
    if not by_le:
        raise NoData("no buckets")
    if math.inf not in by_le:
        raise NoData("no +Inf bucket")
    bounds = sorted(by_le)
    return bounds, [by_le[b] for b in bounds]


def samples(result: list[dict]) -> list[float]:
    """A range result's samples in time order; several series are averaged per timestamp."""
    by_t: dict[float, list[float]] = {}
    for series in result:
        for t, v in series.get("values", []):
            v = float(v)
            if math.isfinite(v):
                by_t.setdefault(float(t), []).append(v)
    if not by_t:
        raise NoData("no samples")
    return [sum(vs) / len(vs) for _, vs in sorted(by_t.items())]


# ------------------------------------------------------------------ the fetch


@dataclass
class _Job:
    check: str
    version: str
    role: str
    query: str
    future: concurrent.futures.Future | None = None


@dataclass
class PromChecksSource:
    """Fetches every Prometheus check of one analysis for one window (in the caller's thread, with a deadline).

    url, timeout_s, lag_s, step_s: from the analysis' `prometheus:`.
    versions: name of each version for {version}; models: model name of each for {model}.
    """

    url: str = field(repr=False)
    checks: dict[str, CheckQueries]
    versions: dict[str, str]
    models: dict[str, str]
    timeout_s: float = 3.0
    lag_s: float = 0.0
    step_s: float = 15.0
    client: Any = None
    _pool: concurrent.futures.ThreadPoolExecutor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.client is None:
            self.client = PromClient(self.url, self.timeout_s)
        workers = min(16, max(2, sum(2 * len(q.templates) for q in self.checks.values())))
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="promchecks")

    @property
    def deadline_s(self) -> float:
        """The longest a fetch takes (seconds): every query runs at once under one deadline."""
        return self.timeout_s + 0.5

    def all_missing(self, why: str) -> dict[str, PromCounts]:
        """Every check missing for the same reason (Prometheus down or the fetch cut short)."""
        return {name: PromCounts(_KIND[q.kind], missing=why) for name, q in self.checks.items()}

    def queries(self, window_s: float, namespace: str | None = None, name: str | None = None
                ) -> dict[tuple[str, str, str], str]:
        """Every query of a window, by (check, version, role); raises ValueError on a bad context."""
        out = {}
        for check, q in self.checks.items():
            for i, version in enumerate(("stable", "canary")):
                sel = q.selectors[i] if q.selectors is not None else ""
                for role, template in q.templates.items():
                    out[(check, version, role)] = render(
                        template, selector=sel, version=self.versions[version], window_s=window_s,
                        namespace=namespace, name=name, model=self.models[version])
        return out

    def _run(self, q: CheckQueries, role: str, query: str, window_s: float, at: float) -> Any:
        if q.kind == "gauge_ceiling":
            step = min(self.step_s, max(window_s / 2.0, 1.0))
            return samples(self.client.range(query, at - window_s, at, step))
        result = self.client.instant(query, at)
        if q.kind == "histogram_quantile":
            return buckets(result)
        # An empty numerator is no event (a 5xx series exists only after the first 5xx); an
        # empty denominator is missing data.
        return scalar(result, empty=0.0 if role == "numerator" else None)

    def fetch(self, window_s: float, end: float, namespace: str | None = None,
              name: str | None = None) -> dict[str, PromCounts]:
        """Each check's data for the window of `window_s` seconds ending at unix time `end`.

        Returns within `deadline_s` seconds; a check whose queries failed,
        came back empty or did not answer in time is PromCounts with
        `missing` set (why, in one line).
        """
        at = end - self.lag_s
        out: dict[str, PromCounts] = {}
        jobs: list[_Job] = []
        for check, q in self.checks.items():
            try:
                rendered = {(v, r): render(t, selector=(q.selectors[i] if q.selectors else ""),
                                           version=self.versions[v], window_s=window_s, namespace=namespace,
                                           name=name, model=self.models[v])
                            for i, v in enumerate(("stable", "canary")) for r, t in q.templates.items()}
            except ValueError as exc:
                out[check] = PromCounts(_KIND[q.kind], missing=f"query not rendered: {exc}")
                continue
            for (v, r), text in rendered.items():
                job = _Job(check, v, r, text)
                job.future = self._pool.submit(self._run, q, r, text, window_s, at)
                jobs.append(job)
        if jobs:
            concurrent.futures.wait([j.future for j in jobs], timeout=self.deadline_s)
        results: dict[str, dict[tuple[str, str], Any]] = {}
        for job in jobs:
            if job.check in out:
                job.future.cancel()
                continue
            why = None
            if not job.future.done():
                job.future.cancel()
                why = f"Prometheus did not answer within {self.timeout_s:g} s"
            else:
                exc = job.future.exception()
                if isinstance(exc, NoData):
                    why = f"{job.version} {job.role}: {exc}"
                elif exc is not None:
                    why = self._failure(exc)
            if why is not None:
                out[job.check] = PromCounts(_KIND[self.checks[job.check].kind], missing=why)
                log.info("Prometheus check %s: %s", job.check, why)
                continue
            results.setdefault(job.check, {})[(job.version, job.role)] = job.future.result()
        for check, q in self.checks.items():
            if check in out:
                continue
            got = results.get(check, {})
            if q.kind == "counter_ratio":
                out[check] = PromCounts("counter", [got[("stable", "numerator")], got[("stable", "denominator")]],
                                        [got[("canary", "numerator")], got[("canary", "denominator")]])
            elif q.kind == "histogram_quantile":
                (bs, cs), (bc, cc) = got[("stable", "buckets")], got[("canary", "buckets")]
                if bs != bc:  # the versions export different buckets: compare on the common bounds
                    common = sorted(set(bs) & set(bc))
                    cs = [c for b, c in zip(bs, cs) if b in common]
                    cc = [c for b, c in zip(bc, cc) if b in common]
                    bs = common
                out[check] = PromCounts("histogram", cs, cc, bs)
            else:
                out[check] = PromCounts("gauge", got[("stable", "query")], got[("canary", "query")])
        return out

    def _failure(self, exc: BaseException) -> str:
        """One line for a failed query: timed out, unreachable, or what Prometheus said (cut, scrubbed)."""
        text = str(exc)
        if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
            return f"Prometheus did not answer within {self.timeout_s:g} s"
        if "refused" in text.lower():
            return f"Prometheus at {redact_url(self.url)} refused the connection"
        secrets = url_secrets(self.url) | set(getattr(self.client, "secrets", ()))
        return f"Prometheus query failed: {exception_text(exc, secrets, LIMIT)}"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


_KIND = {"counter_ratio": "counter", "histogram_quantile": "histogram", "gauge_ceiling": "gauge"}


def source_for(analysis: Any) -> PromChecksSource:
    """The fetcher of a loaded analysis (webhook.config.Analysis) with Prometheus checks."""
    from .config import prometheus_versions

    ac = analysis.config
    pc = ac.prometheus
    return PromChecksSource(url=pc.url, checks=dict(analysis.prometheus), versions=prometheus_versions(ac),
                            models={"stable": ac.stable.model, "canary": ac.canary.model},
                            timeout_s=pc.timeout_s, lag_s=pc.lag_s, step_s=pc.step_s)
