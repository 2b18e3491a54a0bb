"""The demo models: cached, TF Serving-shaped, and version 2 measurably worse."""

from __future__ import annotations

import numpy as np

from demo.models import build_demo_assets
from modelserver.config import load_config_file


def test_golden_set_shape(demo_assets):
    g = np.load(demo_assets.golden)
    assert g["inputs"].dtype == np.float32 and g["inputs"].shape == (360, 64)
    assert g["labels"].dtype == np.int64 and g["labels"].shape == (360,)
    assert 0.0 <= g["inputs"].min() and g["inputs"].max() <= 1.0
    ref = np.load(demo_assets.reference)["inputs"]
    assert ref.shape[1] == 64 and len(ref) > 1000


def test_golden_rows_are_held_out_of_training(demo_assets):
    gold = np.load(demo_assets.golden)["inputs"]
    ref = np.load(demo_assets.reference)["inputs"]  # the training rows
    ref_rows = {r.tobytes() for r in ref}
    assert not any(r.tobytes() in ref_rows for r in gold)


def test_v2_is_measurably_worse_than_v1_on_the_golden_set(demo_assets):
    import tensorflow as tf

    g = np.load(demo_assets.golden)
    acc = {}
    for v in (1, 2):
        fn = tf.saved_model.load(str(demo_assets.model_base_path / str(v))).signatures["serving_default"]
        out = fn(x=tf.constant(g["inputs"]))
        assert out["probabilities"].dtype == tf.float32 and out["classes"].dtype == tf.int64
        acc[v] = float(np.mean(out["classes"].numpy() == g["labels"]))
    assert acc[1] >= 0.95
    assert 0.04 <= acc[1] - acc[2] <= 0.12
    assert acc == demo_assets.accuracy


def test_second_build_is_cached(demo_assets, monkeypatch):
    import demo.models

    def no_training(*args, **kwargs):
        raise AssertionError("cached assets were rebuilt")

    monkeypatch.setattr(demo.models, "_train_and_export", no_training)
    again = build_demo_assets(demo_assets.base_path.parent.parent)
    assert again == demo_assets


def test_model_config_serves_both_versions_with_labels(demo_assets):
    (m,) = load_config_file(demo_assets.model_config)
    assert m.name == "digits" and m.versions == (1, 2)
    assert m.labels == {"stable": 1, "canary": 2}
    assert m.base_path.is_absolute()
