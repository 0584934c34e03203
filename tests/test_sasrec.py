"""SASRec: causality and padding, training with every loss, ranking, configs, saving, serving."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_config_roundtrip, export_saved_model, serve_in_clean_process
from references import full_ce_reference

from tfsmooth._keras import keras
from tfsmooth.data import build_sequences, synthetic_ratings
from tfsmooth.losses import CatalogCrossEntropy, ScalableCrossEntropy
from tfsmooth.models import SASRec

L = 12


@pytest.fixture(scope="module")
def splits():
    data = synthetic_ratings(n_users=120, n_items=80, n_ratings=2400, seed=5)
    return build_sequences(data, max_length=L)


def small_model(num_items, **kwargs):
    keras.utils.set_random_seed(kwargs.pop("seed", 0))
    options = dict(max_length=L, embedding_dim=16, num_blocks=1, dropout_rate=0.0)
    options.update(kwargs)
    model = SASRec(num_items, **options)
    model(tf.zeros([1, options["max_length"]], tf.int32))
    return model


def test_outputs_are_causal_and_padding_is_inert(splits):
    model = small_model(splits.num_items, num_blocks=2, num_heads=2)
    inputs = splits.test_inputs[:8].copy()
    inputs[:, :3] = 0  # some padding on the left of every row
    base = model(inputs).numpy()
    assert base.shape == (8, L, 16)
    assert not np.any(base[:, :3])  # padding positions output 0
    changed = inputs.copy()
    changed[:, 8:] = (changed[:, 8:] % splits.num_items) + 1  # change only the later items
    after = model(changed).numpy()
    np.testing.assert_allclose(after[:, :8], base[:, :8], atol=1e-6)
    assert not np.allclose(after[:, 8:], base[:, 8:])
    # Shorter inputs (no left padding to max_length) give the same last-position outputs.
    np.testing.assert_allclose(model(inputs[:, 3:]).numpy(), base[:, 3:], atol=1e-5)


def test_the_item_table_is_both_input_and_output(splits):
    model = small_model(splits.num_items, loss=CatalogCrossEntropy())
    x = tf.constant(splits.train_inputs[:16])
    y = tf.constant(splits.train_labels[:16])
    with tf.GradientTape(persistent=True) as tape:
        hidden = model(x)
        loss = model.compute_loss(x, y, hidden)
        input_only = tf.reduce_sum(hidden)
    table = model.item_embeddings
    output_grad = tf.convert_to_tensor(tape.gradient(loss, table)).numpy()
    input_grad = tf.convert_to_tensor(tape.gradient(input_only, table)).numpy()
    # The output side touches every item row (softmax over the catalog) ...
    assert np.count_nonzero(np.abs(output_grad).sum(axis=1)) > splits.num_items // 2
    # ... the input side only the rows of items in the inputs; padding row 0 gets nothing.
    used = np.unique(splits.train_inputs[:16])
    rows = np.flatnonzero(np.abs(input_grad).sum(axis=1))
    assert set(rows) <= set(used[used > 0].tolist())


@pytest.mark.parametrize(
    "loss",
    [
        "catalog",
        "scalable",
        "sampled",
        "bce",
        ScalableCrossEntropy(n_buckets=6, bucket_size_x=40, bucket_size_y=16),
    ],
    ids=["catalog", "scalable", "sampled", "bce", "sce-instance"],
)
def test_trains_with_every_loss(splits, loss):
    model = small_model(splits.num_items, loss=loss)
    model.compile(keras.optimizers.Adam(5e-3))
    history = model.fit(
        splits.train_inputs, splits.train_labels, batch_size=40, epochs=3, verbose=0
    )
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_ranking_metrics_match_numpy(splits):
    model = small_model(splits.num_items)
    inputs, labels = splits.test_inputs, splits.test_labels
    result = model.evaluate_ranking(inputs, labels, k=10, batch_size=50)
    hidden = model(inputs).numpy()[:, -1].astype(np.float64)
    scores = hidden @ model.item_embeddings.numpy().astype(np.float64).T
    hits, ndcgs = [], []
    for row, label, history in zip(scores, labels, inputs):
        skip = {0, label, *history.tolist()}
        others = [j for j in range(1, splits.num_items + 1) if j not in skip]
        rank = int(np.sum(row[others] >= row[label]))
        hits.append(rank < 10)
        ndcgs.append(1 / np.log2(rank + 2) if rank < 10 else 0.0)
    np.testing.assert_array_equal(result["per_user"]["hit_rate"], hits)
    np.testing.assert_allclose(result["per_user"]["ndcg"], ndcgs, rtol=1e-5)
    assert result["hit_rate"] == pytest.approx(np.mean(hits))
    top, _ = model.recommend(inputs[:5], k=7)
    for row, history in zip(top.numpy(), inputs[:5]):
        assert 0 not in row and not set(row) & set(history.tolist())


def test_config_round_trips_whole(splits):
    assert_config_roundtrip(small_model(splits.num_items, loss="bce", num_negatives=3))
    model = small_model(splits.num_items, loss=ScalableCrossEntropy(bucket_size_y=32, seed=2))
    assert_config_roundtrip(model)
    assert model.get_config()["loss"]["config"]["bucket_size_y"] == 32


def test_keras_save_load_and_serving(splits, tmp_path):
    model = small_model(splits.num_items, loss=ScalableCrossEntropy(bucket_size_y=16))
    model.compile(keras.optimizers.Adam(1e-2))
    model.fit(splits.train_inputs, splits.train_labels, batch_size=60, epochs=1, verbose=0)
    inputs = splits.test_inputs[:6]
    expected = model(inputs).numpy()
    path = tmp_path / "sasrec.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, SASRec)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded(inputs).numpy(), expected, atol=1e-6)
    served = serve_in_clean_process(export_saved_model(model, tmp_path), inputs)["output"]
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_loss_is_scaled_per_replica_in_both_flavours(splits, mirrored_strategy):
    """Under a strategy, compute_loss returns the replica's mean divided by the number of replicas
    (Keras 3's loss classes do it themselves, SASRec does it for tf-keras), so the summed replica
    gradients are those of the global mean -- what fit under MirroredStrategy needs."""
    with mirrored_strategy.scope():
        model = small_model(splits.num_items, loss=CatalogCrossEntropy())
    x = tf.constant(splits.train_inputs[:8])
    y = tf.constant(splits.train_labels[:8])
    hidden = model(x).numpy().reshape(-1, 16)
    labels = splits.train_labels[:8].ravel()
    table = model.item_embeddings.numpy()
    expected = full_ce_reference(hidden, table, labels, labels > 0)[0]
    per_replica = mirrored_strategy.run(lambda: model.compute_loss(x, y, model(x)))
    values = [float(v) for v in mirrored_strategy.experimental_local_results(per_replica)]
    np.testing.assert_allclose(values, [expected / 2] * 2, rtol=1e-5)


def test_bad_arguments(splits):
    with pytest.raises(ValueError, match=re.escape("`loss` must be one of")):
        SASRec(10, loss="softmax")
    with pytest.raises(ValueError, match="`embedding_dim` must be divisible by `num_heads`"):
        SASRec(10, embedding_dim=10, num_heads=3)
    with pytest.raises(ValueError, match=re.escape("`dropout_rate` must be >= 0 and < 1")):
        SASRec(10, dropout_rate=1.0)
    with pytest.raises(TypeError, match=re.escape("Received: dropout_rate='0.1'")):
        SASRec(10, dropout_rate="0.1")
    with pytest.raises(ValueError, match=re.escape("`num_items` must be an integer >= 1")):
        SASRec(0)
    with pytest.raises(ValueError, match="SASRec trains with its own catalog loss"):
        SASRec(10).compile("adam", loss="mse")
    # The boundaries just inside the checks are accepted as given (numpy integers too).
    edge = SASRec(np.int64(1), embedding_dim=12, num_heads=3, dropout_rate=0.0).get_config()
    assert (edge["num_items"], edge["embedding_dim"], edge["num_heads"]) == (1, 12, 3)
    assert edge["dropout_rate"] == 0.0


def test_unclear_errors_now_name_the_argument(splits):
    model = small_model(splits.num_items)
    inputs, labels = splits.test_inputs[:4], splits.test_labels[:4]
    with pytest.raises(ValueError, match=rf"`k` must be an integer >= 1 and <= {splits.num_items}"):
        model.recommend(inputs, k=splits.num_items + 1)
    with pytest.raises(TypeError, match="`exclude_history` must be True or False"):
        model.recommend(inputs, exclude_history=1)
    with pytest.raises(
        ValueError, match=re.escape("`batch_size` must be an integer >= 1. Received: batch")
    ):
        model.evaluate_ranking(inputs, labels, batch_size=0)
    with pytest.raises(ValueError, match=r"`inputs` must be a non-empty batch.*shape=\(0, 12\)"):
        model.evaluate_ranking(inputs[:0], labels[:0])
    with pytest.raises(ValueError, match="`labels` must hold one next item per sequence"):
        model.evaluate_ranking(inputs, labels[:2])
    with pytest.raises(ValueError, match=r"`labels` must be items in \[1, num_items="):
        model.evaluate_ranking(inputs, np.zeros(4, np.int32))
    with pytest.raises(ValueError, match=r"`labels` must be integer.*2\.5"):
        model.evaluate_ranking(inputs, np.full(4, 2.5))
    longer = np.ones((2, L + 3), np.int32)
    with pytest.raises(ValueError, match=rf"`inputs` must be at most max_length={L} items long"):
        model(longer)
    with pytest.raises(ValueError, match=rf"`inputs` must be at most max_length={L}"):
        model.evaluate_ranking(longer, np.ones(2, np.int32))
    with pytest.raises(ValueError, match=rf"`inputs` must be at most max_length={L}"):
        model.recommend(longer)
    # Whole-valued float labels (as data pipelines hand them over) rank like integers.
    as_int = model.evaluate_ranking(inputs, labels)["per_user"]["ndcg"]
    as_float = model.evaluate_ranking(inputs, labels.astype(np.float32))["per_user"]["ndcg"]
    np.testing.assert_array_equal(as_float, as_int)


def test_a_nan_item_table_scores_no_hit(splits):
    """The issue: evaluate_ranking gave HR = NDCG = 1 once the item table went NaN."""
    model = small_model(splits.num_items)
    inputs, labels = splits.test_inputs[:16], splits.test_labels[:16]
    assert model.evaluate_ranking(inputs, labels, k=splits.num_items)["hit_rate"] == 1.0
    model.item_embeddings.assign(np.full(model.item_embeddings.shape, np.nan, np.float32))
    result = model.evaluate_ranking(inputs, labels, k=splits.num_items)
    assert result["hit_rate"] == 0.0 and result["ndcg"] == 0.0
    # One NaN row: never recommended above an item with a finite score.
    model = small_model(splits.num_items)
    table = model.item_embeddings.numpy()
    table[3] = np.nan
    model.item_embeddings.assign(table)
    items, scores = model.recommend(inputs, k=5, exclude_history=False)
    assert not np.any(items.numpy() == 3) and np.all(np.isfinite(scores.numpy()))
