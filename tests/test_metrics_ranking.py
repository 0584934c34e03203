"""catalog_rank / catalog_ranking_metrics against numpy ranking of the full score matrix."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf
from references import nan_rule_reference, reference_ranks

# The public names (tfsmooth.metrics exports them).
from tfsmooth._keras import keras
from tfsmooth.metrics import catalog_rank, catalog_ranking_metrics, hit_rate_and_ndcg

B, C, D = 48, 300, 8


def inputs(rng):
    return (
        rng.normal(size=(B, D)).astype(np.float32),
        rng.normal(size=(C, D)).astype(np.float32),
        rng.integers(0, C, size=B).astype(np.int32),
    )


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 300, 8192])
def test_ranks_match_numpy(rng, chunk_size):
    queries, items, labels = inputs(rng)
    ranks = catalog_rank(queries, items, labels, chunk_size=chunk_size)
    np.testing.assert_array_equal(ranks, reference_ranks(queries, items, labels))


def test_an_embedding_layer_as_the_table(rng):
    """A built (unsharded) ``Embedding`` ranks like its table; an unbuilt one says so."""
    queries, items, labels = inputs(rng)
    layer = keras.layers.Embedding(C, D)
    with pytest.raises(ValueError, match="built Embedding layer"):
        catalog_rank(queries, layer, labels)
    layer.build((None,))
    layer.embeddings.assign(items)
    ranks = catalog_rank(queries, layer, labels, chunk_size=64)
    np.testing.assert_array_equal(ranks, reference_ranks(queries, items, labels))


def test_exclusions_with_padding_repeats_and_the_label_itself(rng):
    queries, items, labels = inputs(rng)
    exclude = rng.integers(-1, C, size=(B, 20)).astype(np.int32)  # -1 is padding
    exclude[:, 0] = exclude[:, 1]  # repeats
    exclude[:, 2] = labels  # the true item is never excluded
    exclude[:, 3] = C + 4  # out of range: ignored
    ranks = catalog_rank(queries, items, labels, exclude=exclude, chunk_size=50)
    np.testing.assert_array_equal(ranks, reference_ranks(queries, items, labels, exclude))


def test_hit_rate_and_ndcg(rng):
    queries, items, labels = inputs(rng)
    # Point a few queries at their own item, so both metrics are away from 0.
    queries[:10] = items[labels[:10]] * 5
    metrics = catalog_ranking_metrics(queries, items, labels, k=10)
    ranks = reference_ranks(queries, items, labels)
    np.testing.assert_array_equal(metrics["rank"], ranks)
    np.testing.assert_array_equal(metrics["hit_rate"], (ranks < 10).astype(np.float32))
    expected_ndcg = np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)
    np.testing.assert_allclose(metrics["ndcg"], expected_ndcg, rtol=1e-6)
    assert 0 < float(np.mean(metrics["hit_rate"])) < 1


def test_ties_count_against_the_true_item():
    queries = np.zeros((3, 4), np.float32)
    items = np.zeros((20, 4), np.float32)
    ranks = catalog_rank(queries, items, np.array([0, 5, 19]))
    np.testing.assert_array_equal(ranks, [19, 19, 19])


def test_inside_a_function_and_xla(rng):
    queries, items, labels = inputs(rng)
    expected = reference_ranks(queries, items, labels)
    for jit in (False, True):
        fn = tf.function(lambda q, w, y: catalog_rank(q, w, y, chunk_size=64), jit_compile=jit)
        np.testing.assert_array_equal(fn(queries, items, labels), expected)


def test_bad_arguments(rng):
    queries, items, labels = inputs(rng)
    labels[0] = C
    with pytest.raises(ValueError, match=rf"in \[0, {C}\)\. Received: labels containing {C}"):
        catalog_rank(queries, items, labels)
    with pytest.raises(ValueError, match=re.escape("`k` must be an integer >= 1. Received: k=0")):
        catalog_ranking_metrics(queries, items, labels, k=0)
    with pytest.raises(ValueError, match="`chunk_size` must be an integer >= 1"):
        catalog_rank(queries, items, labels, chunk_size=0)
    with pytest.raises(TypeError, match="`chunk_size` must be an integer"):
        catalog_rank(queries, items, labels, chunk_size=8.0)
    with pytest.raises(TypeError, match="`k` must be an integer"):
        catalog_ranking_metrics(queries, items, labels, k=np.float32(10))


def test_unclear_errors_now_name_the_argument(rng):
    queries, items, labels = inputs(rng)
    with pytest.raises(ValueError, match=r"same last dimension d.*queries.shape=\(48, 8\)"):
        catalog_rank(queries, items[:, :5], labels)
    with pytest.raises(TypeError, match="Received: labels=None"):
        catalog_rank(queries, items, None)
    with pytest.raises(ValueError, match=r"`labels` must have shape \[B\]"):
        catalog_rank(queries, items, labels[:5])
    broken = labels.astype(np.float32)
    broken[1] = 2.7
    with pytest.raises(ValueError, match=r"`labels` must be integer.*2\.7"):
        catalog_rank(queries, items, broken)
    with pytest.raises(tf.errors.InvalidArgumentError, match="float labels are accepted only"):
        tf.function(catalog_rank)(queries, items, tf.constant(broken))
    outside = labels.copy()
    outside[2] = C
    # The range check runs before any gather of a label, so its message is the one raised.
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`labels` must be item indices"):
        tf.function(catalog_rank)(queries, items, tf.constant(outside))
    # Whole-valued floats (as Keras hands labels over) rank like integers; numpy scalars pass.
    np.testing.assert_array_equal(
        catalog_rank(queries, items, labels.astype(np.float32), chunk_size=np.int64(64)),
        reference_ranks(queries, items, labels),
    )


@pytest.mark.parametrize("chunk_size", [7, 8192])
def test_nan_scores_never_rank_first_and_nan_targets_are_misses(rng, chunk_size):
    """The issue: NaN queries got HR@k = NDCG@k = 1. Checked with k = C: everything else hits."""
    queries, items, labels = inputs(rng)
    queries[:5] = np.nan  # whole queries NaN
    queries[5, 2] = np.nan
    items[labels[10]] = np.nan  # the true item of query 10 is NaN for every query
    items[[3, 4, 100]] = np.nan  # other NaN rows: never ahead of a finite score
    exclude = rng.integers(-1, C, size=(B, 6)).astype(np.int32)
    for k in (10, C):
        for excluded in (None, exclude):
            metrics = catalog_ranking_metrics(
                queries, items, labels, k=k, exclude=excluded, chunk_size=chunk_size
            )
            ranks, hit, ndcg = nan_rule_reference(queries, items, labels, k, excluded)
            np.testing.assert_array_equal(metrics["rank"], ranks)
            np.testing.assert_array_equal(metrics["hit_rate"], hit)
            np.testing.assert_allclose(metrics["ndcg"], ndcg, rtol=1e-6)
    nan_target = np.isnan(np.einsum("bd,bd->b", queries, items[labels]))
    assert nan_target[:6].all() and nan_target[10]
    assert np.all(metrics["hit_rate"].numpy()[nan_target] == 0)
    assert np.all(metrics["hit_rate"].numpy()[~nan_target] == 1)  # k = C


def test_hit_rate_and_ndcg_of_ranks():
    hit, ndcg = hit_rate_and_ndcg(np.array([0, 3, 9, 10, 20], np.int32), 10, num_items=20)
    np.testing.assert_array_equal(hit, [1, 1, 1, 0, 0])
    np.testing.assert_allclose(ndcg, [1.0, 1 / np.log2(5), 1 / np.log2(11), 0, 0], rtol=1e-6)
