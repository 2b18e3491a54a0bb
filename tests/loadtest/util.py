"""Functions several load tests use."""

from __future__ import annotations

import asyncio

import numpy as np

from loadtest.load import LoadGenerator, LoadStats
from loadtest.wire import Target, build_payloads, make_sender

ROW = np.zeros((1, 64), np.float32)


def payloads(address: str, protocol: str = "grpc") -> list[bytes]:
    """Prebuilt request bodies for a demo-like model `digits` (input x: float32 [-1, 64])."""
    return build_payloads(Target(address, "digits", protocol), ROW, "x")


def run_against(address: str, protocol: str, schedule, **kwargs) -> LoadStats:
    """Run a LoadGenerator against a real server; kwargs go to LoadGenerator (timeout_s too)."""

    async def main() -> LoadStats:
        target = Target(address, "digits", protocol)
        sender = make_sender(target, payloads(address, protocol), timeout_s=kwargs.get("timeout_s", 5.0))
        try:
            try:  # connect first, so connection set-up is not in the figures
                await sender()
            except Exception:
                pass
            return await LoadGenerator(sender, schedule, **kwargs).run()
        finally:
            await sender.close()

    return asyncio.run(main())
