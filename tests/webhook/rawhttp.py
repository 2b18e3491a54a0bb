"""HTTP/1.1 over a bare socket, for tests that send what no HTTP library would (malformed,
half-sent, pipelined). Every call has a deadline."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    def json(self):
        return json.loads(self.body)


def connect(url_or_port, timeout_s: float = 5.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:<port> (or the port of an http://127.0.0.1:PORT url)."""
    port = url_or_port if isinstance(url_or_port, int) else int(str(url_or_port).rsplit(":", 1)[1].rstrip("/"))
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    s.settimeout(timeout_s)
    return s


def read_response(f, head_request: bool = False) -> Response | None:
    """One response from a socket file (interim 1xx answers skipped); None when the server closed first."""
    while True:
        line = f.readline(65537)
        if not line:
            return None
        parts = line.decode("latin-1").split(" ", 2)
        if not parts[0].startswith("HTTP/") or len(parts) < 2 or not parts[1].isdigit():
            return Response(0, {}, line + f.read())  # not HTTP: status 0, whatever came as the body
        status = int(parts[1])
        headers: dict[str, str] = {}
        while True:
            h = f.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if 100 <= status < 200:
            continue
        if head_request or status in (204, 304):
            return Response(status, headers, b"")
        if "content-length" in headers:
            n = int(headers["content-length"])
            body = f.read(n)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(f.readline().split(b";")[0], 16)
                if size == 0:
                    f.readline()
                    break
                body += f.read(size)
                f.readline()
        else:
            body = f.read()
        return Response(status, headers, body)


def exchange(port, data: bytes, *, responses: int = 1, timeout_s: float = 5.0,
             head_request: bool = False) -> list[Response]:
    """Send `data` on a new connection and read up to `responses` answers (fewer if the server closes)."""
    with connect(port, timeout_s) as s:
        s.sendall(data)
        f = s.makefile("rb")
        out = []
        for _ in range(responses):
            r = read_response(f, head_request)
            if r is None:
                break
            out.append(r)
        return out


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            host: str = "127.0.0.1") -> bytes:
    """A well-formed request's bytes (Content-Length set, connection closed after it)."""
    h = {"Host": host, "Connection": "close", **(headers or {})}
    if body or method in ("POST", "PUT", "PATCH"):
        h.setdefault("Content-Length", str(len(body)))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    return head.encode("latin-1") + body
