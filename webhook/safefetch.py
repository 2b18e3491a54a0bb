"""Fetching a configured http(s) URL without being led elsewhere: golden and reference sets.

Why not fsspec/aiohttp/requests for these: they follow redirects by
themselves, to any address (a redirect to 127.0.0.1 reached a local
listener, HEAD and GET, before anything could refuse it) and fsspec reads
`file://` as well. Here:

- every hop, the first URL included, is checked BEFORE anything connects:
  the scheme must be https (http only with `allow_http`), and every address
  the host resolves to must be public: no loopback, link-local, private
  (RFC 1918, fc00::/7, ...), unspecified, multicast or reserved address,
  unless `allow_private` is true (any) or lists networks (CIDR) that hold it;
- redirects (301, 302, 303, 307, 308) are followed by hand, at most
  `MAX_REDIRECTS`, each checked like the first;
- the connection goes to the address that was checked (no second DNS lookup,
  so a host cannot resolve to a public address for the check and a private
  one for the connection); TLS still verifies the certificate for the host
  name (SNI and hostname check as usual);
- credentials (the URL's userinfo, configured headers) go only to the
  original URL's origin (scheme, host and port): a redirect elsewhere is
  sent without them;
- one deadline (`timeout_s`) bounds the whole fetch: resolution, every
  connection, every hop and the body; nothing connects after it passed.
  Environment proxies are not used.

Every message shows URLs through `webhook.redact.redact_url` and names the
hop: "redirect 2 to http://127.0.0.1:8080/x (from https://data.example/g.npz)
refused: loopback address 127.0.0.1".
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from .redact import redact_url

__all__ = ["FetchError", "Policy", "Refused", "Response", "fetch", "MAX_REDIRECTS"]

MAX_REDIRECTS = 5
REDIRECT_CODES = (301, 302, 303, 307, 308)
_CHUNK = 1 << 16


class FetchError(Exception):
    """The fetch failed; the message names the hop, URLs redacted. `status`: the HTTP code, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.message, self.status = message, status
        super().__init__(message)


class Refused(FetchError):
    """A hop was refused before connecting: its scheme, its addresses, or one redirect too many."""


@dataclass(frozen=True)
class Policy:
    """What a fetch may reach. allow_private: True (any non-public address but multicast), False, or
    the networks (CIDR) allowed."""

    allow_http: bool = False
    allow_private: bool | tuple[str, ...] | list[str] = False
    networks: tuple[Any, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        if isinstance(self.allow_private, (list, tuple)):
            object.__setattr__(self, "networks",
                               tuple(ipaddress.ip_network(n, strict=False) for n in self.allow_private))

    @property
    def schemes(self) -> tuple[str, ...]:
        return ("https", "http") if self.allow_http else ("https",)

    def address_refused(self, address: str) -> str | None:
        """Why `address` may not be reached (None when it may)."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        why = _category(ip)
        if why is None:
            return None
        if why == "multicast address":  # never a server to fetch from, whatever allow_private says
            return f"{why} {ip}"
        if self.allow_private is True or any(ip.version == n.version and ip in n for n in self.networks):
            return None
        return f"{why} {ip} (not allowed without allow_private: true, or a list of networks holding it)"


def _category(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """None for a public (global unicast) address, else what it is."""
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_loopback:
        return "loopback address"
    if ip.is_link_local:
        return "link-local address"
    if ip.is_multicast:
        return "multicast address"
    if ip.is_reserved:
        return "reserved address"
    if ip.is_private:
        return "private address"
    if not ip.is_global:
        return "non-public address"
    return None


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    url: str  # the last hop's URL (not redacted: do not print it, print redact_url(url))
    hops: int  # redirects followed
    method: str  # GET or HEAD


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to one checked address; Host stays the URL's host."""

    def __init__(self, host: str, port: int, address: tuple, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection(self._address[:2], self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to one checked address; SNI and certificate check use the URL's host."""

    def __init__(self, host: str, port: int, address: tuple, timeout: float) -> None:
        self._tls = ssl.create_default_context()  # verifies the chain and the host name
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection(self._address[:2], self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _origin(u) -> tuple[str, str, int]:
    return (u.scheme, (u.hostname or "").lower(), u.port or (443 if u.scheme == "https" else 80))


def fetch(url: str, policy: Policy, timeout_s: float, *, method: str = "GET", max_bytes: int = 1 << 30,
          headers: dict[str, str] | None = None) -> Response:
    """GET (or HEAD) `url` under `policy` within `timeout_s` seconds; raises FetchError or Refused.

    A final answer other than 200 is a FetchError with its `status`. A body
    larger than `max_bytes` is a FetchError.
    """
    result: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s

    def run() -> None:
        try:
            result["ok"] = _fetch(url, policy, timeout_s, deadline, method, max_bytes, headers or {})
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = exc

    # getaddrinfo has no timeout of its own: the caller waits at most the deadline (plus a little).
    t = threading.Thread(target=run, name="safefetch", daemon=True)
    t.start()
    t.join(timeout_s + 0.5)
    if t.is_alive():
        raise FetchError(f"{redact_url(url)}: no answer within timeout_s={timeout_s:g} s")
    if "error" in result:
        exc = result["error"]
        if isinstance(exc, FetchError):
            raise exc
        raise FetchError(f"{redact_url(url)}: {type(exc).__name__}")  # never a library's text (it may quote the URL)
    return result["ok"]


def _fetch(url: str, policy: Policy, timeout_s: float, deadline: float, method: str, max_bytes: int,
           headers: dict[str, str]) -> Response:
    first = urlsplit(url)
    origin = _origin(first) if first.scheme in ("http", "https") else None
    basic = None
    if "@" in first.netloc:
        user, password = unquote(first.username or ""), unquote(first.password or "")
        basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    current, previous = url, None
    for hop in range(MAX_REDIRECTS + 2):
        where = (redact_url(current) if previous is None
                 else f"redirect {hop} to {redact_url(current)} (from {redact_url(previous)})")
        if hop > MAX_REDIRECTS:
            raise Refused(f"{where} refused: more than {MAX_REDIRECTS} redirects")
        u = urlsplit(current)
        scheme = u.scheme.lower()
        if scheme not in policy.schemes:
            allowed = "https only; http with allow_http: true" if not policy.allow_http else "http and https only"
            raise Refused(f"{where} refused: scheme {scheme + '://' if scheme else '(none)'} is not allowed "
                          f"({allowed})")
        try:
            host, port = u.hostname, u.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise Refused(f"{where} refused: not a valid host and port") from None
        if not host:
            raise Refused(f"{where} refused: no host")
        addresses = _resolve(host, port, where, deadline, timeout_s)
        for _, sockaddr in addresses:
            why = policy.address_refused(sockaddr[0])
            if why is not None:
                raise Refused(f"{where} refused: {why}")
        send = {"User-Agent": "shadowgate", "Accept-Encoding": "identity", "Connection": "close"}
        if origin is not None and _origin(u) == origin:  # credentials only to where they were configured
            send.update(headers)
            if basic is not None:
                send["Authorization"] = basic
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        status, reason, resp_headers, body = _exchange(scheme, host, port, addresses, method, target, send, where,
                                                       deadline, timeout_s, max_bytes)
        if status in REDIRECT_CODES and resp_headers.get("location"):
            previous, current = current, urljoin(current, resp_headers["location"].strip())
            continue  # GET and HEAD stay what they are on every redirect code
        if status != 200:
            raise FetchError(f"{where} answered HTTP {status} {reason}".rstrip(), status=status)
        return Response(status, resp_headers, body, current, hop, method)
    raise AssertionError("unreachable")  # pragma: no cover


def _remaining(deadline: float, where: str, timeout_s: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(f"{where}: no answer within timeout_s={timeout_s:g} s")
    return left


def _resolve(host: str, port: int, where: str, deadline: float, timeout_s: float) -> list[tuple]:
    _remaining(deadline, where, timeout_s)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"{where}: cannot resolve its host: {getattr(exc, 'strerror', None) or exc}") from None
    out = [(family, sockaddr) for family, _, _, _, sockaddr in infos]
    if not out:
        raise FetchError(f"{where}: its host resolves to no address")
    return out


def _exchange(scheme: str, host: str, port: int, addresses: list[tuple], method: str, target: str,
              headers: dict[str, str], where: str, deadline: float, timeout_s: float, max_bytes: int
              ) -> tuple[int, str, dict[str, str], bytes]:
    """One request to the first checked address that connects; the body read unless redirected."""
    last: BaseException | None = None
    for _, sockaddr in addresses:
        left = _remaining(deadline, where, timeout_s)  # nothing connects once the deadline passed
        cls = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
        conn = cls(host, port, sockaddr, timeout=left)
        try:
            try:
                conn.connect()
            except ssl.SSLError as exc:  # a certificate that does not verify is no reason to try elsewhere
                raise FetchError(f"{where}: TLS failed: {exc.reason or type(exc).__name__}") from None
            except OSError as exc:  # refused, unreachable: try the next address
                last = exc
                conn.close()
                continue
            conn.request(method, target, headers=headers)
            conn.sock.settimeout(_remaining(deadline, where, timeout_s))
            resp = conn.getresponse()
            resp_headers = {k.lower(): v for k, v in resp.getheaders()}
            body = b""
            if method != "HEAD" and resp.status == 200:
                chunks, size = [], 0
                while True:
                    # Each read waits at most the time left when the request went out; past the
                    # deadline the next chunk is not asked for.
                    _remaining(deadline, where, timeout_s)
                    chunk = resp.read1(_CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(f"{where} is larger than {max_bytes >> 20} MiB")
                    chunks.append(chunk)
                body = b"".join(chunks)
            resp.close()
            return resp.status, resp.reason or "", resp_headers, body
        except FetchError:
            raise
        except (TimeoutError, socket.timeout):
            raise FetchError(f"{where}: no answer within timeout_s={timeout_s:g} s") from None
        except ssl.SSLError as exc:
            raise FetchError(f"{where}: TLS failed: {exc.reason or type(exc).__name__}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"{where}: {type(exc).__name__}: {getattr(exc, 'strerror', None) or 'failed'}") from None
        finally:
            conn.close()
    reason = getattr(last, "strerror", None) or type(last).__name__
    raise FetchError(f"cannot reach {where}: {reason}")
