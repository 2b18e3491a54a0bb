"""Secrets never printed: URLs shown without credentials or query, error text cut and scrubbed.

Every URL from the configuration (a CTR or Prometheus-check source, a
golden or reference set, a model server's REST address) may carry a
password (`https://user:pass@host/`) or a signed query (`?sig=...`,
`?X-Amz-Signature=...`). Whatever the service prints (logs, exception and
ConfigError messages, timeline events, answers, reports) shows such a URL
through `redact_url`, and any foreign text that may quote it (an HTTP
library's exception, Prometheus' error body) through `scrub`:

    redact_url("https://bob:pw@prom:9090/api?sig=abc#x")  ->  "https://***@prom:9090/api?***"
    scrub(text, url_secrets(url))                          ->  one line, <= 200 chars, secrets as ***

`register(url)` adds a configured URL's secrets to a process-wide set that
`scrub` always applies and that `SecretsFilter` (installed on the log
handlers by `shadowgate serve`) applies to every log record, including
third-party ones (urllib3 logs request lines with their query at DEBUG).

Standard library only: loadtest (REST targets) uses it too.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Iterable
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

__all__ = ["MASK", "SecretsFilter", "exception_text", "install_log_filter", "option_secrets", "redact_url",
           "register", "register_secret", "scrub", "url_secrets"]

MASK = "***"
# Error bodies and exception texts are cut to this many characters.
LIMIT = 200
# Shorter strings are not treated as secrets (a query value `1` would mask every digit).
MIN_SECRET = 3
# The process-wide set applies to every log line: shorter values (`?dedup=true`) are masked only
# where a source scrubs its own errors; userinfo in any URL is masked everywhere regardless.
MIN_REGISTERED = 6

_SCHEME_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# In free text: userinfo of any URL, the query of any URL or request path, bearer/basic credentials.
_TEXT_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@'\"<>]+@")
_TEXT_QUERY = re.compile(r"(?i)((?:\b[a-z][a-z0-9+.-]*://[^\s/?#'\"<>]+)?/[^\s?#'\"<>]*)\?[^\s#'\"<>)]+")
_TEXT_AUTH = re.compile(r"(?i)\b(bearer|basic|token)(\s+|=|:\s*)([A-Za-z0-9._~+/=-]{8,})")

_registered: set[str] = set()
_lock = threading.Lock()


def redact_url(url: Any) -> str:
    """`scheme://host[:port]/path` with userinfo as `***@` and the whole query as `?***`; no fragment.

    Also takes `host:port` and `user:pass@host:port` (model server addresses).
    Never raises: a string it cannot parse is shown with everything up to
    its last `@` and from its first `?` masked.
    """
    if url is None:
        return ""
    text = str(url)
    if not _SCHEME_URL.match(text):  # host:port, or something that is not a URL at all
        return _redact_loose(text)
    try:
        u = urlsplit(text)
        host = u.hostname or ""
        port = u.port
    except ValueError:  # a bad port or IPv6 literal
        return _redact_loose(text)
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    out = f"{u.scheme}://"
    if "@" in u.netloc:
        out += f"{MASK}@"
    out += host + (f":{port}" if port is not None else "") + u.path
    if u.query or text.split("#", 1)[0].endswith("?"):
        out += f"?{MASK}"
    return out


def _redact_loose(text: str) -> str:
    text = text.split("#", 1)[0]
    m = _SCHEME_URL.match(text)
    scheme, text = (m.group(0), text[m.end():]) if m else ("", text)
    head, q, _ = text.partition("?")
    if "@" in head:
        head = f"{MASK}@" + head.rsplit("@", 1)[1]
    return scheme + head + (f"?{MASK}" if q else "")


def url_secrets(url: Any) -> set[str]:
    """What must never be printed of `url`: itself, its userinfo, password, query and query values.

    Each also percent-decoded (an HTTP library may print either form).
    """
    if not url:
        return set()
    text = str(url)
    out = {text, text.rstrip("/")} if redact_url(text) != text else set()  # nothing to hide in a plain URL
    try:
        u = urlsplit(text if _SCHEME_URL.match(text) else "//" + text)
        netloc, query = u.netloc, u.query
        password = u.password
    except ValueError:
        netloc, query, password = text.partition("?")[0], text.partition("?")[2], None
        if "@" in netloc:
            netloc = netloc.rsplit("@", 1)[0] + "@"
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        out.add(userinfo)
        if password is None and ":" in userinfo:
            password = userinfo.split(":", 1)[1]
        if password:
            out.add(password)
    query = query.split("#", 1)[0]
    if query:
        out.add(query)
        for _, value in parse_qsl(query, keep_blank_values=True):
            out.add(value)
        for part in query.split("&"):
            out.add(part.partition("=")[2])
    # as written, decoded, and encoded the ways HTTP clients encode parameters
    out |= {unquote(s) for s in out}
    out |= {quote(s, safe="") for s in out} | {quote_plus(s) for s in out}
    return {s for s in out if len(s) >= MIN_SECRET}


def option_secrets(options: Any, every: bool = False) -> list[str]:
    """String values of data-set options that may be credentials: keys, tokens, every header's value."""
    out: list[str] = []
    items = options.items() if isinstance(options, dict) else enumerate(options) if isinstance(options, list) else ()
    for key, value in items:
        if isinstance(value, (dict, list)):
            out += option_secrets(value, every or str(key).lower() == "headers")
        elif isinstance(value, str) and (every or re.search(r"(?i)key|secret|token|pass|auth|cred|sig|session",
                                                            str(key))):
            out.append(value)
            out += value.split()[1:]  # "Bearer <token>": the token alone too
    return out


def register(*urls: Any) -> None:
    """Remember configured URLs' secrets (userinfo, query) for `scrub` and the log filter."""
    found: set[str] = set()
    for url in urls:
        if url:
            found |= url_secrets(url)
    register_secret(*found)


def register_secret(*values: Any) -> None:
    """Remember plain secrets (a token, a configured key) for `scrub` and the log filter."""
    found = {str(v) for v in values if v and len(str(v)) >= MIN_REGISTERED}
    if found:
        with _lock:
            _registered.update(found)


def registered() -> frozenset[str]:
    with _lock:
        return frozenset(_registered)


def _mask(text: str, secrets: Iterable[str], patterns: bool = True) -> str:
    """Known secrets as ***, and URL userinfo; with `patterns`, also queries and credentials."""
    for s in sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True):
        if s in text:
            text = text.replace(s, MASK)
    text = _TEXT_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    if patterns:
        text = _TEXT_QUERY.sub(lambda m: f"{m.group(1)}?{MASK}", text)
        text = _TEXT_AUTH.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return text


def scrub(text: Any, secrets: Iterable[str] = (), limit: int | None = LIMIT) -> str:
    """`text` (an error body, an exception) as one line of at most `limit` characters, secrets as ***.

    Masks the given secrets and every registered one (longest first, before
    cutting, so no secret is left half-shown), any URL's userinfo and query
    (also of a bare request path such as `/api/v1/query?...`), and bearer,
    basic or token credentials. `bytes` are decoded leniently.
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    text = " ".join(str(text).split())
    text = _mask(text, set(secrets) | registered())
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text


def exception_text(exc: BaseException, secrets: Iterable[str] = (), limit: int | None = LIMIT) -> str:
    """`Type: message` of an exception, scrubbed and cut like `scrub`."""
    return scrub(f"{type(exc).__name__}: {exc}", secrets, limit)


class SecretsFilter(logging.Filter):
    """Scrubs every record a handler emits (message, arguments, traceback) of the registered secrets.

    Also masks any URL's userinfo; other queries (the Argo hook's
    `?rollout=...` in an access log) stay readable.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = registered()
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: leave it to the handler
            return True
        cleaned = _mask(message, secrets, patterns=False)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[0] is not None:
            # Format the traceback now, scrubbed; the formatter then uses exc_text as is.
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = _mask(text, secrets, patterns=False)
            record.exc_info = None
        return True


def install_log_filter(logger: logging.Logger | None = None) -> SecretsFilter:
    """Add a SecretsFilter to every handler of `logger` (the root logger by default)."""
    logger = logger or logging.getLogger()
    f = SecretsFilter()
    for handler in logger.handlers:
        if not any(isinstance(x, SecretsFilter) for x in handler.filters):
            handler.addFilter(f)
    return f
