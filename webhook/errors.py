"""One JSON error shape for every failure the service reports.

`{"error": "<one readable line>", "status": 400, "field": "checksum"}`:
Flagger copies the body into its events, so it is one line; `field` names
the culprit when there is one.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the service refuses: `status` is the HTTP code, `field` the culprit or None."""

    def __init__(self, status: int, message: str, field: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.retry_after_s = retry_after_s  # sent as Retry-After


def error_body(status: int, message: str, field: str | None = None) -> dict:
    """The error shape as a dict: also used by the HTTP front (webhook.front) for what it refuses itself."""
    body: dict = {"error": " ".join(str(message).split()), "status": status}
    if field is not None:
        body["field"] = field
    return body


def render(status: int, message: str, field: str | None = None):
    resp = jsonify(error_body(status, message, field))
    resp.status_code = status
    return resp


def register(app: Flask) -> None:
    """Render ApiError, HTTP errors (404 route, 405, 413) and crashes as JSON."""

    @app.errorhandler(ApiError)
    def _api(err: ApiError):
        resp = render(err.status, err.message, err.field)
        if err.retry_after_s is not None:
            resp.headers["Retry-After"] = str(err.retry_after_s)
        return resp

    # No handler for webhook.sessions.AtCapacity: Shadowgate's own limits never become a status code.
    # Admission (webhook.admission) answers a run that waits for a slot where the caller waits: 412 at
    # Flagger's confirm-* gates, 200 "not measured yet" on pre-rollout / rollout, 409 on rollback, 200
    # Inconclusive for Argo (the hooks catch AtCapacity themselves; see ../shared/contracts.md).

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(err: RequestEntityTooLarge):
        limit = app.config.get("MAX_CONTENT_LENGTH")
        return render(413, f"request body larger than {limit} bytes", "body")

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException):
        return render(err.code or 500, err.description or err.name)

    @app.errorhandler(Exception)
    def _crash(err: Exception):
        # A bug, never a verdict: verdicts are 200/409/412 by construction.
        log.exception("unhandled error")
        return render(500, f"internal error: {err.__class__.__name__}")
