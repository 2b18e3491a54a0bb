"""One server process: gRPC and REST on one asyncio event loop.

Both transports share a `ServingCore` (models, faults, metrics). Model calls
run on a small thread pool; injected delays are asyncio sleeps, so neither
holds up other requests.
"""

from __future__ import annotations

import asyncio

import grpc
from aiohttp import web

from modelserver.core import ServingCore
from modelserver.grpc_service import add_services
from modelserver.rest import create_app


class BindError(Exception):
    """A port could not be bound (one-line message)."""


class ModelServer:
    """gRPC on `grpc_port`, REST on `rest_port` (0 = any free port) on `host`.

    reuse_port: bind both ports with SO_REUSEPORT, so several processes
    (each started with it) serve one address and the kernel spreads new
    connections over them, as pods behind one Service. Off: a taken port
    fails to bind.
    """

    def __init__(self, core: ServingCore, host: str = "127.0.0.1",
                 grpc_port: int = 8500, rest_port: int = 8501, reuse_port: bool = False) -> None:
        self.core = core
        self.host = host
        self.reuse_port = reuse_port
        self._grpc_port = grpc_port
        self._rest_port = rest_port
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind both ports and start serving; sets grpc_port and rest_port."""
        # so_reuseport off unless asked: a second server on a taken port must
        # fail, not silently share it.
        self._grpc = grpc.aio.server(options=[
            ("grpc.so_reuseport", 1 if self.reuse_port else 0),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ])
        add_services(self._grpc, self.core)
        address = f"{self._host_for_grpc()}:{self._grpc_port}"
        try:
            port = self._grpc.add_insecure_port(address)
        except RuntimeError as e:
            raise BindError(f"cannot bind gRPC port {address}: {e}") from None
        if not port:
            raise BindError(f"cannot bind gRPC port {address} (in use?)")
        self.grpc_port = port
        await self._grpc.start()

        # shutdown_timeout: a stalled request must not hold up a stop for
        # aiohttp's default 60 s.
        self._runner = web.AppRunner(create_app(self.core), access_log=None,
                                     handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._rest_port, backlog=1024,
                           reuse_port=True if self.reuse_port else None)
        try:
            await site.start()
        except OSError as e:
            await self.stop(0)
            raise BindError(f"cannot bind REST port {self.host}:{self._rest_port}: "
                            f"{e.strerror or e}") from None
        sockets = site._server.sockets if site._server else []  # noqa: SLF001 - aiohttp has no public accessor
        self.rest_port = sockets[0].getsockname()[1] if sockets else self._rest_port

    def _host_for_grpc(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    async def stop(self, grace_s: float = 1.0) -> None:
        """Stop both transports, letting requests in flight finish for up to grace_s seconds."""
        steps = []
        if self._runner is not None:
            steps.append(self._runner.cleanup())
            self._runner = None
        if self._grpc is not None:
            steps.append(self._grpc.stop(grace_s))
            self._grpc = None
        await asyncio.gather(*steps)
        self.core.close()

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"
