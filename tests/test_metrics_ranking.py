"""catalog_rank / catalog_ranking_metrics against numpy ranking of the full score matrix."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf

from tfsmooth.metrics.ranking import catalog_rank, catalog_ranking_metrics

B, C, D = 48, 300, 8


def reference_ranks(queries, items, labels, exclude=None):
    scores = queries.astype(np.float64) @ items.T.astype(np.float64)
    ranks = []
    for i, label in enumerate(labels):
        skip = {label}
        if exclude is not None:
            skip |= {int(e) for e in exclude[i] if 0 <= e < len(items)}
        others = [j for j in range(len(items)) if j not in skip]
        ranks.append(int(np.sum(scores[i, others] >= scores[i, label])))
    return np.asarray(ranks)


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
