"""What both transports share: resolve, inject faults, check, run, count.

The gRPC and REST services only translate their wire formats; every
Predict goes through `ServingCore.predict`, so a fault, a check or a metric
behaves the same on both.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from modelserver.faults import FaultInjector
from modelserver.metrics import Metrics
from modelserver.models import ModelRegistry, ModelVersion, Signature
from modelserver.status import ServingStatus

# Builds the input arrays for a signature from the transport's request;
# raises ServingStatus (INVALID_ARGUMENT) naming the bad input.
Converter = Callable[[Signature], dict[str, np.ndarray]]


class ServingCore:
    """The served models plus faults and metrics, used from one event loop.

    workers: threads that run the models, so a slow model call never holds
    up the event loop (TF releases the GIL while it computes).
    """

    def __init__(self, registry: ModelRegistry, faults: FaultInjector | None = None,
                 metrics: Metrics | None = None, workers: int = 4) -> None:
        self.registry = registry
        self.faults = faults or FaultInjector()
        self.metrics = metrics or Metrics()
        self._executor = ThreadPoolExecutor(max_workers=max(1, workers),
                                            thread_name_prefix="model")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def predict(self, name: str, version: int | None, label: str | None,
                      signature_name: str | None, convert: Converter,
                      entrypoint: str) -> tuple[ModelVersion, Signature, dict[str, np.ndarray]]:
        """Run one Predict; raises ServingStatus. entrypoint: "GRPC" or "REST" (for metrics)."""
        start = time.perf_counter()
        status = "OK"
        try:
            mv = self.registry.resolve(name, version, label)
            sig = mv.signature(signature_name)
            model = self.registry.models[mv.name]
            await self.faults.apply(mv.name, mv.version, model.labels)
            arrays = convert(sig)
            sig.check_names(arrays)
            for key, arr in arrays.items():
                sig.check_array(key, arr)
            sig.check_batch(arrays)
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._executor, sig.run, arrays)
            return mv, sig, outputs
        except ServingStatus as e:
            status = e.code
            raise
        except asyncio.CancelledError:
            # The client went away (deadline or cancel) while we waited.
            status = "CANCELLED"
            raise
        except Exception as e:  # noqa: BLE001 - answer INTERNAL, never a traceback
            status = "INTERNAL"
            raise ServingStatus("INTERNAL", f"{type(e).__name__}: {e}") from e
        finally:
            self.metrics.record(name, status, time.perf_counter() - start,
                                api="Predict", entrypoint=entrypoint)
