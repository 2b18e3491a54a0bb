"""Golden and reference sets: read from a file or a URL, verified, re-read when they change.

Where a data set comes from (`analyses.<name>.golden` / `.reference` in
analyses.yaml, see `webhook.config.DataSetConfig`):

- a file: `path`, relative to the configuration file. In Kubernetes the chart
  mounts it from a PersistentVolumeClaim (`golden.existingClaim`), a
  ConfigMap (`golden.configMap`, for small sets: binaryData is limited to
  1 MiB) or any volume of `extraVolumes`/`extraVolumeMounts`;
- a URL: `url` with `https://`, `s3://` or `gs://`; `http://` only with
  `allow_http: true`; any other scheme (`file://`, `ftp://`...) is refused
  naming the field. `https://` is fetched by `webhook.safefetch`: redirects
  followed by hand (at most 5), every hop (the first included) checked
  before connecting: http(s) only, and every address its host resolves to
  public (no loopback, link-local, private, unspecified, multicast or
  reserved address unless `allow_private` is true or lists the network);
  the connection goes to the address checked; credentials in the URL and
  `storage_options.headers` go to the configured origin only. `s3://` and
  `gs://` are read through fsspec and need the optional extras (`pip
  install shadowgate[s3]` / `[gcs]`: s3fs, gcsfs); credentials come from
  the environment as each backend reads them (IRSA, workload identity,
  AWS_* / GOOGLE_APPLICATION_CREDENTIALS); `storage_options` passes options
  such as `anon: true` or `endpoint_url` (an object store's endpoint is the
  operator's choice: `allow_private` does not apply to it).

Messages show a URL redacted (`webhook.redact`): no userinfo, no query.

`sha256` (hex) pins the content: a set whose digest differs is refused with
the field named, at start-up and on every re-read. Every failure is a
`ConfigError` naming the field (`analyses.digits.golden.url: ...`).

Re-reading: `DataSetWatcher` looks every `reload_s` seconds (per data set,
default 60; 0 turns it off) at each source's fingerprint (a file's inode,
size and mtime, which also catches a ConfigMap's symlink swap; an http(s)
URL's ETag, Content-Length and Last-Modified from a HEAD, or the digest of
a GET where HEAD is not answered; an object's ETag, size or mtime from
fsspec's `info`) and, when it changed, reads and
verifies the set again and swaps it into the running `Analysis`. Runs that
are already measuring keep the set they started with; the next run uses the
new one. A new set that cannot be read or fails its sha256 is refused and
the old one stays, with the error logged. `webhook.app.create_app` starts
one watcher for its service and `Service.close()` stops it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .redact import exception_text, option_secrets, redact_url, scrub, url_secrets

log = logging.getLogger("shadowgate.datasets")

# Read at most this much from a URL (a golden set is rows for probes, not a training set).
MAX_BYTES = 1 << 30
# Read through fsspec with their own clients (s3fs, gcsfs); http(s) goes through webhook.safefetch.
OBJECT_STORES = ("s3", "gs", "gcs")


def _config_error(field_name: str, message: str) -> Exception:
    from .config import ConfigError

    return ConfigError(field_name, message)


@dataclass
class Loaded:
    """One data set as read: arrays, digest, and the source's fingerprint when read."""

    inputs: np.ndarray
    labels: np.ndarray | None
    sha256: str
    fingerprint: Any
    source: str


def resolve_path(base: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


def describe(base: Path, ds: Any) -> str:
    """Where `ds` is read from, as messages show it: the URL redacted, or the resolved path."""
    return redact_url(ds.url) if ds.url else str(resolve_path(base, ds.path))


def _scheme(ds: Any) -> str:
    return ds.url.split("://", 1)[0].lower()


def _check_url(ds: Any, field_name: str) -> None:
    """The configured URL's scheme: https, s3, gs (http with allow_http); the options its reader takes."""
    scheme = _scheme(ds)
    allowed = ("https", "http") if getattr(ds, "allow_http", False) else ("https",)
    if scheme not in allowed + OBJECT_STORES:
        hint = ("set allow_http: true to allow plain http" if scheme == "http"
                else "https://, s3:// or gs://; http:// with allow_http: true")
        raise _config_error(f"{field_name}.url", f"{redact_url(ds.url)} refused: scheme {scheme}:// is not "
                                                 f"allowed ({hint})")
    if scheme in ("http", "https"):
        extra = sorted(set(ds.storage_options or {}) - {"headers"})
        if extra:
            raise _config_error(f"{field_name}.storage_options", f"an {scheme}:// URL takes only `headers` here, "
                                                                 f"not {', '.join(extra)}")
        hdrs = (ds.storage_options or {}).get("headers", {})
        if not isinstance(hdrs, dict) or not all(isinstance(v, str) for v in hdrs.values()):
            raise _config_error(f"{field_name}.storage_options.headers", "must map header names to strings")


def _policy(ds: Any):
    from .safefetch import Policy

    allow = getattr(ds, "allow_private", False)
    return Policy(allow_http=bool(getattr(ds, "allow_http", False)),
                  allow_private=tuple(allow) if isinstance(allow, list) else bool(allow))


def _secrets(ds: Any) -> set[str]:
    """What error texts about `ds` are scrubbed of: its URL's credentials and query, its options' secrets."""
    return url_secrets(ds.url) | set(option_secrets(ds.storage_options or {}))


def _http(ds: Any, field_name: str, method: str, fallback: str | None = None):
    """GET or HEAD of an http(s) `url` through webhook.safefetch: every hop checked, one deadline.

    fallback: the method to try instead when the answer is an HTTP error (a
    server without HEAD, or a presigned URL signed for GET only); never after
    a refused hop or a failed connection.
    """
    from .safefetch import FetchError, fetch

    headers = dict((ds.storage_options or {}).get("headers", {}))
    try:
        return fetch(ds.url, _policy(ds), ds.timeout_s, method=method, max_bytes=MAX_BYTES, headers=headers)
    except FetchError as exc:
        if fallback is None or exc.status is None:
            raise _config_error(f"{field_name}.url", scrub(exc.message, _secrets(ds), limit=None)) from None
    return _http(ds, field_name, fallback)


def fingerprint(base: Path, ds: Any, field_name: str) -> Any:
    """What changes when the source's content changes (cheap: no read of the content)."""
    if ds.url:
        _check_url(ds, field_name)
        if _scheme(ds) in ("http", "https"):
            resp = _http(ds, field_name, "HEAD", fallback="GET")
            if resp.method == "GET":  # HEAD not answered: the content's digest is the fingerprint
                return ("sha256", hashlib.sha256(resp.body).hexdigest())
            return tuple(str(resp.headers.get(k)) for k in ("etag", "content-length", "last-modified"))
        fs, path = _filesystem(ds, field_name)
        try:
            info = fs.info(path)
        except Exception as exc:  # noqa: BLE001 - any backend error names the field
            raise _config_error(f"{field_name}.url", f"cannot reach {describe(base, ds)}: "
                                                     f"{exception_text(exc, _secrets(ds))}") from None
        return tuple(str(info.get(k)) for k in ("ETag", "etag", "md5Hash", "size", "LastModified",
                                                 "mtime", "updated"))
    path = resolve_path(base, ds.path)
    try:
        st = path.stat()  # follows symlinks: a ConfigMap update swaps ..data
    except OSError:
        return None
    return (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)


def _filesystem(ds: Any, field_name: str):
    """The fsspec filesystem of an object-store URL (s3://, gs://)."""
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec is in the runtime requirements
        raise _config_error(f"{field_name}.url", "reading a URL needs fsspec (pip install fsspec)") from None
    options = dict(ds.storage_options or {})
    protocol = _scheme(ds)
    try:
        fs, path = fsspec.core.url_to_fs(ds.url, **options)
    except (ImportError, ValueError) as exc:
        hint = {"s3": " (install the s3 extra: s3fs)", "gs": " (install the gcs extra: gcsfs)",
                "gcs": " (install the gcs extra: gcsfs)"}.get(protocol, "")
        raise _config_error(f"{field_name}.url", f"cannot read {protocol}:// URLs: "
                                                 f"{exception_text(exc, _secrets(ds))}{hint}") from None
    return fs, path


def _read_bytes(base: Path, ds: Any, field_name: str) -> bytes:
    if ds.url:
        _check_url(ds, field_name)
        if _scheme(ds) in ("http", "https"):
            return _http(ds, field_name, "GET").body
        fs, path = _filesystem(ds, field_name)
        result: dict[str, Any] = {}

        def fetch() -> None:
            try:
                with fs.open(path, "rb") as fh:
                    data = fh.read(MAX_BYTES + 1)
                result["data"] = data
            except Exception as exc:  # noqa: BLE001
                result["error"] = exc

        # fsspec backends differ in how they apply timeouts; this bounds the whole read.
        where = describe(base, ds)
        t = threading.Thread(target=fetch, name="dataset-fetch", daemon=True)
        t.start()
        t.join(ds.timeout_s)
        if t.is_alive():
            raise _config_error(f"{field_name}.url", f"{where}: no answer within timeout_s={ds.timeout_s:g} s")
        if "error" in result:
            raise _config_error(f"{field_name}.url",
                                f"cannot read {where}: {exception_text(result['error'], _secrets(ds))}")
        data = result["data"]
        if len(data) > MAX_BYTES:
            raise _config_error(f"{field_name}.url", f"{where} is larger than {MAX_BYTES >> 20} MiB")
        return data
    path = resolve_path(base, ds.path)
    if not path.is_file():
        raise _config_error(f"{field_name}.path", f"no such file: {path}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _config_error(f"{field_name}.path", f"cannot read {path}: {exc.strerror or exc}") from None


def load(base: Path, ds: Any, field_name: str, need_labels: bool) -> Loaded:
    """Read, verify and parse one data set. Raises ConfigError naming the field."""
    from .config import ConfigError

    where = describe(base, ds)
    src_field = f"{field_name}.url" if ds.url else f"{field_name}.path"
    fp = fingerprint(base, ds, field_name)
    data = _read_bytes(base, ds, field_name)
    digest = hashlib.sha256(data).hexdigest()
    if ds.sha256 and digest != ds.sha256.lower():
        raise ConfigError(f"{field_name}.sha256", f"{where} has sha256 {digest}, not the configured {ds.sha256}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            keys = set(z.files)
            if ds.inputs_key not in keys:
                raise ConfigError(f"{field_name}.inputs_key", f"{where} has no array {ds.inputs_key!r} "
                                                              f"(has {', '.join(sorted(keys)) or 'none'})")
            inputs = np.asarray(z[ds.inputs_key])
            labels = None
            if need_labels:
                if ds.labels_key not in keys:
                    raise ConfigError(f"{field_name}.labels_key", f"{where} has no array {ds.labels_key!r}")
                labels = np.asarray(z[ds.labels_key]).astype(np.int64).reshape(-1)
    except ConfigError:
        raise
    except Exception as exc:  # a corrupt file must name itself, not crash with a traceback
        raise ConfigError(src_field, f"cannot read {where} as .npz: {scrub(exc, _secrets(ds) if ds.url else ())}"
                          ) from None
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ConfigError(src_field, f"{where}: {ds.inputs_key!r} is empty")
    if labels is not None and labels.shape[0] != inputs.shape[0]:
        raise ConfigError(f"{field_name}.labels_key",
                          f"{where}: {labels.shape[0]} labels for {inputs.shape[0]} inputs")
    return Loaded(inputs=inputs, labels=labels, sha256=digest, fingerprint=fp, source=where)


# ---------------------------------------------------------------- re-reading
@dataclass
class _Watched:
    analysis: Any  # webhook.config.Analysis
    attr: str  # "golden" or "reference"
    ds: Any
    field_name: str
    fingerprint: Any
    next_check: float = 0.0
    errors: int = field(default=0)


class DataSetWatcher:
    """Re-reads each analysis's golden and reference sets when their source changes."""

    def __init__(self, settings: Any) -> None:
        import time

        self._time = time
        self.base = Path(settings.base_dir)
        self.items: list[_Watched] = []
        self.reloads = 0
        for name, analysis in settings.analyses.items():
            cfg = analysis.config
            for attr in ("golden", "reference"):
                ds = getattr(cfg, attr)
                if ds is None or not ds.reload_s:
                    continue
                try:
                    fp = fingerprint(self.base, ds, f"analyses.{name}.{attr}")
                except Exception:  # noqa: BLE001 - unreachable now: the next check reads it
                    fp = None
                self.items.append(_Watched(analysis, attr, ds, f"analyses.{name}.{attr}", fp,
                                           time.monotonic() + ds.reload_s))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self, force: bool = False) -> list[str]:
        """Look at every due source now; swap in the sets that changed. Returns the fields re-read."""
        now = self._time.monotonic()
        changed = []
        for item in self.items:
            if not force and now < item.next_check:
                continue
            item.next_check = now + item.ds.reload_s
            try:
                fp = fingerprint(self.base, item.ds, item.field_name)
                if fp is None or fp == item.fingerprint:
                    continue
                loaded = load(self.base, item.ds, item.field_name, need_labels=item.attr == "golden")
            except Exception as exc:  # noqa: BLE001 - keep the old set, say why
                item.errors += 1
                log.error("%s changed but cannot be used; keeping the previous set: %s", item.field_name, exc)
                continue
            if item.attr == "golden":
                item.analysis.golden_inputs = loaded.inputs
                item.analysis.golden_labels = loaded.labels
            else:
                item.analysis.reference_inputs = loaded.inputs
            item.fingerprint = loaded.fingerprint
            self.reloads += 1
            changed.append(item.field_name)
            log.info("%s re-read from %s: %d rows, sha256 %s", item.field_name, loaded.source,
                     loaded.inputs.shape[0], loaded.sha256)
        return changed

    def start(self) -> "DataSetWatcher":
        if self.items and self._thread is None:
            step = max(0.05, min(i.ds.reload_s for i in self.items) / 2)
            self._thread = threading.Thread(target=self._run, args=(step,), name="dataset-watcher", daemon=True)
            self._thread.start()
        return self

    def _run(self, step: float) -> None:
        while not self._stop.wait(step):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must not die
                log.exception("data set check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
