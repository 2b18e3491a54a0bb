"""The one error type of the server: a gRPC status name and a message.

Raised anywhere below the transports; the gRPC service turns it into the
status code, the REST service into TF Serving's HTTP code and
`{"error": message}` body.
"""

from __future__ import annotations

import grpc

from loadtest.errors import GRPC_TO_HTTP


class ServingStatus(Exception):
    """A request failed with gRPC status `code` (a name such as "NOT_FOUND")."""

    def __init__(self, code: str, message: str) -> None:
        if code not in GRPC_TO_HTTP or code == "OK":
            raise ValueError(f"not an error status name: {code!r}")
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.code]

    @property
    def http_status(self) -> int:
        """TF Serving's HTTP code for this status."""
        return GRPC_TO_HTTP[self.code]


def invalid(message: str) -> ServingStatus:
    return ServingStatus("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingStatus:
    return ServingStatus("NOT_FOUND", message)


# Status names a fault may inject (every error status TF Serving can map).
ERROR_CODES = tuple(c for c in GRPC_TO_HTTP if c != "OK")
