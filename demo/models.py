"""The demo models: a good and a worse digits classifier, as SavedModels.

`build_demo_assets(cache_dir)` trains two small Keras classifiers on
scikit-learn's bundled 8x8 digits data set (no download), exports them as
TF Serving versions 1 and 2 of the model `digits`, and writes the golden set,
a reference sample for input drift and a TF Serving `models.config` with the
version labels `stable` -> 1 and `canary` -> 2.

- Version 1 (the good one) is trained on every training row.
- Version 2 (the worse one) is the same network trained on a small slice of
  the training rows for fewer epochs: a realistic regression (a data
  pipeline that silently dropped most of the data) that costs several
  points of accuracy on the golden set, not a broken model.

Everything is seeded, so two builds give the same models. The result is
cached under `cache_dir`, keyed by a hash of the build parameters: a second
call finds the manifest and returns at once, without importing TensorFlow.

Signature `serving_default`: input `x` float32 [-1, 64] (pixel intensities
scaled to 0..1); outputs `probabilities` float32 [-1, 10] and `classes`
int64 [-1].
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODEL_NAME = "digits"
N_FEATURES = 64
N_CLASSES = 10

# Changing any of these changes the cache key, so stale assets are never reused.
BUILD_PARAMS: dict = {
    "format": 2,
    "seed": 20240611,
    "golden_rows": 360,
    "hidden_units": 32,
    "batch_size": 32,
    "learning_rate": 0.01,
    # version -> how it is trained
    "versions": {
        "1": {"train_rows": None, "epochs": 30},
        "2": {"train_rows": 120, "epochs": 15},
    },
    "labels": {"stable": 1, "canary": 2},
}

_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DemoAssets:
    """Paths to the demo's model files and data sets.

    base_path: folder holding the model folder, i.e. `base_path/digits/1`
        and `base_path/digits/2` are the SavedModels.
    golden: npz with `inputs` float32 (n, 64) and `labels` int64 (n,), held
        out from training.
    reference: npz with `inputs` float32 (m, 64), training rows, the
        baseline for input drift.
    model_config: TF Serving `model_config_list` text file serving both
        versions with labels stable=1, canary=2 (absolute base_path).
    accuracy: golden-set accuracy (ratio 0..1) of each version, measured
        at build time.
    """

    base_path: Path
    golden: Path
    reference: Path
    model_config: Path
    model_name: str = MODEL_NAME
    accuracy: dict[int, float] = field(default_factory=dict)

    @property
    def model_base_path(self) -> Path:
        """The TF Serving `base_path` of the model (holds numbered versions)."""
        return self.base_path / self.model_name

    @property
    def labels(self) -> dict[str, int]:
        """Version labels written into `model_config`."""
        return dict(BUILD_PARAMS["labels"])


def _params_hash() -> str:
    blob = json.dumps(BUILD_PARAMS, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def model_config_text(model_base_path: Path, name: str = MODEL_NAME,
                      versions: tuple[int, ...] = (1, 2),
                      labels: dict[str, int] | None = None) -> str:
    """A TF Serving model_config_list serving `versions` of one model, with labels."""
    labels = dict(BUILD_PARAMS["labels"]) if labels is None else labels
    lines = [
        "model_config_list {",
        "  config {",
        f'    name: "{name}"',
        f'    base_path: "{Path(model_base_path).resolve()}"',
        '    model_platform: "tensorflow"',
        "    model_version_policy {",
        "      specific {",
        *[f"        versions: {v}" for v in versions],
        "      }",
        "    }",
    ]
    for label, version in labels.items():
        lines.append(f'    version_labels {{ key: "{label}" value: {int(version)} }}')
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def _load_cached(root: Path) -> DemoAssets | None:
    manifest = root / _MANIFEST
    if not manifest.is_file():
        return None
    try:
        info = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if info.get("params_hash") != _params_hash():
        return None
    assets = DemoAssets(
        base_path=root / "models",
        golden=root / "golden.npz",
        reference=root / "reference.npz",
        model_config=root / "models.config",
        accuracy={int(k): float(v) for k, v in info.get("accuracy", {}).items()},
    )
    for version in BUILD_PARAMS["versions"]:
        if not (assets.model_base_path / version / "saved_model.pb").is_file():
            return None
    if not (assets.golden.is_file() and assets.reference.is_file()):
        return None
    _write_config(assets)
    return assets


def _write_config(assets: DemoAssets) -> None:
    # Rewritten when it differs: the absolute base_path follows the cache if
    # the checkout moved.
    text = model_config_text(assets.model_base_path)
    try:
        if assets.model_config.read_text() == text:
            return
    except OSError:
        pass
    tmp = assets.model_config.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, assets.model_config)


def _split(seed: int, golden_rows: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_train, x_gold, y_train, y_gold = train_test_split(
        x, y, test_size=golden_rows, random_state=seed, stratify=y)
    return x_train, y_train, x_gold, y_gold


def _train_and_export(x, y, epochs: int, seed: int, out_dir: Path) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(N_FEATURES,), dtype="float32"),
        tf.keras.layers.Dense(BUILD_PARAMS["hidden_units"], activation="relu"),
        tf.keras.layers.Dense(N_CLASSES, activation="softmax"),
    ])
    model.compile(
        optimizer=tf.keras.optimizers.Adam(BUILD_PARAMS["learning_rate"]),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(x, y, epochs=epochs, batch_size=BUILD_PARAMS["batch_size"],
              shuffle=True, verbose=0)

    class Serving(tf.Module):
        def __init__(self, keras_model):
            super().__init__()
            self.model = keras_model

        @tf.function(input_signature=[tf.TensorSpec([None, N_FEATURES], tf.float32, name="x")])
        def serve(self, x):
            probabilities = self.model(x, training=False)
            classes = tf.argmax(probabilities, axis=1, output_type=tf.int64)
            return {"probabilities": probabilities, "classes": classes}

    module = Serving(model)
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.serve})


def _golden_accuracy(model_dir: Path, x: np.ndarray, y: np.ndarray) -> float:
    import tensorflow as tf

    fn = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    classes = fn(x=tf.constant(x))["classes"].numpy()
    return float(np.mean(classes == y))


def build_demo_assets(cache_dir: Path) -> DemoAssets:
    """Build (or find cached) the demo SavedModels, golden set and config.

    cache_dir: folder for the cache; assets go into a subfolder named by a
    hash of the build parameters. Safe to call from several processes at
    once: each builds in a private folder and the first to finish wins.
    Takes a few seconds the first time, milliseconds afterwards.
    """
    cache_dir = Path(cache_dir).resolve()
    root = cache_dir / f"demo-{_params_hash()}"
    found = _load_cached(root)
    if found is not None:
        return found

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cache_dir.mkdir(parents=True, exist_ok=True)
    seed = int(BUILD_PARAMS["seed"])
    x_train, y_train, x_gold, y_gold = _split(seed, int(BUILD_PARAMS["golden_rows"]))

    work = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_dir))
    try:
        accuracy: dict[str, float] = {}
        for version, spec in BUILD_PARAMS["versions"].items():
            rows = spec["train_rows"]
            xs, ys = (x_train, y_train) if rows is None else (x_train[:rows], y_train[:rows])
            out = work / "models" / MODEL_NAME / version
            _train_and_export(xs, ys, int(spec["epochs"]), seed + int(version), out)
            accuracy[version] = _golden_accuracy(out, x_gold, y_gold)
        np.savez(work / "golden.npz", inputs=x_gold, labels=y_gold)
        np.savez(work / "reference.npz", inputs=x_train)
        manifest = {
            "params_hash": _params_hash(),
            "params": BUILD_PARAMS,
            "accuracy": accuracy,
            "golden_rows": int(len(y_gold)),
            "reference_rows": int(len(x_train)),
        }
        (work / _MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        try:
            os.rename(work, root)
        except OSError:
            # Another process finished first (or a stale, incomplete folder
            # is in the way): keep a complete one.
            if _load_cached(root) is None:
                shutil.rmtree(root, ignore_errors=True)
                os.rename(work, root)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    found = _load_cached(root)
    if found is None:
        raise RuntimeError(f"demo assets in {root} are incomplete after building")
    return found
