"""The callers' drivers (Flagger's scheduler, Argo Rollouts' web provider) live in demo.drivers.

`make demo` drives the service with the same code the end-to-end tests use;
this module keeps the tests' import path.
"""

from demo.drivers import (  # noqa: F401
    ArgoMeasurement,
    ArgoResult,
    ArgoRolloutDriver,
    FlaggerDriver,
    FlaggerResult,
    FlaggerTick,
    argo_measure,
)
