"""tfsmooth.ops: exact chunked top-k with exclusions against a numpy brute force; NaN, free slots."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_exact_top_k
from references import brute_force_scores

from tfsmooth.ops import NO_ITEM, exact_top_k
from tfsmooth.ops.chunks import split_chunks
from tfsmooth.ops.top_k import running_top_k


@pytest.mark.parametrize("chunk_size", [300, 64, 7])
def test_exact_top_k_with_exclusions_matches_a_brute_force(chunk_size):
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(6, 5)).astype("float32")
    candidates = rng.normal(size=(300, 5)).astype("float32")
    exclude = rng.integers(-1, 300, size=(6, 20))  # -1 padding, repeats likely
    exclude[0, :] = NO_ITEM
    exclude[1, :] = np.argsort(-brute_force_scores(queries[1:2], candidates))[0, :20]  # the best
    scores, indices = exact_top_k(queries, candidates, 15, exclude=exclude, chunk_size=chunk_size)
    assert_exact_top_k(indices, scores, brute_force_scores(queries, candidates, exclude), 15)


def test_without_exclusions_and_k_equal_to_the_catalog():
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(3, 4)).astype("float32")
    candidates = rng.normal(size=(9, 4)).astype("float32")
    scores, indices = exact_top_k(queries, candidates, 9, chunk_size=4)
    assert_exact_top_k(indices, scores, brute_force_scores(queries, candidates), 9)


def test_free_slots_come_last_with_no_item_and_minus_inf():
    candidates = np.array([[3.0], [1.0], [2.0], [4.0]], "float32")
    queries = np.array([[1.0], [-1.0]], "float32")
    exclude = np.array([[0, 1, 3], [3, 3, NO_ITEM]])  # row 0 keeps item 2; row 1 keeps 0, 1, 2
    scores, indices = exact_top_k(queries, candidates, 4, exclude=exclude, chunk_size=3)
    np.testing.assert_array_equal(indices, [[2, -1, -1, -1], [1, 2, 0, -1]])
    np.testing.assert_array_equal(
        scores, [[2.0, -np.inf, -np.inf, -np.inf], [-1.0, -2.0, -3.0, -np.inf]]
    )


def test_nan_scores_rank_below_every_number():
    # Query (inf, 1): candidates with a positive first entry score +inf, negative -inf, zero NaN.
    candidates = np.array([[0.0, 5.0], [1.0, 0.0], [0.0, -2.0], [-1.0, 0.0], [2.0, 1.0]], "float32")
    queries = np.array([[np.inf, 1.0], [1.0, 1.0]], "float32")
    for chunk in (5, 2):
        scores, indices = exact_top_k(queries, candidates, 5, chunk_size=chunk)
        scores, indices = np.asarray(scores), np.asarray(indices)
        assert set(indices[0, :2]) == {1, 4} and np.all(scores[0, :2] == np.inf)
        assert indices[0, 2] == 3 and scores[0, 2] == -np.inf
        assert set(indices[0, 3:]) == {0, 2} and np.all(np.isnan(scores[0, 3:]))
        np.testing.assert_array_equal(indices[1], [0, 4, 1, 3, 2])  # finite: plain order
    # A NaN query: every score NaN, nothing silently finite.
    scores, _ = exact_top_k(np.array([[np.nan, 0.0]], "float32"), candidates, 3)
    assert np.all(np.isnan(scores))


def test_float64_and_float16():
    rng = np.random.default_rng(2)
    queries = rng.normal(size=(4, 3))
    candidates = rng.normal(size=(50, 3))
    scores, indices = exact_top_k(queries, candidates, 6, exclude=[[1, 2]] * 4, chunk_size=16)
    assert scores.dtype == tf.float64
    reference = brute_force_scores(queries, candidates, [[1, 2]] * 4)
    assert_exact_top_k(indices, scores, reference, 6, tol=1e-12)
    half = tf.constant(queries, tf.float16)
    scores, indices = exact_top_k(half, tf.constant(candidates, tf.float16), 6, chunk_size=16)
    assert scores.dtype == tf.float32
    reference = brute_force_scores(half.numpy(), tf.cast(candidates, tf.float16).numpy())
    assert_exact_top_k(indices, scores, reference, 6, tol=1e-3)


def test_inside_a_tf_function():
    rng = np.random.default_rng(3)
    queries = rng.normal(size=(5, 4)).astype("float32")
    candidates = rng.normal(size=(40, 4)).astype("float32")
    exclude = rng.integers(0, 40, size=(5, 3))
    step = tf.function(lambda q, e: exact_top_k(q, candidates, 7, exclude=e, chunk_size=16))
    scores, indices = step(tf.constant(queries), tf.constant(exclude))
    assert_exact_top_k(indices, scores, brute_force_scores(queries, candidates, exclude), 7)


def test_bad_arguments():
    queries, candidates = np.zeros((2, 3), "float32"), np.zeros((5, 3), "float32")
    with pytest.raises(ValueError, match=r"`k` must be an integer >= 1 and <= 5\. Received: k=6"):
        exact_top_k(queries, candidates, 6)
    with pytest.raises(TypeError, match=r"Received: k=2\.0"):
        exact_top_k(queries, candidates, 2.0)
    with pytest.raises(ValueError, match="Received: chunk_size=0"):
        exact_top_k(queries, candidates, 2, chunk_size=0)
    with pytest.raises(TypeError, match="`candidates` must be floating-point"):
        exact_top_k(queries, np.zeros((5, 3), "int32"), 2)
    with pytest.raises(ValueError, match="same last dimension"):
        exact_top_k(queries, np.zeros((5, 4), "float32"), 2)
    with pytest.raises(ValueError, match="one row per query"):
        exact_top_k(queries, candidates, 2, exclude=np.zeros((3, 1), "int32"))
    with pytest.raises(ValueError, match="integer candidate indices"):
        exact_top_k(queries, candidates, 2, exclude=np.zeros((2, 1), "float32"))


def test_running_top_k_and_split_chunks():
    # The losses' selection step, reached through its public home.
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(3, 4)).astype("float32")
    rows = rng.normal(size=(30, 4)).astype("float32")
    values, indices = running_top_k(tf.constant(centres), tf.constant(rows), tf.constant(5), 8)
    reference = brute_force_scores(centres, rows)
    for row in range(3):
        order = np.argsort(-values[row].numpy())
        assert_exact_top_k(
            indices[row].numpy()[order][None],
            values[row].numpy()[order][None],
            reference[row : row + 1],
            5,
        )
    for rows_count, chunk in ((10, 4), (0, 4), (7, 7), (1, 3)):
        size, steps, tail = (int(v) for v in split_chunks(tf.constant(rows_count), chunk))
        assert size <= chunk and steps * size + tail == rows_count and (tail < steps or steps == 0)
