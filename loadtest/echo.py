"""A minimal model server that answers every Predict with one fixed response.

It does no model work, so load against it measures the load generator's
own limit (and the transport's), not a model's. It speaks TF Serving's gRPC
Predict and REST predict, and can inject simple faults for tests:

- delay_s: added to every answer, seconds;
- stall_every_s / stall_for_s: a periodic pause (like a GC pause or a
  noisy neighbour): a request arriving inside the pause is held until the
  pause ends;
- error_ratio (0..1) with error_code (a gRPC status name): that share of
  requests fails with that status (REST: TF Serving's HTTP code for it).

Run: `python -m loadtest.echo --grpc-port 0 --rest-port 0`; it prints one
JSON line with the bound ports, then serves on 127.0.0.1 until stdin closes
or it gets SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from loadtest.errors import GRPC_TO_HTTP
from loadtest.wire import encode_predict_response

HOST = "127.0.0.1"


@dataclass
class Faults:
    """Fault settings (seconds, ratio 0..1, gRPC status name)."""

    delay_s: float = 0.0
    stall_every_s: float = 0.0
    stall_for_s: float = 0.0
    error_ratio: float = 0.0
    error_code: str = "UNAVAILABLE"

    def hold_s(self, now: float) -> float:
        """Seconds a request arriving at `now` (monotonic) waits before it is answered."""
        wait = self.delay_s
        if self.stall_every_s > 0 and self.stall_for_s > 0:
            into = now % self.stall_every_s
            if into < self.stall_for_s:
                wait += self.stall_for_s - into
        return wait


def fixed_outputs(classes: int = 10) -> dict[str, np.ndarray]:
    """A digits-like answer: uniform probabilities and class 0."""
    return {"probabilities": np.full((1, classes), 1.0 / classes, np.float32),
            "classes": np.zeros(1, np.int64)}


class EchoServer:
    """gRPC and/or REST endpoints answering a fixed PredictResponse (asyncio, one process)."""

    def __init__(self, faults: Faults | None = None, model: str = "digits", version: int = 1) -> None:
        self.faults = faults or Faults()
        self.model = model
        self.version = version
        outputs = fixed_outputs()
        self._grpc_body = encode_predict_response(outputs, model, version)
        self._rest_body = json.dumps({"outputs": {k: v.tolist() for k, v in outputs.items()}}).encode()
        self._rng = random.Random(0)
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self._grpc_server = None
        self._rest_runner = None
        self.requests = 0

    async def _hold(self) -> str | None:
        f = self.faults
        wait = f.hold_s(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
        if f.error_ratio > 0 and self._rng.random() < f.error_ratio:
            return f.error_code
        return None

    async def start(self, grpc_port: int | None = 0, rest_port: int | None = 0) -> "EchoServer":
        """Bind 127.0.0.1 (port 0 = any free port); None skips that protocol."""
        if grpc_port is not None:
            import grpc

            async def predict(request: bytes, context) -> bytes:
                self.requests += 1
                code = await self._hold()
                if code:
                    await context.abort(grpc.StatusCode[code], f"injected {code}")
                return self._grpc_body

            handler = grpc.method_handlers_generic_handler(
                "tensorflow.serving.PredictionService",
                {"Predict": grpc.unary_unary_rpc_method_handler(predict)})
            server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            server.add_generic_rpc_handlers((handler,))
            self.grpc_port = server.add_insecure_port(f"{HOST}:{grpc_port}")
            await server.start()
            self._grpc_server = server
        if rest_port is not None:
            from aiohttp import web

            async def rest_predict(request: web.Request) -> web.Response:
                self.requests += 1
                await request.read()
                code = await self._hold()
                if code:
                    return web.json_response({"error": f"injected {code}"}, status=GRPC_TO_HTTP.get(code, 500))
                return web.Response(body=self._rest_body, content_type="application/json")

            app = web.Application()
            app.router.add_post("/v1/models/{tail:.*}", rest_predict)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, HOST, rest_port)
            await site.start()
            self.rest_port = site._server.sockets[0].getsockname()[1]
            self._rest_runner = runner
        return self

    async def stop(self) -> None:
        """Stop both endpoints."""
        if self._grpc_server is not None:
            await self._grpc_server.stop(0)
        if self._rest_runner is not None:
            await self._rest_runner.cleanup()


class EchoProcess:
    """An EchoServer in a child process (its own core and GIL); use as a context manager.

    grpc_target: 'host:port' for gRPC; rest_url: 'http://host:port'.
    """

    def __init__(self, faults: Faults | None = None, *, grpc: bool = True, rest: bool = True,
                 start_timeout_s: float = 20.0) -> None:
        f = faults or Faults()
        cmd = [sys.executable, "-m", "loadtest.echo",
               "--delay", str(f.delay_s), "--stall-every", str(f.stall_every_s),
               "--stall-for", str(f.stall_for_s), "--error-ratio", str(f.error_ratio),
               "--error-code", f.error_code]
        if grpc:
            cmd += ["--grpc-port", "0"]
        if rest:
            cmd += ["--rest-port", "0"]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        deadline = time.monotonic() + start_timeout_s
        line = ""
        while time.monotonic() < deadline and not line:
            line = self.proc.stdout.readline()
            if self.proc.poll() is not None:
                break
        if not line:
            self.stop()
            raise RuntimeError("echo server did not start")
        ports = json.loads(line)
        self.grpc_port, self.rest_port = ports.get("grpc_port"), ports.get("rest_port")
        self.grpc_target = f"{HOST}:{self.grpc_port}" if self.grpc_port else None
        self.rest_url = f"http://{HOST}:{self.rest_port}" if self.rest_port else None
        self.pid = self.proc.pid

    def stop(self) -> None:
        """Stop the child (closing stdin asks it to exit; then terminate, then kill)."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except Exception:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()

    def __enter__(self) -> "EchoProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


async def _serve(args: argparse.Namespace) -> None:
    faults = Faults(args.delay, args.stall_every, args.stall_for, args.error_ratio, args.error_code)
    server = await EchoServer(faults).start(args.grpc_port, args.rest_port)
    print(json.dumps({"grpc_port": server.grpc_port, "rest_port": server.rest_port}), flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    # stdin closing (parent gone or asking us to stop) ends the server too.
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(done.set)),
                     daemon=True).start()
    await done.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.echo", description=__doc__.split("\n")[0])
    p.add_argument("--grpc-port", type=int, default=None)
    p.add_argument("--rest-port", type=int, default=None)
    p.add_argument("--delay", type=float, default=0.0, help="seconds added to every answer")
    p.add_argument("--stall-every", type=float, default=0.0, help="period of stalls, seconds")
    p.add_argument("--stall-for", type=float, default=0.0, help="length of each stall, seconds")
    p.add_argument("--error-ratio", type=float, default=0.0, help="share of requests that fail, 0..1")
    p.add_argument("--error-code", default="UNAVAILABLE", help="gRPC status name of injected errors")
    args = p.parse_args(argv)
    if args.grpc_port is None and args.rest_port is None:
        args.grpc_port = 0
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
