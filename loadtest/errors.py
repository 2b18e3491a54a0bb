"""One small error type for every failed call to a model server.

Keeps the gRPC status name (or the HTTP code mapped to it) so load counters
and verdicts can say *how* a version failed: UNAVAILABLE is not
INVALID_ARGUMENT.
"""

from __future__ import annotations

# TF Serving's own mapping from status to HTTP code
# (tensorflow_serving/model_servers/http_server.cc, ToHTTPStatusCode).
GRPC_TO_HTTP: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}

# The reverse, for REST clients: an HTTP code back to the most likely status.
HTTP_TO_GRPC: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def http_to_code(status: int) -> str:
    """Status name for an HTTP response code (unknown codes become UNKNOWN)."""
    return HTTP_TO_GRPC.get(int(status), "UNKNOWN")


class ServingError(Exception):
    """A call to a model server failed.

    code: gRPC status name, e.g. "UNAVAILABLE" or "DEADLINE_EXCEEDED".
    http_status: the HTTP code when the call was REST, else None.
    target: the address called, for messages.
    """

    def __init__(self, code: str, message: str, target: str | None = None,
                 http_status: int | None = None) -> None:
        self.code = code
        self.message = message
        # A REST target is a URL that may carry credentials: kept only redacted (messages show it).
        from webhook.redact import redact_url

        self.target = redact_url(target) if target else target
        self.http_status = http_status
        super().__init__(str(self))

    @property
    def label(self) -> str:
        """What load counters key errors by: the HTTP code for REST, else the status name."""
        return str(self.http_status) if self.http_status is not None else self.code

    def __str__(self) -> str:
        where = f" from {self.target}" if self.target else ""
        http = f" (HTTP {self.http_status})" if self.http_status is not None else ""
        return f"{self.code}{http}{where}: {self.message}"


# --------------------------------------------------------------------------- whose failure
# Codes that never describe the version called: the call was cancelled (by
# Shadowgate: its own deadline, a shutdown, a closed channel) or the server
# reset the stream without an answer to shed load it could not take (gRPC
# servers do so when requests pile up unserved: the client sees CANCELLED at
# once). TF Serving never answers a Predict it ran with CANCELLED. REST: 499
# is "client closed request".
OWN_CODES = frozenset({"CANCELLED", "499"})


def own_failure(label: str) -> bool:
    """True when a failure labelled `label` (status name or HTTP code) is not the version's error."""
    return label in OWN_CODES


def late_slack_s(timeout_s: float) -> float:
    """How late after its deadline a failure may be noticed and still be the server's (seconds).

    A DEADLINE_EXCEEDED noticed later than deadline + slack means Shadowgate's
    own event loop was behind (it could not read an answer, or fire its timer,
    on time): the server was not measured. A quarter of the deadline, at most
    250 ms.
    """
    return min(0.25, 0.25 * float(timeout_s))
