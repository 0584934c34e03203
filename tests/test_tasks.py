"""tfsmooth.tasks.CatalogRetrieval with real TensorFlow Recommenders models (tf-keras)."""

from __future__ import annotations

import importlib
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import requires_tfrs
from helpers import assert_config_roundtrip
from references import full_ce_reference, reference_ranks

from tfsmooth._keras import IS_KERAS_3, keras
from tfsmooth.losses import CatalogCrossEntropy, ScalableCrossEntropy

USERS, ITEMS, D = 60, 200, 8


def test_module_imports_everywhere_and_explains_what_is_missing():
    tasks = importlib.import_module("tfsmooth.tasks")
    if IS_KERAS_3:
        with pytest.raises(
            ImportError, match=re.escape('needs tf-keras: pip install "tfsmooth[tfrs]"')
        ):
            tasks.CatalogRetrieval  # noqa: B018
    else:
        tfrs = pytest.importorskip("tensorflow_recommenders")
        assert issubclass(tasks.CatalogRetrieval, tfrs.tasks.Task)
        from tfsmooth.tasks import CatalogRetrieval

        assert CatalogRetrieval is tasks.CatalogRetrieval
        # Defined at module level (not inside a function): reachable by its module and name.
        assert CatalogRetrieval.__qualname__ == "CatalogRetrieval"
        module = importlib.import_module(CatalogRetrieval.__module__)
        assert module.CatalogRetrieval is CatalogRetrieval
    with pytest.raises(AttributeError):
        tasks.NotAThing  # noqa: B018


def interactions(seed=0, size=480):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, USERS, size=size).astype(np.int32)
    items = ((users * 3 + rng.integers(0, 2, size=size)) % ITEMS).astype(np.int32)
    return {"user": users, "item": items}


def two_tower(loss, top_k=(10,), seed=0):
    import tensorflow_recommenders as tfrs

    from tfsmooth.tasks import CatalogRetrieval

    class TwoTower(tfrs.Model):
        def __init__(self):
            super().__init__()
            self.users = keras.layers.Embedding(USERS, D)
            self.items = keras.layers.Embedding(ITEMS, D)
            self.task = CatalogRetrieval(self.items, loss=loss, top_k=top_k)

        def compute_loss(self, features, training=False):
            queries = self.users(features["user"])
            return self.task(queries, features["item"], compute_metrics=not training)

    keras.utils.set_random_seed(seed)
    model = TwoTower()
    model.users.build((None,))
    model.items.build((None,))
    return model


@requires_tfrs
def test_is_a_tfrs_task_and_its_loss_is_the_catalog_loss():
    import tensorflow_recommenders as tfrs

    model = two_tower(CatalogCrossEntropy(chunk_size=64))
    assert isinstance(model.task, tfrs.tasks.Task)
    data = interactions()
    queries = model.users(data["user"][:32]).numpy()
    loss = model.task(queries, data["item"][:32], compute_metrics=False)
    table = model.items.embeddings.numpy()
    np.testing.assert_allclose(
        float(loss), full_ce_reference(queries, table, data["item"][:32])[0], rtol=1e-5
    )


@requires_tfrs
@pytest.mark.parametrize("loss", ["scalable", "catalog", "sampled"])
def test_a_tfrs_two_tower_model_trains_against_the_catalog(loss):
    model = two_tower(loss)
    model.compile(keras.optimizers.Adam(0.05))
    data = interactions()
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(96)
    history = model.fit(dataset, epochs=5, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0]
    # The task's HR@10 / NDCG@10 against the full catalog, checked against numpy ranking.
    result = model.evaluate(dataset, return_dict=True, verbose=0)
    queries = model.users(data["user"]).numpy()
    ranks = reference_ranks(queries, model.items.embeddings.numpy(), data["item"])
    assert result["hit_rate_at_10"] == pytest.approx(np.mean(ranks < 10), abs=1e-6)
    expected_ndcg = np.mean(np.where(ranks < 10, 1 / np.log2(ranks + 2.0), 0.0))
    assert result["ndcg_at_10"] == pytest.approx(expected_ndcg, abs=1e-6)
    assert result["hit_rate_at_10"] > 0.3  # well above chance (10 / 200)


@requires_tfrs
def test_an_item_tower_over_item_features_gets_gradients():
    import tensorflow_recommenders as tfrs

    from tfsmooth.tasks import CatalogRetrieval

    features = np.random.default_rng(1).normal(size=(ITEMS, 12)).astype(np.float32)

    class FeatureTowers(tfrs.Model):
        def __init__(self):
            super().__init__()
            self.users = keras.layers.Embedding(USERS, D)
            self.item_tower = keras.layers.Dense(D)
            self.task = CatalogRetrieval(
                self.item_tower, item_features=features, loss=ScalableCrossEntropy(bucket_size_y=32)
            )

        def compute_loss(self, batch, training=False):
            return self.task(self.users(batch["user"]), batch["item"])

    model = FeatureTowers()
    batch = {k: v[:64] for k, v in interactions().items()}
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch)
    kernel = model.item_tower.kernel
    grad = tape.gradient(loss, kernel)
    assert grad is not None and np.all(np.isfinite(grad)) and np.any(grad.numpy())


@requires_tfrs
def test_mirrored_strategy_step_equals_the_single_device_step(mirrored_strategy):
    data = {k: v[:64] for k, v in interactions().items()}

    def one_step(model):
        model.compile(keras.optimizers.SGD(1.0))
        model.fit(tf.data.Dataset.from_tensor_slices(data).batch(64), epochs=1, verbose=0)
        return model.users.embeddings.numpy(), model.items.embeddings.numpy()

    expected = one_step(two_tower(CatalogCrossEntropy(), top_k=(), seed=3))
    with mirrored_strategy.scope():
        replicated = two_tower(CatalogCrossEntropy(), top_k=(), seed=3)
    for got, want in zip(one_step(replicated), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@requires_tfrs
def test_config_round_trips_whole_and_bad_arguments():
    from tfsmooth.tasks import CatalogRetrieval

    items = keras.layers.Embedding(ITEMS, D)
    assert_config_roundtrip(CatalogRetrieval(items, loss="sampled", top_k=[5, 10]))
    assert_config_roundtrip(CatalogRetrieval(items, loss=ScalableCrossEntropy(bucket_size_y=8)))
    with pytest.raises(ValueError, match="`items` must be the item table"):
        CatalogRetrieval()
    with pytest.raises(ValueError, match="needs `item_features`"):
        CatalogRetrieval(keras.layers.Dense(4))
    with pytest.raises(ValueError, match="`loss` must be one of"):
        CatalogRetrieval(items, loss="softmax")
    with pytest.raises(ValueError, match="`top_k` must hold integers >= 1"):
        CatalogRetrieval(items, top_k=[0])


@requires_tfrs
def test_arguments_numpy_scalars_and_labels():
    from tfsmooth.tasks import CatalogRetrieval

    items = keras.layers.Embedding(ITEMS, D)
    items.build((None,))
    task = CatalogRetrieval(
        items, loss="catalog", top_k=np.int64(5), metric_chunk_size=np.int64(64)
    )
    assert task.top_k == [5] and task.get_config()["metric_chunk_size"] == 64
    assert CatalogRetrieval(items, top_k=[np.int32(3), 10]).top_k == [3, 10]
    with pytest.raises(ValueError, match=re.escape("Received: metric_chunk_size=0")):
        CatalogRetrieval(items, metric_chunk_size=0)
    with pytest.raises(TypeError, match="`top_k` must hold integers"):
        CatalogRetrieval(items, top_k=[2.5])
    with pytest.raises(TypeError, match="`top_k` must be an int or a list"):
        CatalogRetrieval(items, top_k="10")
    data = interactions()
    queries = tf.constant(np.random.default_rng(2).normal(size=(16, D)).astype(np.float32))
    labels = data["item"][:16]
    as_int = float(task(queries, labels))
    np.testing.assert_allclose(float(task(queries, labels.astype(np.float32))), as_int, rtol=1e-6)
    broken = labels.astype(np.float32)
    broken[0] = 2.7
    with pytest.raises(ValueError, match=r"`labels` must be integer.*2\.7"):
        task(queries, broken)


@requires_tfrs
def test_nan_queries_are_misses_not_hits():
    """The issue: NaN query embeddings scored HR = NDCG = 1 in CatalogRetrieval's metrics."""
    from tfsmooth.tasks import CatalogRetrieval

    items = keras.layers.Embedding(ITEMS, D)
    items.build((None,))
    task = CatalogRetrieval(items, loss="catalog", top_k=[ITEMS])
    queries = np.random.default_rng(3).normal(size=(8, D)).astype(np.float32)
    queries[:4] = np.nan
    loss = task(tf.constant(queries), interactions()["item"][:8])
    assert np.isnan(float(loss))
    # k = every item: the 4 finite queries hit, the 4 NaN ones miss.
    assert float(task.ranking_metrics[f"hit_rate_at_{ITEMS}"].result()) == 0.5
    assert float(task.ranking_metrics[f"ndcg_at_{ITEMS}"].result()) < 0.5
