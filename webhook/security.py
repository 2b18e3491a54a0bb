"""Who may call, and what a payload may contain.

Payload strings are identifiers only: checked for length and charset, used
as keys and labels, never as addresses, paths or commands.
"""

from __future__ import annotations

import base64
import hmac
import math
import re
from typing import Any

from flask import Request

from .errors import ApiError

# Whole strings only: `\Z`, not `$`, which also matches before a final "\n"
# (so "digits\n" passed). Callers may use .match or .fullmatch alike.
# Kubernetes names: namespace is a DNS label, object names DNS subdomains.
NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")
# Flagger checksums and Argo revisions / pod-template hashes.
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
ANALYSIS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
RUN_ID_RE = re.compile(r"^run-[0-9a-f]{16}\Z")
PHASE_RE = re.compile(r"^[A-Za-z]{1,32}\Z")


def check_token(request: Request, token: str | None) -> None:
    """401 unless the request carries the token (Bearer, or basic-auth password)."""
    if token is None:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    given = None
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            given = None
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(401, "missing or wrong token: send 'Authorization: Bearer <token>'"
                            " or put the token as password in the webhook URL", "Authorization")


def check_namespace(namespace: str, allowed: list[str]) -> None:
    """403 when an allow-list is configured and `namespace` is not on it."""
    if allowed and namespace not in allowed:
        raise ApiError(403, f"namespace {namespace!r} is not allowed", "namespace")


def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 naming the body."""
    try:
        data = request.get_json(force=True, silent=False)
    except Exception:
        raise ApiError(400, "body is not valid JSON", "body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object", "body")
    return data


def identifier(data: dict[str, Any], key: str, pattern: re.Pattern, what: str,
               required: bool = True, where: str = "") -> str | None:
    """data[key] as a validated identifier; 400 naming the field when missing or malformed."""
    field = f"{where}{key}"
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"missing field {field!r}", field)
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"field {field!r} must be a string", field)
    if not pattern.fullmatch(value):
        raise ApiError(400, f"field {field!r} is not a valid {what}", field)
    return value


def rate(value: Any, field: str, cap: float, *, blank_is_none: bool = False) -> float | None:
    """A requested load rate (requests per second) capped at `cap`; None when absent.

    Accepts a number or a numeric string (Flagger metadata values are
    strings; an Argo JSON body may hold numbers). Anything else, a negative,
    infinite or NaN value, or an integer too large for a float is a 400
    naming `field`, never a crash.
    """
    if value is None or (blank_is_none and value == ""):
        return None
    try:
        shown = repr(value)[:32]
    except ValueError:  # an int beyond Python's digit limit for str()
        shown = "a huge integer"
    bad = ApiError(400, f"field {field!r} must be a number of requests per second, got {shown}", field)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad
    try:
        r = float(value)
    except (ValueError, OverflowError):
        raise bad from None
    if not math.isfinite(r) or r < 0:
        raise ApiError(400, f"field {field!r} must be a finite number >= 0 requests per second", field)
    return min(r, cap)
