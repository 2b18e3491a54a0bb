"""Loaded SavedModels, version resolution and input checks.

`ModelRegistry.load(configs)` loads every configured version with
`tf.saved_model.load` and reads its SignatureDefs from `saved_model.pb`
(what GetModelMetadata returns). `resolve()` turns a request's model spec
into one loaded version with TF Serving's errors:

- unknown model or version: NOT_FOUND, "Servable not found for request:
  Latest(name)" / "Specific(name, 3)";
- unknown version label: INVALID_ARGUMENT, "Unrecognized servable version
  label: x" (TF Serving's ServerCore answers this, so REST gives 400);
- unknown signature: FAILED_PRECONDITION, 'Serving signature key "x" not
  found.'.

Input checks name the input: a missing or extra input, a dtype or a shape
that the signature does not accept are INVALID_ARGUMENT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelserver.config import ModelConfig
from modelserver.status import ServingStatus, invalid, not_found

DEFAULT_SIGNATURE = "serving_default"
# Entries of the SignatureDef map that are not callable signatures.
_INTERNAL_SIGNATURES = ("__saved_model_init_op",)


def dtype_name(enum: int) -> str:
    """"DT_FLOAT" for the DataType enum value."""
    from tensorflow.core.framework import types_pb2

    try:
        return types_pb2.DataType.Name(int(enum))
    except ValueError:
        return f"DataType({int(enum)})"


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]" if shape is not None else "<any>"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: dtype enum, numpy dtype, shape (None = any rank)."""

    name: str
    dtype: int
    np_dtype: np.dtype
    shape: tuple[int, ...] | None

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        if self.shape is None:
            return True
        if len(shape) != len(self.shape):
            return False
        return all(want < 0 or want == got for want, got in zip(self.shape, shape))


def _spec(name: str, info) -> TensorSpec:
    import tensorflow as tf

    shape = None
    if not info.tensor_shape.unknown_rank:
        shape = tuple(int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(name=name, dtype=int(info.dtype),
                      np_dtype=np.dtype(tf.dtypes.as_dtype(info.dtype).as_numpy_dtype),
                      shape=shape)


class Signature:
    """A callable signature of one model version."""

    def __init__(self, name: str, signature_def, fn) -> None:
        self.name = name
        self.signature_def = signature_def
        self.fn = fn
        self.inputs = {k: _spec(k, v) for k, v in sorted(signature_def.inputs.items())}
        self.outputs = {k: _spec(k, v) for k, v in sorted(signature_def.outputs.items())}

    def check_names(self, names) -> None:
        """INVALID_ARGUMENT unless `names` are exactly the signature's inputs."""
        sent, wanted = set(names), set(self.inputs)
        if sent != wanted:
            missing = ", ".join(sorted(wanted - sent)) or "none"
            extra = ", ".join(sorted(sent - wanted)) or "none"
            raise invalid(
                f"input size does not match signature {self.name!r}: "
                f"{len(sent)}!={len(wanted)}; missing but required: {{{missing}}}; "
                f"sent extra: {{{extra}}}")

    def check_dtype(self, name: str, dtype_enum: int) -> None:
        want = self.inputs[name]
        if int(dtype_enum) != want.dtype:
            raise invalid(f"input {name!r} has dtype {dtype_name(dtype_enum)} but signature "
                          f"{self.name!r} expects {want.dtype_name}")

    def check_array(self, name: str, array: np.ndarray) -> None:
        want = self.inputs[name]
        if not want.accepts_shape(tuple(array.shape)):
            raise invalid(f"input {name!r} has shape {_shape_text(array.shape)} but signature "
                          f"{self.name!r} expects {_shape_text(want.shape)} "
                          "(-1 means any size)")

    def check_batch(self, arrays: dict[str, np.ndarray]) -> None:
        sizes = {k: (a.shape[0] if a.ndim else None) for k, a in arrays.items()}
        distinct = {s for s in sizes.values() if s is not None}
        if len(distinct) > 1:
            raise invalid(f"inputs must have the same 0th-dimension size, got {sizes}")

    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call the signature (blocking; run it off the event loop)."""
        import tensorflow as tf

        try:
            result = self.fn(**{k: tf.constant(v) for k, v in arrays.items()})
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
            raise invalid(f"signature {self.name!r} rejected the inputs: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        except tf.errors.OpError as e:
            raise ServingStatus("INTERNAL", f"signature {self.name!r} failed: "
                                f"{e.message.splitlines()[0] if e.message else type(e).__name__}") from None
        return {k: v.numpy() for k, v in result.items()}


class ModelVersion:
    """One loaded version of a model."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.name = name
        self.version = version
        self.path = path
        raw = saved_model_pb2.SavedModel()
        raw.ParseFromString((path / "saved_model.pb").read_bytes())
        graphs = [g for g in raw.meta_graphs if "serve" in g.meta_info_def.tags] or list(raw.meta_graphs)
        if not graphs:
            raise ValueError(f"{path}: SavedModel has no MetaGraph")
        # All SignatureDefs, internal ones included, as TF Serving returns them.
        self.signature_defs = dict(graphs[0].signature_def)
        self._loaded = tf.saved_model.load(str(path), tags=["serve"])
        self.signatures: dict[str, Signature] = {}
        for key, fn in self._loaded.signatures.items():
            if key in _INTERNAL_SIGNATURES or key not in self.signature_defs:
                continue
            self.signatures[key] = Signature(key, self.signature_defs[key], fn)

    def signature(self, name: str | None) -> Signature:
        key = name or DEFAULT_SIGNATURE
        sig = self.signatures.get(key)
        if sig is None:
            raise ServingStatus("FAILED_PRECONDITION", f'Serving signature key "{key}" not found.')
        return sig


class Model:
    def __init__(self, config: ModelConfig, versions: dict[int, ModelVersion]) -> None:
        self.config = config
        self.name = config.name
        self.versions = versions
        self.labels = dict(config.labels)

    @property
    def latest(self) -> ModelVersion:
        return self.versions[max(self.versions)]


class ModelRegistry:
    """Every served model, by name."""

    def __init__(self, models: dict[str, Model]) -> None:
        self.models = models

    @classmethod
    def load(cls, configs: list[ModelConfig]) -> "ModelRegistry":
        """Load all configured versions (seconds per version; raises on a broken SavedModel)."""
        models: dict[str, Model] = {}
        for c in configs:
            loaded = {}
            for v in c.versions:
                path = c.base_path / str(v)
                try:
                    loaded[v] = ModelVersion(c.name, v, path)
                except Exception as e:  # noqa: BLE001 - any load failure is a config problem
                    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise LoadError(f"model {c.name!r} version {v}: cannot load SavedModel "
                                    f"{path}: {first}") from None
            models[c.name] = Model(c, loaded)
        return cls(models)

    def model(self, name: str, version: int | None = None) -> Model:
        m = self.models.get(name)
        if m is None:
            what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise not_found(f"Servable not found for request: {what}")
        return m

    def resolve(self, name: str, version: int | None = None,
                label: str | None = None) -> ModelVersion:
        """The version a request means: by number, by label, or the latest."""
        if not name:
            raise invalid("model_spec.name is empty: name the model to call")
        m = self.model(name, version)
        if version is not None:
            mv = m.versions.get(int(version))
            if mv is None:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return mv
        if label:
            v = m.labels.get(label)
            if v is None:
                raise invalid(f"Unrecognized servable version label: {label}")
            return m.versions[v]
        return m.latest

    def status_versions(self, name: str, version: int | None = None,
                        label: str | None = None) -> list[ModelVersion]:
        """Versions a GetModelStatus request covers (all when none is named)."""
        m = self.models.get(name)
        if m is None:
            raise not_found(f"Could not find any versions of model {name}")
        if version is not None:
            mv = m.versions.get(int(version))
            if mv is None:
                raise not_found(f"Could not find version {version} of model {name}")
            return [mv]
        if label:
            return [self.resolve(name, None, label)]
        return [m.versions[v] for v in sorted(m.versions)]


class LoadError(Exception):
    """A configured SavedModel could not be loaded (one-line message)."""
