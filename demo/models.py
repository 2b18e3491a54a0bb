"""The demo models: digits classifiers as TF Serving SavedModels, and their data.

Two sets, both trained on scikit-learn's bundled 8x8 digits (1,797 rows, no
download), cached under `cache_dir` and keyed by a hash of their build
parameters (a second call finds the manifest and returns at once, without
importing TensorFlow):

`build_demo_assets(cache_dir)`: the small set the test suites share.
  Versions 1 and 2 of the model `digits`, a 360-row golden set and a
  `models.config` with the labels `stable` -> 1 and `canary` -> 2.
  - Version 1 (the good one) is trained on every training row.
  - Version 2 (the worse one) is the same network trained on a small slice
    of the training rows for fewer epochs: a realistic regression (a data
    pipeline that silently dropped most of the data) that costs several
    points of accuracy on the golden set, not a broken model.

`build_rollout_assets(cache_dir)`: what `make demo` rolls out. Its golden
  set is as large as the gate needs: `shadowgate plan` on the demo's
  analysis (alert 2, rollback 5 points, alpha 1 %, beta 5 %) asks for 1,531
  rows at its planning discordance of 6 %, so 1,550 of the 1,797 rows are
  held out and the networks learn from the other 247.
  - Version 1, stable: trained on the 247 rows.
  - Version 2, the good canary: version 1 trained for a few more epochs
    with a new seed (a warm-started retrain): as accurate, and it answers
    like version 1 on all but a few percent of the rows.
  - Version 3, the bad canary: trained on 40 of the rows (the pipeline that
    dropped most of the data): much less accurate. The demo also serves it
    with an injected log-normal latency, so its tail is worse too.
  One `model_config_list` per role (stable.config: version 1 labelled
  `stable`; good.config / bad.config: version 2 / 3 labelled `canary`), as
  a primary and a canary deployment would each serve their own version.

Everything is seeded, so two builds give the same models.

Signature `serving_default`: input `x` float32 [-1, 64] (pixel intensities
scaled to 0..1); outputs `probabilities` float32 [-1, 10] and `classes`
int64 [-1].

`python -m demo.models [--rollout] [--cache-dir DIR]` builds a set in its
own process (the demo runs it so TensorFlow's start-up lines go to a log).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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

# What `make demo` rolls out (see the module docstring for why these sizes).
ROLLOUT_PARAMS: dict = {
    "format": 1,
    "seed": 20240611,
    "golden_rows": 1550,
    "hidden_units": 64,
    "batch_size": 32,
    "learning_rate": 0.01,
    # version -> how it is trained; warm_start: continue from that version's weights
    "versions": {
        "1": {"train_rows": None, "epochs": 40},
        "2": {"train_rows": None, "epochs": 10, "warm_start": "1"},
        "3": {"train_rows": 40, "epochs": 10},
    },
    # role -> the version its server serves, under the label its analysis calls
    "roles": {"stable": [1, "stable"], "good": [2, "canary"], "bad": [3, "canary"]},
}

_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DemoAssets:
    """Paths to the test suites' model files and data sets.

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


@dataclass(frozen=True)
class RolloutAssets:
    """The demo rollout's models and data (see `build_rollout_assets`).

    base_path: holds `digits/1`, `digits/2`, `digits/3` (SavedModels).
    golden, reference: as in DemoAssets (golden: 1,550 held-out rows).
    configs: role ("stable", "good", "bad") -> its model_config_list file.
    versions: role -> the version that role serves.
    accuracy: version -> golden-set accuracy (ratio 0..1) at build time.
    agreement: version -> share of golden rows on which it predicts the
        same class as version 1 (1 - discordance with stable).
    """

    base_path: Path
    golden: Path
    reference: Path
    configs: dict[str, Path]
    versions: dict[str, int]
    model_name: str = MODEL_NAME
    accuracy: dict[int, float] = field(default_factory=dict)
    agreement: dict[int, float] = field(default_factory=dict)
    golden_rows: int = 0

    @property
    def model_base_path(self) -> Path:
        return self.base_path / self.model_name


def _params_hash(params: dict | None = None) -> str:
    blob = json.dumps(BUILD_PARAMS if params is None else params, sort_keys=True).encode()
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


def _read_manifest(root: Path, params: dict) -> dict | None:
    try:
        info = json.loads((root / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if info.get("params_hash") != _params_hash(params):
        return None
    base = root / "models" / MODEL_NAME
    if not all((base / v / "saved_model.pb").is_file() for v in params["versions"]):
        return None
    if not ((root / "golden.npz").is_file() and (root / "reference.npz").is_file()):
        return None
    return info


def _load_cached(root: Path) -> DemoAssets | None:
    info = _read_manifest(root, BUILD_PARAMS)
    if info is None:
        return None
    assets = DemoAssets(
        base_path=root / "models",
        golden=root / "golden.npz",
        reference=root / "reference.npz",
        model_config=root / "models.config",
        accuracy={int(k): float(v) for k, v in info.get("accuracy", {}).items()},
    )
    _write_if_changed(assets.model_config, model_config_text(assets.model_base_path))
    return assets


def _load_cached_rollout(root: Path) -> RolloutAssets | None:
    info = _read_manifest(root, ROLLOUT_PARAMS)
    if info is None:
        return None
    base = root / "models"
    configs, versions = {}, {}
    for role, (version, label) in ROLLOUT_PARAMS["roles"].items():
        configs[role] = root / f"{role}.config"
        versions[role] = int(version)
        _write_if_changed(configs[role], model_config_text(base / MODEL_NAME, versions=(int(version),),
                                                           labels={label: int(version)}))
    return RolloutAssets(
        base_path=base, golden=root / "golden.npz", reference=root / "reference.npz",
        configs=configs, versions=versions,
        accuracy={int(k): float(v) for k, v in info.get("accuracy", {}).items()},
        agreement={int(k): float(v) for k, v in info.get("agreement", {}).items()},
        golden_rows=int(info.get("golden_rows", 0)))


def _write_if_changed(path: Path, text: str) -> None:
    # Rewritten when it differs: the absolute base_path follows the cache if
    # the checkout moved.
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _split(seed: int, golden_rows: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_train, x_gold, y_train, y_gold = train_test_split(
        x, y, test_size=golden_rows, random_state=seed, stratify=y)
    return x_train, y_train, x_gold, y_gold


def _train_and_export(x, y, epochs: int, seed: int, out_dir: Path, params: dict | None = None,
                      init=None):
    """Train the classifier (from `init`'s weights when given) and save it as a SavedModel; returns it."""
    import tensorflow as tf

    params = BUILD_PARAMS if params is None else params
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(N_FEATURES,), dtype="float32"),
        tf.keras.layers.Dense(params["hidden_units"], activation="relu"),
        tf.keras.layers.Dense(N_CLASSES, activation="softmax"),
    ])
    model.compile(
        optimizer=tf.keras.optimizers.Adam(params["learning_rate"]),
        loss="sparse_categorical_crossentropy",
    )
    if init is not None:
        model.set_weights(init.get_weights())
    model.fit(x, y, epochs=epochs, batch_size=params["batch_size"],
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
    return model


def _golden_classes(model_dir: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    fn = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    return fn(x=tf.constant(x))["classes"].numpy()


def _build(cache_dir: Path, prefix: str, params: dict, load: Callable[[Path], object | None]):
    """Train every version of `params` into `cache_dir/<prefix>-<hash>` (or find it there)."""
    cache_dir = Path(cache_dir).resolve()
    root = cache_dir / f"{prefix}-{_params_hash(params)}"
    found = load(root)
    if found is not None:
        return found

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cache_dir.mkdir(parents=True, exist_ok=True)
    seed = int(params["seed"])
    x_train, y_train, x_gold, y_gold = _split(seed, int(params["golden_rows"]))

    work = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_dir))
    try:
        accuracy: dict[str, float] = {}
        classes: dict[str, np.ndarray] = {}
        trained: dict[str, object] = {}
        for version, spec in params["versions"].items():
            rows = spec["train_rows"]
            xs, ys = (x_train, y_train) if rows is None else (x_train[:rows], y_train[:rows])
            out = work / "models" / MODEL_NAME / version
            init = trained.get(spec["warm_start"]) if spec.get("warm_start") else None
            trained[version] = _train_and_export(
                xs, ys, int(spec["epochs"]), seed + int(version), out,
                **({} if params is BUILD_PARAMS else {"params": params, "init": init}))
            classes[version] = _golden_classes(out, x_gold)
            accuracy[version] = float(np.mean(classes[version] == y_gold))
        np.savez(work / "golden.npz", inputs=x_gold, labels=y_gold)
        np.savez(work / "reference.npz", inputs=x_train)
        manifest = {
            "params_hash": _params_hash(params),
            "params": params,
            "accuracy": accuracy,
            "golden_rows": int(len(y_gold)),
            "reference_rows": int(len(x_train)),
        }
        if params is not BUILD_PARAMS:
            first = next(iter(classes))
            manifest["agreement"] = {v: float(np.mean(c == classes[first])) for v, c in classes.items()}
        (work / _MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        try:
            os.rename(work, root)
        except OSError:
            # Another process finished first (or a stale, incomplete folder
            # is in the way): keep a complete one.
            if load(root) is None:
                shutil.rmtree(root, ignore_errors=True)
                os.rename(work, root)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    found = load(root)
    if found is None:
        raise RuntimeError(f"demo assets in {root} are incomplete after building")
    return found


def build_demo_assets(cache_dir: Path) -> DemoAssets:
    """Build (or find cached) the test suites' SavedModels, golden set and config.

    cache_dir: folder for the cache; assets go into a subfolder named by a
    hash of the build parameters. Safe to call from several processes at
    once: each builds in a private folder and the first to finish wins.
    Takes a few seconds the first time, milliseconds afterwards.
    """
    return _build(cache_dir, "demo", BUILD_PARAMS, _load_cached)


def rollout_assets_cached(cache_dir: Path) -> RolloutAssets | None:
    """The demo rollout's assets if they are cached (never imports TensorFlow), else None."""
    return _load_cached_rollout(Path(cache_dir).resolve() / f"demo-rollout-{_params_hash(ROLLOUT_PARAMS)}")


def build_rollout_assets(cache_dir: Path) -> RolloutAssets:
    """Build (or find cached) the demo rollout's three versions, golden set and configs.

    Same caching and concurrency rules as build_demo_assets; about 15 s the
    first time (three small networks), milliseconds afterwards.
    """
    return _build(cache_dir, "demo-rollout", ROLLOUT_PARAMS, _load_cached_rollout)


def main(argv: list[str] | None = None) -> int:
    """Build a set in this process; prints its folder. Exit 0, or 1 on failure."""
    ap = argparse.ArgumentParser(prog="python -m demo.models", description="Build the demo models (cached).")
    ap.add_argument("--cache-dir", default=str(Path(__file__).resolve().parent.parent / ".cache"))
    ap.add_argument("--rollout", action="store_true", help="the `make demo` set instead of the test suites' set")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    assets = (build_rollout_assets if args.rollout else build_demo_assets)(Path(args.cache_dir))
    print(assets.base_path.parent, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
