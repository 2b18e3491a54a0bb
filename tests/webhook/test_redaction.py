"""Secrets never printed, and golden URLs that cannot be led elsewhere.

Every URL field (the CTR source `ctr.prometheus`, the Prometheus checks'
`prometheus.url`, `golden.url`, `reference.url`, a REST model server's
`address`) is given `user:secretpass@` and `?sig=SECRET`, made to fail, and
every place the failure can show up is searched for both: logs (at DEBUG,
Shadowgate's own records as emitted and everything as `shadowgate serve`
prints it), exception and start-up messages, the timeline, the hooks'
answers, the run API, the report page and /metrics.

Golden URLs: real HTTP(S) servers on 127.0.0.x (no mock of the network)
that count the requests they get, so a refused hop is shown to have been
refused BEFORE anything connected to it.
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import yaml

from tests.webhook.conftest import base_config
from tests.webhook.scripted import GOOD
from webhook import datasets
from webhook.config import ConfigError, load_settings
from webhook.redact import SecretsFilter, redact_url, register, scrub, url_secrets

SECRETS = ("secretpass", "SECRET")
ARGO = "/argo/v1/analyses/digits?rollout=podinfo&revision=5f8c9d&namespace=prod"
LOCAL = {"allow_http": True, "allow_private": True}  # test servers: plain http on loopback


def assert_clean(text, where: str = "") -> None:
    text = text if isinstance(text, str) else json.dumps(text)
    for s in SECRETS:
        assert s not in text, f"{s!r} printed{' in ' + where if where else ''}: {text[:2000]}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens there (connection refused)
        s.bind((host, 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ servers that count what they get


class Recorder:
    """An HTTP(S) server on `host` answering with `route(method, path, query, headers)`: (status, headers, body)."""

    def __init__(self, route, host: str = "127.0.0.1", tls: tuple[str, str] | None = None) -> None:
        self.requests: list[tuple[str, str, dict, dict]] = []
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                u = urlsplit(self.path)
                q = parse_qs(u.query, keep_blank_values=True)
                headers = {k.lower(): v for k, v in self.headers.items()}
                rec.requests.append((self.command, u.path, q, headers))
                status, extra, body = rec.route(self.command, u.path, q, headers)
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = _answer  # noqa: N815 (http.server's names)

            def log_message(self, *a):
                pass

        self.route = route
        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.host, self.port = host, self.server.server_address[1]
        self.url = f"{scheme}://{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def secret_url(self, path: str) -> str:
        u = urlsplit(self.url)
        return f"{u.scheme}://user:secretpass@{u.netloc}{path}?sig=SECRET"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve():
    started: list[Recorder] = []

    def make(route, host: str = "127.0.0.1", tls=None) -> Recorder:
        r = Recorder(route, host, tls)
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs(caplog):
    """Every record at DEBUG. `raw`: Shadowgate's own loggers' records as emitted (no filter);
    `caplog`: everything, third-party libraries included, as `shadowgate serve` prints it
    (its SecretsFilter on the handler)."""
    caplog.set_level(logging.DEBUG)
    raw = _ListHandler()
    names = ("webhook", "shadowgate", "loadtest")
    for name in names:
        logging.getLogger(name).addHandler(raw)
    filt = SecretsFilter()
    caplog.handler.addFilter(filt)
    try:
        yield raw, caplog
    finally:
        caplog.handler.removeFilter(filt)
        for name in names:
            logging.getLogger(name).removeHandler(raw)


def assert_logs_clean(logs) -> None:
    raw, caplog = logs
    assert_clean("\n".join(raw.lines), "Shadowgate's own log records")
    assert_clean(caplog.text, "the log as printed")


# ------------------------------------------------------------------ the helper


def test_redact_url_keeps_scheme_host_port_and_path_only():
    assert redact_url("https://bob:pw@prom.example:9090/api/x?sig=abc&k=v#frag") == \
        "https://***@prom.example:9090/api/x?***"
    assert redact_url("http://prom:9090") == "http://prom:9090"
    assert redact_url("https://token@h/p") == "https://***@h/p"
    assert redact_url("s3://bucket/golden.npz?versionId=3") == "s3://bucket/golden.npz?***"
    assert redact_url("http://[::1]:8080/x?y") == "http://[::1]:8080/x?***"
    assert redact_url("user:pw@model:8500") == "***@model:8500"  # host:port addresses too
    assert redact_url("127.0.0.1:8500") == "127.0.0.1:8500"
    assert redact_url("http://u:secretpass@h:99999/x?sig=SECRET") == "http://***@h:99999/x?***"  # bad port
    assert redact_url(None) == ""


def test_scrub_cuts_to_one_line_and_masks_every_secret():
    url = "http://user:secret%20pass@prom:9090/p?sig=SECRET&team=ml"
    body = ("error\n\tparse  failed for user:secret pass at " + url + " sig=SECRET " +
            "Authorization: Bearer abcdefghijklmnop " + "x" * 5000)
    out = scrub(body, url_secrets(url))
    assert len(out) == 200 and out.endswith("...") and "\n" not in out and "\t" not in out and "  " not in out
    for s in ("secret pass", "secret%20pass", "SECRET", "abcdefghijklmnop", "team=ml"):
        assert s not in out, out
    assert "error parse failed" in out
    # a request path's query (as urllib3 and requests quote it) is masked too
    assert scrub("Max retries exceeded with url: /api/v1/query?query=up&sig=x") == \
        "Max retries exceeded with url: /api/v1/query?***"
    assert scrub(b"bytes \xff body") == "bytes \ufffd body"


def test_the_log_filter_masks_registered_secrets_in_any_record():
    register("http://user:registeredpw@prom:9090/?sig=REGISTEREDSIG")
    out = _ListHandler()
    out.addFilter(SecretsFilter())
    log = logging.getLogger("tests.redaction.filter")
    log.addHandler(out)
    log.propagate = False
    try:
        log.warning("GET %s", "/api/v1/query?sig=REGISTEREDSIG&query=up")  # as urllib3 logs it
        try:
            raise RuntimeError("cannot reach http://user:registeredpw@prom:9090/")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(out)
        log.propagate = True
    text = "\n".join(out.lines)
    assert "REGISTEREDSIG" not in text and "registeredpw" not in text, text
    assert "GET /api/v1/query?***&query=up" in text and "RuntimeError" in text


# ------------------------------------------------------------------ Prometheus: CTR and the checks


def _prometheus_echoing_secrets(serve) -> Recorder:
    """A Prometheus that refuses every query with an error body quoting the secrets (and a lot more)."""
    def route(method, path, q, headers):
        body = json.dumps({"status": "error", "errorType": "bad_data",
                           "error": "denied for user:secretpass with sig=SECRET; " + "detail " * 800}).encode()
        return 400, {"Content-Type": "application/json"}, body
    return serve(route)


def _ctr(url: str) -> dict:
    return {"prometheus": url, "timeout_s": 2, "clicks": 'sum(increase(clicks{version="{version}"}[{window}]))',
            "impressions": 'sum(increase(impressions{version="{version}"}[{window}]))'}


def _prom_config(tmp_path, url: str, ctr_url: str | None = None) -> dict:
    cfg = base_config(tmp_path)
    for a in cfg["analyses"].values():
        a["prometheus"] = {"url": url, "timeout_s": 2}
        a["checks"]["prometheus"] = {"e": {"preset": "istio-5xx", "on_missing": "fail"}}
        if ctr_url:
            a["ctr"] = _ctr(ctr_url)
    return cfg


@pytest.mark.parametrize("down", [False, True], ids=["error-body", "refused"])
def test_prometheus_check_failures_are_scrubbed(tmp_path, serve, logs, down):
    from webhook.promchecks import source_for

    if down:
        url = f"http://user:secretpass@127.0.0.1:{free_port()}/prom?sig=SECRET"
    else:
        prom = _prometheus_echoing_secrets(serve)
        url = prom.secret_url("/prom")
    a = load_settings(_prom_config(tmp_path, url), tmp_path).analyses["digits"]
    src = source_for(a)
    try:
        got = src.fetch(30, time.time(), "prod", "podinfo")
    finally:
        src.close()
    why = got["e"].missing
    assert why, got
    assert_clean(why, "the check's missing reason")
    assert_clean(repr(src), "the source's repr")
    if down:
        assert why == f"Prometheus at http://***@127.0.0.1:{urlsplit(url).port}/prom?*** refused the connection"
    else:
        assert why.startswith("Prometheus query failed: PrometheusApiClientException: HTTP Status Code 400")
        assert "denied for" in why and len(why) <= len("Prometheus query failed: ") + 200, why
        # the credentials and the query went where they belong: basic auth and a parameter
        method, path, q, headers = prom.requests[0]
        assert path == "/prom/api/v1/query" and q["sig"] == ["SECRET"] and "query" in q
        assert headers["authorization"] == "Basic dXNlcjpzZWNyZXRwYXNz"  # user:secretpass
    assert_logs_clean(logs)


@pytest.mark.parametrize("down", [False, True], ids=["error-body", "refused"])
def test_ctr_failures_are_logged_scrubbed(tmp_path, serve, logs, down):
    from webhook.ctr import CtrSource

    if down:
        url = f"http://user:secretpass@127.0.0.1:{free_port()}/prom?sig=SECRET"
    else:
        url = _prometheus_echoing_secrets(serve).secret_url("/prom")
    cfg = base_config(tmp_path)
    cfg["analyses"]["digits"]["ctr"] = _ctr(url)
    a = load_settings(cfg, tmp_path).analyses["digits"]
    src = CtrSource(a.config.ctr, a.config.stable, a.config.canary)
    try:
        assert src.fetch(30) is None
    finally:
        src.close()
    warnings = [r.getMessage() for r in logs[1].records if r.name == "webhook.ctr"]
    assert warnings and all("http://***@127.0.0.1:" in w and "/prom?***" in w for w in warnings), warnings
    assert_logs_clean(logs)


def test_a_run_with_failing_sources_shows_no_secret_anywhere(make_app, tmp_path, serve, logs):
    """Answers, the run API (timeline, windows, report data), the report page and /metrics."""
    prom = _prometheus_echoing_secrets(serve)
    url = prom.secret_url("/prom")
    app = make_app(_prom_config(tmp_path, url, ctr_url=url), spec=GOOD)
    c = app.test_client()
    first = c.get(ARGO)
    assert first.status_code == 200
    svc = app.extensions["shadowgate"]
    deadline = time.time() + 5
    while not svc.sessions.active() and time.time() < deadline:
        time.sleep(0.01)
    s = svc.sessions.active()[0]
    s.golden_done.result(timeout=5)
    svc.sessions.call(s.close_window("interval"), 10)
    svc.sessions.call(s.close_window("interval"), 10)
    answer = c.get(ARGO)
    body = answer.json
    assert body["e"]["verdict"] == "fail" and "Prometheus query failed" in body["e"]["reason"], body["e"]
    assert_clean(answer.get_data(as_text=True), "the Argo answer")
    run = c.get(f"/api/v1/runs/{s.run.id}")
    assert run.status_code == 200 and run.json["timeline"]
    assert_clean(run.get_data(as_text=True), "the run API (timeline, windows, report)")
    assert_clean(c.get("/api/v1/runs").get_data(as_text=True), "the run list")
    report = c.get(f"/reports/{s.run.id}")
    assert report.status_code == 200
    assert_clean(report.get_data(as_text=True), "the report page")
    assert_clean(c.get("/metrics").get_data(as_text=True), "/metrics")
    assert prom.requests, "the sources were asked"
    assert_logs_clean(logs)


# ------------------------------------------------------------------ golden and reference URLs: secrets


def _data_config(golden: dict, reference: dict | None = None) -> dict:
    target = {"protocol": "tfserving-grpc", "address": "127.0.0.1:9", "model": "m"}
    a = {"stable": dict(target, label="stable"), "canary": dict(target, label="canary"), "golden": golden}
    if reference is not None:
        a["reference"] = reference
    return {"server": {"store": ":memory:"}, "analyses": {"d": a}}


def _npz_bytes(rows: int = 20, seed: int = 0) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, inputs=rng.random((rows, 4)).astype(np.float32), labels=rng.integers(0, 3, rows))
    return buf.getvalue()


@pytest.mark.parametrize("which", ["golden", "reference"])
@pytest.mark.parametrize("down", [False, True], ids=["404", "refused"])
def test_a_data_set_url_that_fails_shows_no_secret(tmp_path, serve, logs, which, down):
    (tmp_path / "g.npz").write_bytes(_npz_bytes())
    srv = serve(lambda *a: (404, {}, b"no such set, user:secretpass sig=SECRET"))
    url = f"http://user:secretpass@127.0.0.1:{free_port()}/g.npz?sig=SECRET" if down else srv.secret_url("/g.npz")
    ds = {"url": url, "timeout_s": 3, **LOCAL}
    cfg = _data_config(ds) if which == "golden" else _data_config({"path": "g.npz"}, ds)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, tmp_path)
    assert err.value.field == f"analyses.d.{which}.url"
    assert_clean(str(err.value), "the ConfigError")
    assert "http://***@127.0.0.1:" in err.value.message and "/g.npz?***" in err.value.message
    if not down:
        assert "HTTP 404" in err.value.message
        method, path, q, headers = srv.requests[0]  # the credentials were sent, as basic auth and sig
        assert q["sig"] == ["SECRET"] and headers["authorization"] == "Basic dXNlcjpzZWNyZXRwYXNz"
    assert_logs_clean(logs)


def test_the_start_up_error_prints_no_secret(tmp_path, serve, capsys):
    from webhook.serve import main

    srv = serve(lambda *a: (403, {}, b"forbidden: user:secretpass sig=SECRET"))
    cfg = _data_config({"url": srv.secret_url("/golden.npz"), "timeout_s": 3, **LOCAL})
    path = tmp_path / "analyses.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "configuration error: analyses.d.golden.url:" in err and "HTTP 403" in err, err
    assert_clean(err, "the start-up error")


def test_a_refused_re_read_is_logged_without_secrets(tmp_path, serve, logs):
    state = {"etag": "v1", "status": 200}

    def route(method, path, q, headers):
        if state["status"] != 200 and method == "GET":
            return state["status"], {}, b"broken for user:secretpass sig=SECRET"
        return 200, {"ETag": state["etag"]}, _npz_bytes()

    srv = serve(route)
    s = load_settings(_data_config({"url": srv.secret_url("/g.npz"), "reload_s": 0.1, "timeout_s": 3, **LOCAL}),
                      tmp_path)
    watcher = datasets.DataSetWatcher(s)
    assert watcher.check(force=True) == []
    state.update(etag="v2", status=500)
    assert watcher.check(force=True) == []  # refused: the previous set stays
    assert watcher.items[0].errors == 1
    errors = [r.getMessage() for r in logs[1].records if r.name == "shadowgate.datasets"]
    assert any("analyses.d.golden.url" in e and "HTTP 500" in e for e in errors), errors
    assert_logs_clean(logs)


def test_a_rest_model_server_address_is_shown_redacted(tmp_path, logs):
    from webhook.measure import LiveMeasurement

    cfg = base_config(tmp_path)
    address = f"http://user:secretpass@127.0.0.1:{free_port()}/?sig=SECRET"
    for role in ("stable", "canary"):
        cfg["analyses"]["digits"][role].update(protocol="tfserving-rest", address=address)
    a = load_settings(cfg, tmp_path).analyses["digits"]
    ok, reason, culprit = asyncio.run(LiveMeasurement(a).check_canary())
    assert not ok and culprit == "canary" and "http://***@127.0.0.1:" in reason, reason
    assert_clean(reason, "the canary check's reason")
    assert_logs_clean(logs)


# ------------------------------------------------------------------ golden URLs: where they may lead


def _load_golden(tmp_path, url: str, **extra):
    return load_settings(_data_config({"url": url, "timeout_s": 3, **extra}), tmp_path)


def _npz_route(method, path, q, headers):
    return 200, {"ETag": "v1"}, _npz_bytes()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/g.npz", "gopher://x/y",
                                 "FILE:///etc/passwd"])
def test_other_schemes_are_refused_naming_the_field(tmp_path, url):
    with pytest.raises(ConfigError) as err:
        _load_golden(tmp_path, url, **LOCAL)
    assert err.value.field == "analyses.d.golden.url"
    scheme = url.split(":", 1)[0].lower()
    assert f"refused: scheme {scheme}:// is not allowed" in err.value.message, err.value.message


def test_http_only_where_allowed_and_loopback_only_where_allowed(tmp_path, serve):
    srv = serve(_npz_route)
    url = f"{srv.url}/g.npz"
    with pytest.raises(ConfigError) as err:
        _load_golden(tmp_path, url, allow_private=True)
    assert err.value.field == "analyses.d.golden.url" and "allow_http: true" in err.value.message
    with pytest.raises(ConfigError) as err:
        _load_golden(tmp_path, url, allow_http=True)  # the default refuses private targets
    assert err.value.message == f"{url} refused: loopback address 127.0.0.1 (not allowed without " \
                                "allow_private: true, or a list of networks holding it)"
    with pytest.raises(ConfigError) as err:
        _load_golden(tmp_path, url, allow_http=True, allow_private=["10.0.0.0/8"])
    assert "loopback address" in err.value.message
    assert srv.requests == []  # nothing was sent before the refusals
    s = _load_golden(tmp_path, url, allow_http=True, allow_private=["127.0.0.0/8"])
    assert s.analyses["d"].golden_inputs.shape == (20, 4)
    assert [r[0] for r in srv.requests] == ["HEAD", "GET"]


def test_allow_private_must_be_networks(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load_golden(tmp_path, "https://data.example/g.npz", allow_private=["10.0.0.0/8", "nope"])
    assert err.value.field.startswith("analyses.d.golden.allow_private") and "'nope'" in err.value.message


@pytest.fixture
def two_hosts(serve):
    """`start` on 127.0.0.2, allowed by the policy; `target` on 127.0.0.1, a loopback address it refuses."""
    target = serve(_npz_route, host="127.0.0.1")
    hops = {}
    start = serve(lambda m, path, q, h: hops["route"](m, path, q, h), host="127.0.0.2")
    return start, target, hops


POLICY = {"allow_http": True, "allow_private": ["127.0.0.2/32"]}


def test_a_redirect_to_loopback_is_refused_before_it_connects(tmp_path, two_hosts):
    start, target, hops = two_hosts
    hops["route"] = lambda m, path, q, h: (302, {"Location": target.secret_url("/golden.npz")}, b"")
    with pytest.raises(ConfigError) as err:
        _load_golden(tmp_path, f"{start.url}/g.npz", **POLICY)
    assert err.value.field == "analyses.d.golden.url"
    assert err.value.message == (
        f"redirect 1 to http://***@127.0.0.1:{target.port}/golden.npz?*** (from {start.url}/g.npz) refused: "
        "loopback address 127.0.0.1 (not allowed without allow_private: true, or a list of networks holding it)")
    assert target.requests == []  # the refused target never saw a request: not HEAD, not GET
    assert [r[0] for r in start.requests] == ["HEAD"]
    assert_clean(str(err.value))


def test_every_hop_is_checked_not_only_the_first_redirect(tmp_path, two_hosts):
    start, target, hops = two_hosts
    # 127.0.0.2 -> 127.0.0.2 (allowed) -> 127.0.0.1 (refused): the second redirect is named
    hops["route"] = lambda m, path, q, h: ((302, {"Location": "/second"}, b"") if path == "/g.npz" else
                                           (307, {"Location": f"{target.url}/x"}, b""))
    with pytest.raises(ConfigError) as err:
        _load_golden(tmp_path, f"{start.url}/g.npz", **POLICY)
    assert err.value.message.startswith(f"redirect 2 to {target.url}/x (from {start.url}/second) refused: "
                                        "loopback address 127.0.0.1"), err.value.message
    assert target.requests == []


@pytest.mark.parametrize("location, why", [
    ("file:///etc/passwd", "scheme file:// is not allowed"),
    ("ftp://127.0.0.2/g.npz", "scheme ftp:// is not allowed"),
    ("http://169.254.169.254/latest/meta-data/", "link-local address 169.254.169.254"),
    ("http://10.1.2.3/g.npz", "private address 10.1.2.3"),
    ("http://[::1]:9/g.npz", "loopback address ::1"),
    ("http://0.0.0.0:9/g.npz", "unspecified address 0.0.0.0"),
    ("http://224.0.0.1/g.npz", "multicast address 224.0.0.1"),
    ("http://240.0.0.1/g.npz", "reserved address 240.0.0.1"),
])
def test_redirects_to_other_schemes_and_non_public_addresses_are_refused(tmp_path, two_hosts, location, why):
    start, target, hops = two_hosts
    hops["route"] = lambda m, path, q, h: (301, {"Location": location}, b"")
    with pytest.raises(ConfigError) as err:
        _load_golden(tmp_path, f"{start.url}/g.npz", **POLICY)
    assert err.value.message.startswith(f"redirect 1 to {redact_url(location)} (from {start.url}/g.npz) "
                                        f"refused: {why}"), err.value.message


def test_too_many_redirects_are_refused(tmp_path, two_hosts):
    start, target, hops = two_hosts
    hops["route"] = lambda m, path, q, h: (302, {"Location": f"/r{int(path.lstrip('/r') or 0) + 1}"}, b"")
    with pytest.raises(ConfigError) as err:
        _load_golden(tmp_path, f"{start.url}/r0", **POLICY)
    assert err.value.message == f"redirect 6 to {start.url}/r6 (from {start.url}/r5) refused: more than 5 redirects"
    assert [p for _, p, _, _ in start.requests] == [f"/r{i}" for i in range(6)]  # never asked for /r6
    # five are followed
    hops["route"] = lambda m, path, q, h: ((302, {"Location": f"/r{int(path[2:]) + 1}"}, b"") if path != "/r5"
                                           else _npz_route(m, path, q, h))
    assert _load_golden(tmp_path, f"{start.url}/r0", **POLICY).analyses["d"].golden_inputs.shape == (20, 4)


def test_credentials_go_to_the_configured_origin_only(tmp_path, serve):
    other = serve(_npz_route, host="127.0.0.3")
    start = serve(lambda m, path, q, h: ((302, {"Location": "/moved"}, b"") if path == "/g.npz" else
                                         (302, {"Location": f"{other.url}/g.npz"}, b"")), host="127.0.0.2")
    s = load_settings(_data_config({"url": start.secret_url("/g.npz"), "timeout_s": 3, "allow_http": True,
                                    "allow_private": ["127.0.0.2/32", "127.0.0.3/32"],
                                    "storage_options": {"headers": {"X-Api-Key": "secret-header-value"}}}),
                      tmp_path)
    assert s.analyses["d"].golden_inputs.shape == (20, 4)
    assert [p for _, p, _, _ in start.requests] == ["/g.npz", "/moved"] * 2  # HEAD, then GET
    assert all(h.get("authorization") == "Basic dXNlcjpzZWNyZXRwYXNz" and h.get("x-api-key") == "secret-header-value"
               for _, _, _, h in start.requests)  # the same origin, after a redirect too
    assert other.requests and all("authorization" not in h and "x-api-key" not in h for _, _, _, h in other.requests)


def test_an_unanswered_url_keeps_its_deadline(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts, never answers
    try:
        t = time.monotonic()
        with pytest.raises(ConfigError) as err:
            _load_golden(tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}/g.npz", **LOCAL, timeout_s=1)
        assert time.monotonic() - t < 3
        assert "no answer within timeout_s=1 s" in err.value.message
    finally:
        silent.close()


# ------------------------------------------------------------------ https


@pytest.fixture
def tls_cert(tmp_path, monkeypatch):
    """A self-signed certificate for 127.0.0.2, trusted through SSL_CERT_FILE (as a private CA would be)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shadowgate-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.2"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    return str(cert_file), str(key_file)


def test_https_is_read_and_a_downgrade_to_http_refused(tmp_path, serve, tls_cert):
    plain = serve(_npz_route, host="127.0.0.2")
    routes = {"/g.npz": _npz_route, "/down": lambda *a: (302, {"Location": f"{plain.url}/g.npz"}, b"")}
    secure = serve(lambda m, path, q, h: routes[path](m, path, q, h), host="127.0.0.2", tls=tls_cert)
    policy = {"allow_private": ["127.0.0.2/32"]}  # https only: allow_http is false
    assert _load_golden(tmp_path, f"{secure.url}/g.npz", **policy).analyses["d"].golden_inputs.shape == (20, 4)
    with pytest.raises(ConfigError) as err:
        _load_golden(tmp_path, f"{secure.url}/down", **policy)
    assert err.value.message.startswith(f"redirect 1 to {plain.url}/g.npz (from {secure.url}/down) refused: "
                                        "scheme http:// is not allowed"), err.value.message
    assert plain.requests == []


def test_an_untrusted_certificate_is_refused(tmp_path, serve, tls_cert, monkeypatch):
    secure = serve(_npz_route, host="127.0.0.2", tls=tls_cert)
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(ConfigError) as err:
        _load_golden(tmp_path, f"{secure.url}/g.npz", allow_private=True)
    assert "TLS failed: CERTIFICATE_VERIFY_FAILED" in err.value.message


# ------------------------------------------------------------------ the address policy


def test_which_addresses_a_policy_refuses():
    from webhook.safefetch import Policy

    default = Policy()
    assert default.address_refused("93.184.216.34") is None and default.address_refused("2606:4700::1") is None
    for address, why in [("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
                         ("10.0.0.1", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
                         ("fd00::1", "private"), ("169.254.169.254", "link-local"), ("fe80::1%2", "link-local"),
                         ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("224.0.0.1", "multicast"),
                         ("240.0.0.1", "reserved"), ("100.64.0.1", "non-public")]:
        assert (default.address_refused(address) or "").startswith(f"{why} address"), address
    anything = Policy(allow_private=True)
    assert anything.address_refused("10.0.0.1") is None and anything.address_refused("127.0.0.1") is None
    assert anything.address_refused("224.0.0.1") == "multicast address 224.0.0.1"  # never a server
    some = Policy(allow_private=("10.0.0.0/8",))
    assert some.address_refused("10.20.30.40") is None
    assert some.address_refused("192.168.1.1").startswith("private address")


def test_a_host_name_is_checked_by_what_it_resolves_to(tmp_path, serve):
    srv = serve(_npz_route)
    with pytest.raises(ConfigError) as err:
        _load_golden(tmp_path, f"http://localhost:{srv.port}/g.npz", allow_http=True)
    assert err.value.message.startswith(f"http://localhost:{srv.port}/g.npz refused: loopback address")
    assert srv.requests == []
