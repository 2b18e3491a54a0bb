"""The HTTP front of `shadowgate serve`: asyncio reads whole requests, threads run the app.

Why this shape (see the README, "The HTTP front"): a thread-per-request
server (gunicorn gthread) gives a thread to a connection as soon as it is
accepted, so a client that never finishes its headers or body holds one of
`server.threads` threads; 16 such clients stopped every answer, /healthz
included. Here one asyncio loop owns every socket and parses HTTP/1.1 with
h11 (pure Python, a dependency already pinned); a thread is taken only for
a request that has fully arrived, within `read_timeout_s` of its first byte.
Slow or hostile connections therefore cost a coroutine and a buffer, never
a thread, and past `max_connections` the connection that has been reading
longest is closed to make room.

Work that cannot get a thread is refused, not left to time out: a request
waits at most `queue_timeout_s` (counted from its first byte) and only when
fewer than `max_queue` others are waiting; otherwise it gets a 503 JSON
answer with Retry-After at once. /healthz, /readyz and /metrics have their
own small lane, so probes and scrapes answer while hooks are busy.

Hooks (paths under `hook_prefixes`: /flagger/, /argo/) never get that 503:
Flagger counts any non-2xx of pre-rollout and rollout as a failed check and
Argo any non-2xx as a measurement Error (../shared/contracts.md), so
Shadowgate's own capacity must never answer with one. They wait in their
own, larger queue (`max_hook_queue`), served before other work, for up to
`hook_queue_timeout_s` from their first byte, and are answered within
`hook_answer_s` of it whatever the app does. A hook that finds no thread in
time (or whose app call runs past `hook_answer_s`) is answered by `busy`
(webhook.busy): a quick answer from in-memory state that the caller reads as
"wait" (confirm-* 412, rollback 409, Argo 200 Inconclusive) or "not judged
this time" (pre-rollout/rollout 200 unless the run already failed). Hooks
whose work must still happen (e.g. post-rollout gives a slot back) are
`deferred`: run on the next free thread after their answer, their result
dropped; at most `max_deferred` wait so.

Every answer is JSON in the service's one error shape (webhook.errors),
including what the HTTP layer itself refuses: 400 malformed request (bad
chunk sizes, bad headers, unsupported HTTP version), 408 read timeout, 413
body over `max_body_bytes`, 414 request line over 8 KiB, 431 headers over
32 KiB, 503 busy (never to a hook). No input reaches a 5xx except 503 for overload.

The app sees the arrival time in `environ["shadowgate.arrived"]`
(time.perf_counter() at the request's first byte), so deadlines count from
arrival, not from when a thread picked the request up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable, Iterable
from urllib.parse import unquote_to_bytes

import h11

from .errors import error_body

log = logging.getLogger(__name__)

# Paths answered on their own lane of threads: Kubernetes probes and scrapes
# must answer while every hook thread waits on a live check.
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

MAX_REQUEST_LINE = 8190  # bytes, as gunicorn's limit_request_line
MAX_HEADER_BYTES = 32 * 1024  # request line and headers together
READ_CHUNK = 64 * 1024

# Why the front answered a request itself (shadowgate_http_refused_total{reason}).
REFUSALS = ("queue_full", "queue_timeout", "read_timeout", "too_large", "bad_request", "evicted", "hook_busy",
            "hook_deferred", "hook_dropped")

# Who waits for a thread, served in this order when one frees (webhook/front.py, _Lane).
HOOK, DEFERRED, OTHER = 0, 1, 2

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


@dataclass(frozen=True)
class BusyAnswer:
    """What the front answers a hook it could not serve in time (see webhook.busy).

    defer: run the request on the app anyway once a thread frees (its answer is dropped).
    """

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    defer: bool = False


# busy(environ, body) -> BusyAnswer: called on the front's loop, so it must not block (in-memory reads only).
BusyFn = Callable[[dict, bytes], BusyAnswer]


@dataclass(frozen=True)
class FrontLimits:
    """How much the front accepts and for how long. Units: seconds, bytes, counts."""

    threads: int = 16  # app threads for hooks and the API
    ops_threads: int = 2  # app threads for /healthz, /readyz, /metrics
    read_timeout_s: float = 10.0  # a request's head and body must arrive within this of its first byte
    keepalive_s: float = 75.0  # an idle kept-alive connection is closed after this
    write_timeout_s: float = 10.0  # a client that does not take its answer within this is dropped
    max_connections: int = 1000  # beyond: the connection reading the longest is closed
    max_queue: int = 64  # requests waiting for a thread; beyond: 503 at once
    queue_timeout_s: float = 1.0  # waiting longer than this (from the first byte) for a thread: 503
    max_body_bytes: int = 64 * 1024
    max_request_line: int = MAX_REQUEST_LINE
    max_header_bytes: int = MAX_HEADER_BYTES
    graceful_timeout_s: float = 15.0  # on stop, requests in flight get this long to finish
    # Hooks (Flagger, Argo): never a 503 for Shadowgate's own capacity (see the module docstring).
    hook_prefixes: tuple[str, ...] = ("/flagger/", "/argo/")
    max_hook_queue: int = 1000  # hooks waiting for a thread; beyond: the busy answer at once
    hook_queue_timeout_s: float = 6.0  # a hook waiting longer (from its first byte): the busy answer
    hook_answer_s: float = 8.5  # every hook is answered within this of its first byte
    max_deferred: int = 256  # busy-answered hooks waiting to run anyway; beyond, they are dropped (logged)


class _Refuse(Exception):
    """A request the front answers itself, with an error body, and then closes the connection."""

    def __init__(self, status: int, message: str, field: str | None = None, *, reason: str,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.reason = status, message, field, reason
        self.headers = headers or []
        self.head_request = False  # an answer to HEAD carries no body


class _Closed(Exception):
    """The client went away (or stayed silent between requests): close without an answer."""


@dataclass
class _Request:
    method: str
    target: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    arrived: float  # perf_counter at the first byte


class _Lane:
    """A fixed number of app threads and a bounded, time-limited wait for one of them.

    Waiters come in classes (HOOK, DEFERRED, OTHER), each with its own bound; a freed thread goes to
    the oldest waiter of the first class that has one.
    """

    def __init__(self, name: str, threads: int, max_queue: int, max_hook_queue: int | None = None,
                 max_deferred: int = 0) -> None:
        self.name = name
        self.pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=f"front-{name}")
        self.free = threads
        self.max_queue = max_queue
        self.bounds = {HOOK: max_queue if max_hook_queue is None else max_hook_queue, DEFERRED: max_deferred,
                       OTHER: max_queue}
        self.queues: dict[int, list[asyncio.Future]] = {HOOK: [], DEFERRED: [], OTHER: []}

    @property
    def waiting(self) -> list[asyncio.Future]:
        return [f for q in self.queues.values() for f in q]

    async def acquire(self, deadline: float, kind: int = OTHER) -> None:
        """Take a thread, waiting until `deadline` (perf_counter) at most; _Refuse(503) otherwise."""
        if self.free > 0 and not any(self.queues.values()):
            self.free -= 1
            return
        queue = self.queues[kind]
        if len(queue) >= self.bounds[kind]:
            raise _Refuse(503, f"busy: all {self.name} threads are working and {len(queue)} requests"
                               " wait; try again", reason="queue_full", headers=[("Retry-After", "1")])
        fut = asyncio.get_running_loop().create_future()
        queue.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - time.perf_counter()))
        except asyncio.TimeoutError:
            if fut.done() and not fut.cancelled():
                return  # handed a thread at the last moment: keep it
            fut.cancel()
            raise _Refuse(503, "busy: no free thread within the queue timeout; try again",
                          reason="queue_timeout", headers=[("Retry-After", "1")]) from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()
            else:
                fut.cancel()
            raise
        finally:
            if fut in queue:
                queue.remove(fut)

    def release(self) -> None:
        for kind in (HOOK, DEFERRED, OTHER):
            queue = self.queues[kind]
            while queue:
                fut = queue.pop(0)
                if not fut.done():
                    fut.set_result(None)  # the thread passes straight to the next waiter
                    return
        self.free += 1


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _raw_response(status: int, body: bytes, headers: list[tuple[str, str]] = (), head_request: bool = False) -> bytes:
    """A complete HTTP/1.1 answer that closes the connection (used outside h11's state machine)."""
    lines = [f"HTTP/1.1 {status} {_phrase(status)}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_request else body)


def _json(status: int, message: str, field: str | None = None) -> bytes:
    return json.dumps(error_body(status, message, field), separators=(",", ":")).encode()


class _Metrics:
    """The front's own series, on the app's registry when one is given."""

    def __init__(self, registry: Any | None) -> None:
        self.enabled = registry is not None
        if not self.enabled:
            return
        from prometheus_client import Counter, Gauge

        self.connections = Gauge("shadowgate_http_connections", "Open client connections", registry=registry)
        self.in_flight = Gauge("shadowgate_http_requests_in_flight", "Requests running or waiting for a thread",
                               registry=registry)
        self.refused = Counter("shadowgate_http_refused", "Requests or connections the front answered itself "
                               "(reason: queue_full, queue_timeout, read_timeout, too_large, bad_request, "
                               "evicted, ...)", ["reason"], registry=registry)
        for reason in REFUSALS:
            self.refused.labels(reason)


class Front:
    """An HTTP/1.1 server for one WSGI app. `serve()` runs on an asyncio loop; `run()` blocks."""

    def __init__(self, app: WSGIApp, limits: FrontLimits = FrontLimits(), *, registry: Any | None = None,
                 busy: BusyFn | None = None) -> None:
        self.app = app
        self.limits = limits
        self.busy = busy  # answers hooks the app cannot serve in time; None: hooks are handled as other work
        self._deferred = 0  # busy-answered hooks waiting to run on the app
        self._main = _Lane("app", limits.threads, limits.max_queue, limits.max_hook_queue, limits.max_deferred)
        self._ops = _Lane("ops", limits.ops_threads, max(4, limits.max_queue // 4))
        self._metrics = _Metrics(registry)
        # Connections waiting for (part of) a request: task -> perf_counter when the wait began.
        self._reading: dict[asyncio.Task, float] = {}
        self._writers: dict[asyncio.Task, asyncio.StreamWriter] = {}  # every open connection
        self._servers: list[asyncio.base_events.Server] = []
        self._stopping = False
        self.sockname: Any = None

    # ---------------------------------------------------------------- life

    async def start(self, bind: str | None = None, *, sock: socket.socket | None = None) -> None:
        """Listen on `bind` ("host:port" or "unix:/path") or an already bound socket."""
        handler = self._connection
        if sock is not None:
            server = await asyncio.start_server(handler, sock=sock, limit=READ_CHUNK)
        elif bind is not None and bind.startswith("unix:"):
            path = bind[len("unix:"):]
            if os.path.exists(path):
                os.unlink(path)
            server = await asyncio.start_unix_server(handler, path=path, limit=READ_CHUNK)
        else:
            host, _, port = (bind or "127.0.0.1:8080").rpartition(":")
            host = host.strip("[]") or "0.0.0.0"
            server = await asyncio.start_server(handler, host=host, port=int(port), limit=READ_CHUNK,
                                                reuse_address=True, backlog=1024)
        self._servers.append(server)
        self.sockname = server.sockets[0].getsockname() if server.sockets else None

    async def stop(self) -> None:
        """Stop accepting, close idle connections, let requests in flight finish (graceful_timeout_s)."""
        self._stopping = True
        for server in self._servers:
            server.close()
        for task in list(self._reading):
            self._abort(task)  # waiting for a request: nothing to finish
        pending = [t for t in self._writers if not t.done()]
        if pending:
            done, pending = await asyncio.wait(pending, timeout=self.limits.graceful_timeout_s)
            for t in pending:
                self._abort(t)
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
        self._main.pool.shutdown(wait=False, cancel_futures=True)
        self._ops.pool.shutdown(wait=False, cancel_futures=True)

    def run(self, bind: str) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully. Blocks the calling (main) thread."""

        async def main() -> None:
            done = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, done.set)
            await self.start(bind)
            log.info("listening on %s", bind)
            await done.wait()
            log.info("stopping: %d connections open", len(self._writers))
            await self.stop()

        asyncio.run(main())

    # ---------------------------------------------------------- connections

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._writers[task] = writer
        if self._metrics.enabled:
            self._metrics.connections.inc()
        try:
            if self._stopping:
                return
            if len(self._writers) > self.limits.max_connections:
                self._evict(task)
            await self._serve_connection(reader, writer, task)
        except (asyncio.CancelledError, _Closed, ConnectionError, OSError):
            pass
        except Exception:
            log.exception("front: connection failed")
        finally:
            self._reading.pop(task, None)
            self._writers.pop(task, None)
            if self._metrics.enabled:
                self._metrics.connections.dec()
            try:
                writer.close()
            except Exception:
                pass

    def _evict(self, newcomer: asyncio.Task) -> None:
        """Make room: close the connection that has been waiting for its request the longest."""
        candidates = [(since, t) for t, since in self._reading.items() if t is not newcomer]
        if not candidates:
            return  # every connection is being answered: the newcomer waits its turn like them
        _, oldest = min(candidates, key=lambda c: c[0])
        self._reading.pop(oldest, None)
        self._abort(oldest)
        if self._metrics.enabled:
            self._metrics.refused.labels("evicted").inc()

    def _abort(self, task: asyncio.Task) -> None:
        """Drop a connection now: its reader sees the end of the stream and the task ends on its own."""
        writer = self._writers.get(task)
        if writer is not None:
            writer.transport.abort()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                task: asyncio.Task) -> None:
        lim = self.limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=lim.max_header_bytes)
        first = True
        peer = writer.get_extra_info("peername")
        while not self._stopping:
            # A new connection must send its request promptly; a kept-alive one may idle.
            idle_s = lim.read_timeout_s if first else lim.keepalive_s
            self._reading[task] = time.perf_counter()
            try:
                req = await self._read_request(conn, reader, writer, idle_s)
            except _Refuse as refuse:
                if self._metrics.enabled:
                    self._metrics.refused.labels(refuse.reason).inc()
                await self._send_raw(writer, refuse)
                return
            finally:
                self._reading.pop(task, None)
            first = False
            status, headers, body = await self._dispatch(req, peer, writer)
            close = self._stopping or status >= 400 and conn.their_state is not h11.DONE
            if close:
                headers = [h for h in headers if h[0].lower() != "connection"] + [("Connection", "close")]
            await self._send(conn, writer, req, status, headers, body)
            if close or conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, idle_s: float) -> _Request:
        """Read one whole request (head and body) or raise _Refuse / _Closed."""
        head = bytearray()  # bytes before the request line ends, to tell 414 from 431
        try:
            return await self._read_request_into(conn, reader, writer, idle_s, head)
        except _Refuse as refuse:
            refuse.head_request = bytes(head[:5]) == b"HEAD "
            raise

    async def _read_request_into(self, conn: h11.Connection, reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter, idle_s: float, head: bytearray) -> _Request:
        lim = self.limits
        arrived: float | None = None
        req: h11.Request | None = None
        body = bytearray()
        idle_deadline = time.perf_counter() + idle_s
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._protocol_error(exc, head, req is not None) from None
            if event is h11.NEED_DATA:
                if req is None and b"\n" not in head and len(head) > lim.max_request_line:
                    raise _Refuse(414, f"request line longer than {lim.max_request_line} bytes", "url",
                                  reason="too_large")
                now = time.perf_counter()
                deadline = idle_deadline if arrived is None else arrived + lim.read_timeout_s
                if now >= deadline:
                    self._timed_out(arrived)
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), deadline - now)
                except asyncio.TimeoutError:
                    self._timed_out(arrived)
                if not data:
                    raise _Closed()
                if arrived is None:
                    arrived = time.perf_counter()
                if req is None and len(head) <= lim.max_request_line:
                    head += data[: lim.max_request_line + 2]
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                req = event
                if arrived is None:  # pipelined: it was already in the buffer
                    arrived = time.perf_counter()
                self._check_head(req)
                if conn.client_is_waiting_for_100_continue:
                    await self._write(conn.send(h11.InformationalResponse(status_code=100, headers=[])), writer)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > lim.max_body_bytes:
                    raise _Refuse(413, f"request body larger than {lim.max_body_bytes} bytes", "body",
                                  reason="too_large")
            elif isinstance(event, h11.EndOfMessage):
                assert req is not None
                return _Request(req.method.decode("latin-1"), bytes(req.target), bytes(req.http_version),
                                list(req.headers), bytes(body), arrived)
            elif isinstance(event, h11.ConnectionClosed):
                raise _Closed()
            else:  # PAUSED cannot happen before our answer; anything else is a client error
                raise _Refuse(400, "unexpected data before the request", reason="bad_request")

    def _timed_out(self, arrived: float | None):
        if arrived is None:
            raise _Closed()  # silent between requests: close quietly
        raise _Refuse(408, f"request not received within {self.limits.read_timeout_s:g} s of its first byte",
                      reason="read_timeout")

    def _protocol_error(self, exc: h11.RemoteProtocolError, head: bytearray, have_request: bool) -> _Refuse:
        hint = exc.error_status_hint
        if hint == 431 and not have_request:
            first_line = bytes(head).split(b"\n", 1)[0]
            if b"\n" not in head or len(first_line) > self.limits.max_request_line:
                return _Refuse(414, f"request line longer than {self.limits.max_request_line} bytes", "url",
                               reason="too_large")
            return _Refuse(431, f"request headers larger than {self.limits.max_header_bytes} bytes", "headers",
                           reason="too_large")
        message = re.sub(r"bytearray\((b['\"].*?['\"])\)", r"\1", str(exc) or "malformed request")[:200]
        # h11 hints 501/505 for an unknown transfer coding or version: the client's fault, so 400.
        return _Refuse(400, f"malformed HTTP request: {message}", "body" if have_request else None,
                       reason="bad_request")

    def _check_head(self, req: h11.Request) -> None:
        lim = self.limits
        if req.http_version not in (b"1.0", b"1.1"):
            raise _Refuse(400, f"HTTP/{req.http_version.decode('latin-1')[:8]} is not supported: use HTTP/1.1",
                          reason="bad_request")
        if len(req.target) > lim.max_request_line:
            raise _Refuse(414, f"request line longer than {lim.max_request_line} bytes", "url", reason="too_large")
        # h11 bounds only what is still incomplete; a head that arrived in one read is counted here.
        if len(req.target) + sum(len(n) + len(v) + 4 for n, v in req.headers) > lim.max_header_bytes:
            raise _Refuse(431, f"request headers larger than {lim.max_header_bytes} bytes", "headers",
                          reason="too_large")
        if not (req.target.startswith(b"/") or req.target.startswith(b"http://")
                or req.target.startswith(b"https://") or req.target == b"*"):
            raise _Refuse(400, "malformed request target: expected a path starting with '/'", "url",
                          reason="bad_request")
        for name, value in req.headers:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise _Refuse(400, "malformed Content-Length", "Content-Length", reason="bad_request") from None
                if length > lim.max_body_bytes:
                    raise _Refuse(413, f"request body larger than {lim.max_body_bytes} bytes", "body",
                                  reason="too_large")

    # -------------------------------------------------------------- dispatch

    async def _dispatch(self, req: _Request, peer: Any, writer: asyncio.StreamWriter
                        ) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            environ = self._environ(req, peer, writer)
        except _Refuse as refuse:
            if self._metrics.enabled:
                self._metrics.refused.labels(refuse.reason).inc()
            return refuse.status, [("Content-Type", "application/json"), *refuse.headers], \
                _json(refuse.status, refuse.message, refuse.field)
        path = environ["PATH_INFO"]
        if self.busy is not None and path.startswith(self.limits.hook_prefixes):
            return await self._dispatch_hook(req, peer, writer, environ)
        lane = self._ops if path in OPS_PATHS else self._main
        if self._metrics.enabled:
            self._metrics.in_flight.inc()
        try:
            try:
                await lane.acquire(req.arrived + self.limits.queue_timeout_s)
            except _Refuse as refuse:
                if self._metrics.enabled:
                    self._metrics.refused.labels(refuse.reason).inc()
                log.warning("front: %s %s refused: %s", req.method, path[:80], refuse.message)
                return refuse.status, [("Content-Type", "application/json"), *refuse.headers], \
                    _json(refuse.status, refuse.message, refuse.field)
            environ["shadowgate.queued_s"] = time.perf_counter() - req.arrived
            fut = self._run(lane, environ)
            if fut is None:
                return 503, [("Content-Type", "application/json")], _json(503, "stopping")
            return await asyncio.shield(fut)
        finally:
            if self._metrics.enabled:
                self._metrics.in_flight.dec()

    def _run(self, lane: _Lane, environ: dict[str, Any]) -> asyncio.Future | None:
        """Run the app on a thread already taken from `lane`; None when the pool is shut down (stopping)."""
        try:
            fut = asyncio.get_running_loop().run_in_executor(lane.pool, self._call_app, environ)
        except RuntimeError:  # pool shut down: stopping
            lane.release()
            return None
        # The thread goes back only when the app is done, even if this connection is cancelled meanwhile.
        fut.add_done_callback(lambda _f: lane.release())
        return fut

    async def _dispatch_hook(self, req: _Request, peer: Any, writer: asyncio.StreamWriter,
                             environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        """A hook: its own queue, answered within hook_answer_s of its first byte, never a 503 for capacity."""
        lim, lane = self.limits, self._main
        if self._metrics.enabled:
            self._metrics.in_flight.inc()
        try:
            try:
                await lane.acquire(req.arrived + min(lim.hook_queue_timeout_s, lim.hook_answer_s), HOOK)
            except _Refuse as refuse:
                return self._busy(req, peer, writer, environ, f"no free thread ({refuse.reason})", defer=True)
            environ["shadowgate.queued_s"] = time.perf_counter() - req.arrived
            fut = self._run(lane, environ)
            if fut is None:
                return self._busy(req, peer, writer, environ, "stopping", defer=False)
            left = req.arrived + lim.hook_answer_s - time.perf_counter()
            try:
                return await asyncio.wait_for(asyncio.shield(fut), max(0.0, left))
            except asyncio.TimeoutError:  # the app goes on; its answer is dropped
                return self._busy(req, peer, writer, environ, "the app did not answer in time", defer=False)
        finally:
            if self._metrics.enabled:
                self._metrics.in_flight.dec()

    def _busy(self, req: _Request, peer: Any, writer: asyncio.StreamWriter, environ: dict[str, Any],
              why: str, *, defer: bool) -> tuple[int, list[tuple[str, str]], bytes]:
        """The busy answer of a hook (and, if it asks for it, its request queued to run anyway)."""
        assert self.busy is not None
        try:
            ans = self.busy(environ, req.body)
        except Exception:
            log.exception("front: the busy answer failed on %s", environ["PATH_INFO"][:80])
            ans = BusyAnswer(200, _json(200, "Shadowgate is busy: not answered this time"))
        if self._metrics.enabled:
            self._metrics.refused.labels("hook_busy").inc()
        log.warning("front: %s %s answered %d by the busy path: %s", req.method, environ["PATH_INFO"][:80],
                    ans.status, why)
        if defer and ans.defer:
            if self._deferred < self.limits.max_deferred:
                self._deferred += 1
                if self._metrics.enabled:
                    self._metrics.refused.labels("hook_deferred").inc()
                asyncio.get_running_loop().create_task(self._run_deferred(self._environ(req, peer, writer)))
            else:
                if self._metrics.enabled:
                    self._metrics.refused.labels("hook_dropped").inc()
                log.warning("front: %s %s not run: %d deferred hooks wait already", req.method,
                            environ["PATH_INFO"][:80], self._deferred)
        return ans.status, [("Content-Type", "application/json"), *ans.headers], ans.body

    async def _run_deferred(self, environ: dict[str, Any]) -> None:
        """Run a busy-answered hook once a thread frees (after the live hooks); its answer is dropped."""
        environ["shadowgate.deferred"] = True
        try:
            await self._main.acquire(time.perf_counter() + max(60.0, self.limits.graceful_timeout_s), DEFERRED)
        except (_Refuse, asyncio.CancelledError):
            self._deferred -= 1
            log.warning("front: deferred %s %s not run: no thread within 60 s", environ["REQUEST_METHOD"],
                        environ["PATH_INFO"][:80])
            return
        self._deferred -= 1
        fut = self._run(self._main, environ)
        if fut is not None:
            try:
                await asyncio.shield(fut)
            except Exception:
                pass

    def _environ(self, req: _Request, peer: Any, writer: asyncio.StreamWriter) -> dict[str, Any]:
        target = req.target
        if target.startswith((b"http://", b"https://")):
            rest = target.split(b"://", 1)[1]
            slash = rest.find(b"/")
            target = rest[slash:] if slash >= 0 else b"/"
        path, _, query = target.partition(b"?")
        path = path.split(b"#", 1)[0]
        sock = writer.get_extra_info("sockname")
        server_name, server_port = ("", "")
        if isinstance(sock, tuple) and len(sock) >= 2:
            server_name, server_port = str(sock[0]), str(sock[1])
        environ: dict[str, Any] = {
            "REQUEST_METHOD": req.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "RAW_URI": req.target.decode("latin-1"),
            "SERVER_NAME": server_name or "localhost",
            "SERVER_PORT": server_port or "0",
            "SERVER_PROTOCOL": "HTTP/" + req.http_version.decode("latin-1"),
            "REMOTE_ADDR": str(peer[0]) if isinstance(peer, tuple) else "",
            "REMOTE_PORT": str(peer[1]) if isinstance(peer, tuple) and len(peer) > 1 else "",
            "CONTENT_LENGTH": str(len(req.body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(req.body),
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "shadowgate.arrived": req.arrived,
        }
        for name, value in req.headers:
            key = name.decode("latin-1")
            if "_" in key:
                continue  # X_Forwarded would alias X-Forwarded in the environ: drop, as gunicorn does
            key = key.upper().replace("-", "_")
            text = value.decode("latin-1")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = text
                continue
            if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                continue  # the body is read whole: its length is CONTENT_LENGTH above
            key = "HTTP_" + key
            environ[key] = f"{environ[key]},{text}" if key in environ else text
        return environ

    def _call_app(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        """Run the WSGI app in a worker thread; the whole answer is collected (answers are small)."""
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
            if exc_info is not None and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        try:
            result = self.app(environ, start_response)
            try:
                for chunk in result:
                    chunks.append(chunk)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            status = int(str(started[0]).split(" ", 1)[0])
            return status, [(str(k), str(v)) for k, v in started[1]], b"".join(chunks)
        except Exception as exc:
            log.exception("front: the app failed on %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            return 500, [("Content-Type", "application/json")], _json(500, f"internal error: {type(exc).__name__}")

    # --------------------------------------------------------------- writing

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, req: _Request, status: int,
                    headers: list[tuple[str, str]], body: bytes) -> None:
        if req.method == "HEAD":
            body = b""
        else:
            headers = [h for h in headers if h[0].lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        headers = [h for h in headers if h[0].lower() != "transfer-encoding"]
        try:
            data = conn.send(h11.Response(status_code=status, headers=headers, reason=_phrase(status).encode()))
            if body:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            log.exception("front: cannot encode the answer to %s", req.method)
            raise _Closed() from None
        await self._write(data, writer)

    async def _write(self, data: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        try:
            await asyncio.wait_for(writer.drain(), self.limits.write_timeout_s)
        except asyncio.TimeoutError:
            raise _Closed() from None

    async def _send_raw(self, writer: asyncio.StreamWriter, refuse: _Refuse) -> None:
        try:
            await self._write(_raw_response(refuse.status, _json(refuse.status, refuse.message, refuse.field),
                                            refuse.headers, refuse.head_request), writer)
        except (_Closed, ConnectionError, OSError):
            pass


class FrontThread:
    """A Front on its own loop in a background thread, for tests and embedding: `url`, `stop()`."""

    def __init__(self, app: WSGIApp, limits: FrontLimits = FrontLimits(), *, bind: str = "127.0.0.1:0",
                 registry: Any | None = None, busy: BusyFn | None = None) -> None:
        self.front = Front(app, limits, registry=registry, busy=busy)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="front", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.front.start(bind), self._loop).result(10)
        host, port = self.front.sockname[:2]
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.front.stop(), self._loop).result(
                self.front.limits.graceful_timeout_s + 5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    def __enter__(self) -> "FrontThread":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
