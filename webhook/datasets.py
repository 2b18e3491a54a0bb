"""Golden and reference sets: read from a file or a URL, verified, re-read when they change.

Where a data set comes from (`analyses.<name>.golden` / `.reference` in
analyses.yaml, see `webhook.config.DataSetConfig`):

- a file: `path`, relative to the configuration file. In Kubernetes the chart
  mounts it from a PersistentVolumeClaim (`golden.existingClaim`), a
  ConfigMap (`golden.configMap`, for small sets: binaryData is limited to
  1 MiB) or any volume of `extraVolumes`/`extraVolumeMounts`;
- a URL: `url` with `s3://`, `gs://`, `https://` (or anything else fsspec
  knows), read through fsspec. `https://` works with the runtime as it is;
  `s3://` and `gs://` need the optional extras (`pip install
  shadowgate[s3]` / `[gcs]`: s3fs, gcsfs). Credentials come from the
  environment as each backend reads them (IRSA, workload identity,
  AWS_* / GOOGLE_APPLICATION_CREDENTIALS); `storage_options` passes options
  such as `anon: true` or `endpoint_url`.

`sha256` (hex) pins the content: a set whose digest differs is refused with
the field named, at start-up and on every re-read. Every failure is a
`ConfigError` naming the field (`analyses.digits.golden.url: ...`).

Re-reading: `DataSetWatcher` looks every `reload_s` seconds (per data set,
default 60; 0 turns it off) at each source's fingerprint (a file's inode,
size and mtime, which also catches a ConfigMap's symlink swap; a URL's
ETag, size or mtime from fsspec's `info`) and, when it changed, reads and
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

log = logging.getLogger("shadowgate.datasets")

# Read at most this much from a URL (a golden set is rows for probes, not a training set).
MAX_BYTES = 1 << 30


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
    """Where `ds` is read from: a URL or the resolved path."""
    return ds.url if ds.url else str(resolve_path(base, ds.path))


def fingerprint(base: Path, ds: Any, field_name: str) -> Any:
    """What changes when the source's content changes (cheap: no read of the content)."""
    if ds.url:
        fs, path = _filesystem(ds, field_name)
        try:
            info = fs.info(path)
        except Exception as exc:  # noqa: BLE001 - any backend error names the field
            raise _config_error(f"{field_name}.url", f"cannot reach {ds.url}: {exc}") from None
        return tuple(str(info.get(k)) for k in ("ETag", "etag", "md5Hash", "size", "LastModified",
                                                 "mtime", "updated"))
    path = resolve_path(base, ds.path)
    try:
        st = path.stat()  # follows symlinks: a ConfigMap update swaps ..data
    except OSError:
        return None
    return (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)


def _filesystem(ds: Any, field_name: str):
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec is in the runtime requirements
        raise _config_error(f"{field_name}.url", "reading a URL needs fsspec (pip install fsspec)") from None
    options = dict(ds.storage_options or {})
    protocol = ds.url.split("://", 1)[0]
    if protocol in ("http", "https"):
        import aiohttp

        options.setdefault("client_kwargs", {"timeout": aiohttp.ClientTimeout(total=ds.timeout_s)})
    try:
        fs, path = fsspec.core.url_to_fs(ds.url, **options)
    except (ImportError, ValueError) as exc:
        hint = {"s3": " (install the s3 extra: s3fs)", "gs": " (install the gcs extra: gcsfs)",
                "gcs": " (install the gcs extra: gcsfs)"}.get(protocol, "")
        raise _config_error(f"{field_name}.url", f"cannot read {protocol}:// URLs: {exc}{hint}") from None
    return fs, path


def _read_bytes(base: Path, ds: Any, field_name: str) -> bytes:
    if ds.url:
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
        t = threading.Thread(target=fetch, name="dataset-fetch", daemon=True)
        t.start()
        t.join(ds.timeout_s)
        if t.is_alive():
            raise _config_error(f"{field_name}.url", f"{ds.url}: no answer within timeout_s={ds.timeout_s:g} s")
        if "error" in result:
            raise _config_error(f"{field_name}.url", f"cannot read {ds.url}: {result['error']}")
        data = result["data"]
        if len(data) > MAX_BYTES:
            raise _config_error(f"{field_name}.url", f"{ds.url} is larger than {MAX_BYTES >> 20} MiB")
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
        raise ConfigError(src_field, f"cannot read {where} as .npz: {exc}") from None
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
