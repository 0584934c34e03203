"""SavedModel serving: retrieval top-k and ranking models, served by plain TensorFlow in a clean process."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import serve_in_clean_process

from tfsmooth._keras import keras
from tfsmooth.activations import smelu
from tfsmooth.losses import scalable_cross_entropy
from tfsmooth.serving import export_model, export_retrieval, input_signature_of

N_USERS, N_ITEMS, DIM = 40, 2500, 8


def two_tower(seed: int = 0):
    keras.utils.set_random_seed(seed)
    users = keras.Input((), dtype="int32", name="user_id")
    hidden = keras.layers.Dense(16, activation=smelu)(keras.layers.Embedding(N_USERS, 16)(users))
    tower = keras.Model(users, keras.layers.Dense(DIM)(hidden))
    items = keras.layers.Embedding(N_ITEMS, DIM)
    items.build((None,))
    return tower, items


def train_with_sce(tower, items, steps: int = 5):
    """A few steps of Scalable Cross-Entropy on synthetic (user, item) pairs."""
    rng = np.random.default_rng(1)
    optimizer = keras.optimizers.Adam(0.05)
    variables = tower.trainable_variables + items.trainable_variables
    for step in range(steps):
        users = rng.integers(0, N_USERS, size=128).astype("int32")
        labels = ((users * 37) % N_ITEMS).astype("int32")
        with tf.GradientTape() as tape:
            loss = scalable_cross_entropy(
                tower(users), items.embeddings, labels, bucket_size_y=64, seed=step
            )
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
    assert np.isfinite(float(loss))


def reference_top_k(tower, table, users, k):
    scores = tower(users).numpy().astype(np.float64) @ np.asarray(table, np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1)


@pytest.mark.slow
def test_retrieval_trained_with_sce_serves_the_same_top_k_without_tfsmooth(tmp_path):
    tower, items = two_tower()
    train_with_sce(tower, items)
    ids = np.array([f"movie-{i}" for i in range(N_ITEMS)])
    path = export_retrieval(tower, items, tmp_path / "retrieval", candidate_ids=ids, k=10)
    users = np.arange(0, N_USERS, 3, dtype="int32")
    served = serve_in_clean_process(path, {"user_id": users}, signature="serving_default")
    order, scores = reference_top_k(tower, items.embeddings, users, 10)
    np.testing.assert_array_equal(served["item_ids"], ids[order])
    np.testing.assert_allclose(served["scores"], scores, rtol=1e-5, atol=1e-5)


def test_chunked_top_k_equals_the_full_ranking(tmp_path):
    tower, items = two_tower(seed=2)
    table = np.asarray(items.embeddings)
    users = np.arange(N_USERS, dtype="int32")
    for chunk in (N_ITEMS, 777, 64):
        path = export_retrieval(tower, table, tmp_path / f"r{chunk}", k=25, chunk_size=chunk)
        loaded = tf.saved_model.load(path)  # keep it alive while its function runs
        top = loaded.serve(tf.constant(users))
        order, scores = reference_top_k(tower, table, users, 25)
        np.testing.assert_array_equal(top["item_ids"], order)
        np.testing.assert_allclose(top["scores"], scores, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_ranking_model_with_smelu_serves_identically_without_tfsmooth(tmp_path):
    from tfsmooth.models import build_ranking_model

    model = build_ranking_model(
        30,
        50,
        5,
        activation="smelu",
        hidden_units=(16, 8),
        cross=True,
        tasks=("binary", "regression"),
        seed=0,
    )
    rng = np.random.default_rng(0)
    features = {
        "user": rng.integers(0, 30, size=16).astype("int32"),
        "item": rng.integers(0, 50, size=16).astype("int32"),
        "genres": (rng.random((16, 5)) < 0.3).astype("float32"),
    }
    path = export_model(model, tmp_path / "ranker")
    served = serve_in_clean_process(path, features, signature="serving_default")
    expected = model(features, training=False)
    assert set(served) == {"binary", "regression"}
    for task in served:  # graph vs eager execution: equal up to float rounding
        np.testing.assert_allclose(served[task], np.asarray(expected[task]), rtol=1e-6, atol=1e-7)


def test_sequential_model_exports_without_an_explicit_signature(tmp_path):
    # Keras 3 Sequential models have `.inputs` but raise on `.input`.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation=smelu), keras.layers.Dense(1)]
    )
    assert input_signature_of(model).shape.as_list() == [None, 6]
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    served = serve_in_clean_process(export_model(model, tmp_path / "seq"), x)
    (output,) = served.values()
    np.testing.assert_allclose(output, np.asarray(model(x)), rtol=1e-6, atol=1e-7)


def test_bad_arguments(tmp_path):
    tower, items = two_tower()
    table = np.asarray(items.embeddings)
    with pytest.raises(ValueError, match=r"`k` must be an integer in \[1, num_candidates=2500\]"):
        export_retrieval(tower, table, tmp_path / "a", k=0)
    with pytest.raises(ValueError, match="one id per candidate"):
        export_retrieval(tower, table, tmp_path / "b", candidate_ids=np.arange(3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        export_retrieval(tower, np.full((4, DIM), np.nan, "float32"), tmp_path / "c", k=1)
    with pytest.raises(ValueError, match=r"float matrix \[num_candidates, d\]"):
        export_retrieval(tower, np.arange(5), tmp_path / "d", k=1)
    with pytest.raises(ValueError, match="`chunk_size` must be a positive integer"):
        export_retrieval(tower, table, tmp_path / "e", chunk_size=0)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="Pass `input_signature`"):
        input_signature_of(Subclassed())
