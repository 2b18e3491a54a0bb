"""A seeded fuzz of `shadowgate serve` as it is deployed: a real process on 127.0.0.1.

H0: no input yields a 5xx, and every answer is JSON (the exceptions:
/metrics answers 200 in Prometheus' text format, which is its contract, and
the /reports pages are HTML or text for people, errors included; what the
HTTP layer refuses is JSON there too).
Requests are generated from one seed (FUZZ_SEED, default 9) over every
route and method, with valid, mutated and hostile payloads, query strings,
headers and framings (chunked, bad chunks, Expect: 100-continue,
pipelining, odd versions, long lines). FUZZ_REQUESTS sets how many
(default 5,000); a failure prints the request that caused it.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import random
import socket
from collections import Counter

import pytest
import yaml

from tests.webhook import rawhttp
from tests.webhook.conftest import TOKEN, base_config
from tests.webhook.service import start_service

SEED = int(os.environ.get("FUZZ_SEED", "9"))
REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "5000"))
CLIENTS = 8

HOOKS = ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion",
         "post-rollout", "rollback", "event")
PHASES = ("Initializing", "Initialized", "Waiting", "Progressing", "WaitingPromotion", "Promoting",
          "Finalising", "Succeeded", "Failed", "Terminating", "Terminated")
ROUTES = ("healthz", "readyz", "metrics", "flagger", "argo", "runs", "run", "reports", "other")
METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "FOO")

# Few valid identities: valid calls start real sessions, and they should stay few.
NAMES = ("digits", "podinfo")
CHECKSUMS = ("a1b2c3", "d4e5f6")

WEIRD_STRINGS = (
    "", " ", "digits\n", "digits\r\n", "\ndigits", "DIGITS", "digits ", "a" * 300, "ü", "\x00", "\u2028",
    "../../etc/passwd", "%2e%2e%2f", "1e999", "-1", "nan", "NaN", "inf", "-0", "0x10", "1_000", "null",
    "true", "😀" * 20, "<script>", "' OR 1=1 --", "${jndi:ldap://x}", "{{7*7}}", "run-0123456789abcdef",
    "run-" + "f" * 16 + "\n", "9" * 400, "٣", "Progressing\n",
)


def _string(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return rng.choice(WEIRD_STRINGS)
    if r < 0.7:
        return rng.choice(NAMES + CHECKSUMS + ("test", "prod", "canary", "stable", "50", "0.5"))
    n = rng.choice((1, 5, 40, 2000))
    return "".join(chr(rng.choice((rng.randint(32, 126), rng.randint(0, 0x2FF), rng.randint(0, 31))))
                   for _ in range(n))


def _value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if r < 0.3:
        return _string(rng)
    if r < 0.45:
        return rng.choice((0, 1, -1, 5, 10 ** rng.randint(1, 400), -(10 ** 309), 2 ** 63))
    if r < 0.55:
        return rng.choice((0.5, -0.0, 1e308, 1e-308, 3.14))
    if r < 0.65:
        return rng.choice((True, False, None))
    if depth > 3:
        return None
    if r < 0.8:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_string(rng): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _flagger_body(rng: random.Random, hook: str) -> dict:
    body = {"name": rng.choice(NAMES), "namespace": "test", "phase": rng.choice(PHASES),
            "checksum": rng.choice(CHECKSUMS)}
    meta: dict = {}
    if rng.random() < 0.5:
        meta["analysis"] = rng.choice(("digits", "podinfo", "nope"))
    if rng.random() < 0.3:
        meta["rate"] = rng.choice(("1", "5", "0", "-1", "1e999", "nan", "fast", "9" * 400, ""))
    if hook == "event":
        meta.update({"eventMessage": _string(rng), "eventType": rng.choice(("Normal", "Warning")),
                     "timestamp": str(rng.randint(0, 2 ** 41))})
    if meta or rng.random() < 0.5:
        body["metadata"] = meta
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
        op = rng.random()
        key = rng.choice(("name", "namespace", "phase", "checksum", "metadata", "extra"))
        if op < 0.3:
            body.pop(key, None)
        elif op < 0.8:
            body[key] = _value(rng)
        elif isinstance(body.get("metadata"), dict):
            body["metadata"][_string(rng)] = _value(rng)
    return body


def _argo_params(rng: random.Random) -> dict:
    params = {"rollout": "r1", "revision": rng.choice(("1", "2")), "namespace": "test"}
    for _ in range(rng.choice((0, 1, 2, 3))):
        key = rng.choice(("rollout", "revision", "namespace", "scope", "rate", "extra"))
        if rng.random() < 0.3:
            params.pop(key, None)
        else:
            params[key] = rng.choice((_value(rng), _string(rng), "run", "window", "5", 10 ** rng.randint(300, 400)))
    return params


def _query(rng: random.Random, params: dict) -> str:
    from urllib.parse import quote

    parts = [f"{quote(str(k))}={quote(v if isinstance(v, str) else json.dumps(v))}" for k, v in params.items()]
    if rng.random() < 0.1:
        parts.append(rng.choice(("%ZZ", "a=%00", "a=%FF%FE", "&&", "=", "rollout=r1&rollout=r2", "x" * 3000)))
    rng.shuffle(parts)
    return "&".join(parts)


def _body_bytes(rng: random.Random, obj) -> bytes:
    r = rng.random()
    if r < 0.8:
        try:
            return json.dumps(obj).encode()
        except ValueError:
            return b'{"name": 1}'
    return rng.choice((b"", b"{", b"[]", b"null", b"1", b'"x"', b"\xff\xfe{}", b"\xef\xbb\xbf{}", b"[" * 50000,
                       b'{"a":' * 3000, b"1" * 5000, b'{"rate": 1' + b"0" * 500 + b"}", b"{'a': 1}",
                       b'{"name": "digits", "name": "x"}', bytes(rng.randrange(256) for _ in range(64)),
                       b"x" * rng.choice((100, 5000, 70000))))


def _auth(rng: random.Random) -> dict:
    r = rng.random()
    if r < 0.7:
        return {"Authorization": f"Bearer {TOKEN}"}
    if r < 0.8:
        return {"Authorization": "Basic " + base64.b64encode(f"flagger:{TOKEN}".encode()).decode()}
    if r < 0.9:
        return {"Authorization": rng.choice(("Bearer", "Bearer wrong", "Basic !!!", "Basic " + "A" * 10,
                                             "Digest x", "Bearer " + TOKEN + "\t"))}
    return {}


def _route(rng: random.Random) -> tuple[str, str, str, bytes, dict]:
    """(family, method, target, body, headers) for one request."""
    family = rng.choice(ROUTES)
    method = rng.choice(("GET", "POST")) if rng.random() < 0.75 else rng.choice(METHODS)
    headers = {"Content-Type": rng.choice(("application/json", "application/json", "text/plain",
                                           "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
                                           "application/json; charset=latin-1"))}
    headers.update(_auth(rng))
    body = b""
    if family in ("healthz", "readyz", "metrics"):
        target = "/" + family + ("?" + _query(rng, {"x": _string(rng)}) if rng.random() < 0.2 else "")
    elif family == "flagger":
        hook = rng.choice(HOOKS) if rng.random() < 0.9 else _string(rng)
        method = "POST" if rng.random() < 0.85 else method
        target = "/flagger/" + _pathpart(rng, hook)
        body = _body_bytes(rng, _flagger_body(rng, hook))
    elif family == "argo":
        analysis = rng.choice(("digits", "podinfo")) if rng.random() < 0.85 else _string(rng)
        params = _argo_params(rng)
        if method == "POST" and rng.random() < 0.6:
            body = _body_bytes(rng, params)
            params = {k: v for k, v in params.items() if rng.random() < 0.3}
        target = f"/argo/v1/analyses/{_pathpart(rng, analysis)}?{_query(rng, params)}"
    elif family == "runs":
        params = {k: v for k, v in (("analysis", rng.choice(("digits", _string(rng)))),
                                    ("status", rng.choice(("running", "idle", "succeeded", _string(rng)))),
                                    ("limit", rng.choice(("1", "1000", "0", "-5", "1e3", _string(rng)))))
                  if rng.random() < 0.5}
        target = "/api/v1/runs" + ("?" + _query(rng, params) if params else "")
    elif family == "run":
        run_id = rng.choice(("run-0123456789abcdef", "run-" + "".join(rng.choice("0123456789abcdef")
                                                                       for _ in range(16)), _string(rng)))
        target = "/api/v1/runs/" + _pathpart(rng, run_id)
    elif family == "reports":
        run_id = rng.choice(("run-0123456789abcdef", _string(rng)))
        target = rng.choice((
            "/reports" + ("?" + _query(rng, {"analysis": rng.choice(("digits", _string(rng))),
                                             "status": _string(rng), "limit": _string(rng)}) if rng.random() < 0.6
                          else ""),
            f"/reports/{_pathpart(rng, run_id)}?format={rng.choice(('html', 'json', 'text', _string(rng)))}",
            f"/reports/{_pathpart(rng, run_id)}/drift?kind={_pathpart(rng, _string(rng))}",
            f"/reports/{_pathpart(rng, _string(rng))}/{_pathpart(rng, _string(rng))}"))
    else:
        target = rng.choice(("/", "//flagger/rollout", "/flagger/rollout/", "/flagger/", "/argo/v1/analyses/",
                             "/api/v1/runs/", "/api", "/%2e%2e/%2e%2e/etc/passwd", "/healthz/", "/metrics/x",
                             "/flagger/rollout%0A", "/" + "%FF" * 10, "/static/x.js", "*",
                             "http://shadowgate/flagger/event", "/" + "a" * rng.choice((10, 9000))))
        if rng.random() < 0.5:
            body = _body_bytes(rng, _value(rng))
    return family, method, target, body, headers


def _pathpart(rng: random.Random, text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="") if rng.random() < 0.9 else quote(text, safe="/%")


def _frame(rng: random.Random, method: str, target: str, body: bytes, headers: dict, last: bool) -> bytes:
    """The bytes on the wire, sometimes framed oddly."""
    version = "HTTP/1.1" if rng.random() < 0.95 else rng.choice(("HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.x"))
    h = {"Host": rng.choice(("127.0.0.1", "shadowgate.shadowgate:8080", "")) if rng.random() < 0.1
         else "127.0.0.1", **headers}
    if last:
        h["Connection"] = "close"
    r = rng.random()
    if r < 0.08 and body:  # chunked, well formed
        h["Transfer-Encoding"] = "chunked"
        chunks, i = [], 0
        while i < len(body):
            n = rng.randint(1, max(1, len(body)))
            chunks.append(b"%x\r\n%s\r\n" % (len(body[i:i + n]), body[i:i + n]))
            i += n
        payload = b"".join(chunks) + b"0\r\n\r\n"
    elif r < 0.12:  # chunked, malformed
        h["Transfer-Encoding"] = "chunked"
        payload = rng.choice((b"zz\r\n", b"5\r\nabcdefgh\r\n0\r\n\r\n", b"-1\r\n\r\n", b"ffffffffffffffffff\r\n",
                              b"3;ext=\x00\r\nabc\r\n0\r\n\r\n", b"3\r\nabc0\r\n\r\n", b"0\r\nX: y\r\n\r\n"))
    elif r < 0.15:  # Content-Length that lies or repeats
        payload = body
        h["Content-Length"] = rng.choice(("-1", "abc", "1 2", str(len(body)) + ", 3", "0x10", "99999999999999999999"))
    elif r < 0.18:
        h["Expect"] = "100-continue"
        h["Content-Length"] = str(len(body))
        payload = body
    else:
        h["Content-Length"] = str(len(body))
        payload = body
    lines = [f"{method} {target} {version}"]
    for k, v in h.items():
        if k == "Host" and v == "":
            continue
        lines.append(f"{k}: {v}")
    if rng.random() < 0.05:
        lines.append(rng.choice(("NoColon", " leading: space", "Bad Name: x", "X-Ctl: a\x01b", "X-Long: " + "l" * 40000,
                                 "Transfer-Encoding: gzip", "Upgrade: websocket", "Content-Length: 3")))
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8", "surrogateescape") + payload


def _cases(seed: int, n: int) -> list[tuple[list[str], bytes, list[str]]]:
    """n requests in cases of one or two (pipelined) requests: (families, bytes, methods)."""
    rng = random.Random(seed)
    cases, made = [], 0
    while made < n:
        count = 2 if rng.random() < 0.05 else 1
        families, data, methods = [], b"", []
        for i in range(count):
            family, method, target, body, headers = _route(rng)
            families.append(family)
            methods.append(method)
            data += _frame(rng, method, target, body, headers, last=i == count - 1)
        cases.append((families, data, methods))
        made += count
    return cases


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    cfg = base_config(d)
    cfg["server"].update({"auth": {"token": TOKEN}, "hook_deadline_s": 1.0, "read_timeout_s": 1.0, "threads": 16})
    for a in cfg["analyses"].values():
        a["load"] = {"rate": 1, "max_rate": 5, "concurrency": 4, "timeout_s": 0.5}
        a["probe"] = {"rate": 1, "timeout_s": 0.5}
        for t in ("stable", "canary"):
            a[t]["timeout_s"] = 0.5
    (d / "analyses.yaml").write_text(yaml.safe_dump(cfg))
    svc = start_service(d / "analyses.yaml", d, name="fuzz")
    try:
        # Start one session first: the session loop's thread is created with the first
        # session, and /readyz must not see it half-started while the fuzz runs.
        rawhttp.exchange(svc.url, rawhttp.request("GET", "/argo/v1/analyses/digits?rollout=warm&revision=1",
                                                  headers={"Authorization": f"Bearer {TOKEN}"}), timeout_s=10)
        yield svc
    finally:
        svc.stop()


def _send(port: int, case) -> tuple[list, list[rawhttp.Response] | Exception]:
    families, data, methods = case
    try:
        with rawhttp.connect(port, timeout_s=15) as s:
            try:
                s.sendall(data)
            except OSError:
                pass  # the server may answer and close before taking a huge body
            f = s.makefile("rb")
            out = []
            for m in methods:
                try:
                    r = rawhttp.read_response(f, head_request=(m == "HEAD"))
                except (ConnectionResetError, ValueError):
                    r = None
                if r is None:
                    break
                out.append(r)
            return case, out
    except (socket.timeout, OSError) as exc:
        return case, exc


def test_fuzz_every_route_no_5xx_every_body_json(service):
    port = int(service.url.rsplit(":", 1)[1])
    cases = _cases(SEED, REQUESTS)
    sent = Counter(f for c in cases for f in c[0])
    assert set(sent) == set(ROUTES) and min(sent.values()) > REQUESTS // 20, sent
    problems: list[str] = []
    statuses: Counter = Counter()
    answered = 0
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        for (families, data, methods), result in pool.map(lambda c: _send(port, c), cases):
            if isinstance(result, Exception):
                problems.append(f"{type(result).__name__} on {data[:200]!r}")
                continue
            if not result:
                problems.append(f"no answer to {data[:200]!r}")
                continue
            for i, r in enumerate(result):
                answered += 1
                statuses[r.status] += 1
                if r.status == 0:
                    problems.append(f"not an HTTP answer: {r.body[:120]!r} for {data[:300]!r}")
                    continue
                if r.status >= 500:
                    problems.append(f"{r.status} {r.body[:200]!r} for {data[:300]!r}")
                    continue
                if methods[i] == "HEAD" or r.status in (204, 304):
                    continue
                if r.body.startswith(b"# HELP") and families[i] == "metrics" and r.status == 200:
                    continue  # Prometheus text format is /metrics' contract
                if families[i] == "reports" and r.headers.get("content-type", "").startswith(("text/html",
                                                                                              "text/plain")):
                    continue  # pages for people
                try:
                    json.loads(r.body)
                except ValueError:
                    problems.append(f"not JSON ({r.status}): {r.body[:120]!r} for {data[:300]!r}")
    assert not problems, f"{len(problems)} problems (seed {SEED}), first ones:\n" + "\n".join(problems[:10])
    # Most cases are answered in full; a pipelined second request may go unanswered after a close.
    assert answered >= 0.97 * REQUESTS, (answered, statuses)
    assert requests_ok(service)
    print(f"fuzz seed {SEED}: {answered} answers, statuses {dict(sorted(statuses.items()))}")


def requests_ok(service) -> bool:
    """The service still answers normally after the fuzz."""
    (r,) = rawhttp.exchange(service.url, rawhttp.request("GET", "/healthz"))
    return r.status == 200 and r.json() == {"status": "ok"}


@pytest.mark.parametrize("data", [
    # A JSON integer too large for a float as Argo's rate (was OverflowError -> 500).
    rawhttp.request("POST", "/argo/v1/analyses/digits", json.dumps(
        {"rollout": "r1", "revision": "1", "rate": 10 ** 400}).encode(),
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}),
    # A malformed chunked body (was InvalidChunkSize -> 500).
    b"POST /flagger/rollout HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    b"nothex\r\n{}\r\n0\r\n\r\n",
    # An identifier with a trailing newline (was stored as a run: `$` matches before a final newline).
    rawhttp.request("POST", "/flagger/rollout", json.dumps(
        {"name": "digits\n", "namespace": "test", "checksum": "a1b2c3"}).encode(),
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}),
    rawhttp.request("GET", "/argo/v1/analyses/digits?rollout=r1&revision=1%0A",
                    headers={"Authorization": f"Bearer {TOKEN}"}),
])
def test_the_inputs_that_once_gave_500_or_were_accepted_are_400(service, data):
    (r,) = rawhttp.exchange(service.url, data)
    assert r.status == 400, r.body
    assert r.json()["status"] == 400
