"""LazyAdam and Clippy(LazyAdam) against numpy references; state of untouched rows; saving."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    TABLE_SHAPE,
    assert_config_roundtrip,
    assert_restarts_continue_exactly,
    dense_steps,
    initial_values,
    make_steps,
    run_steps,
)
from references import adam_reference, lazy_adam_reference, numpy_clipped

from tfsmooth._keras import keras
from tfsmooth.optimizers import Clippy, LazyAdam, clipping_statistics, nonfinite_gradient_count
from tfsmooth.optimizers._statistics import STATISTICS

LR = 0.05


def test_dense_gradients_are_exactly_keras_adam(rng):
    initial = initial_values(rng)
    steps = dense_steps(rng, initial, 8)
    ours = run_steps(LazyAdam(LR), initial, steps, sparse=False)
    keras_adam = run_steps(keras.optimizers.Adam(LR), initial, steps, sparse=False)
    for a, b in zip(ours, keras_adam):
        np.testing.assert_array_equal(a, b)
    step = adam_reference(LR)
    expected = [np.array(w, np.float64) for w in initial]
    for t, gradients in enumerate(steps):
        expected = [step(t, i, w, g) for i, (w, g) in enumerate(zip(expected, gradients))]
    for a, b in zip(ours, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sparse_gradients_match_the_lazy_reference(rng):
    """Repeated rows are summed; only looked-up rows and their moments change."""
    initial, steps = initial_values(rng), make_steps(rng, 10)
    optimizer = LazyAdam(LR)
    got = run_steps(optimizer, initial, steps)
    step, moments = lazy_adam_reference(LR)
    expected, _ = numpy_clipped(step, initial, steps, relative=0.0, absolute=1e9)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    m, v = moments[1]  # the table's moments
    state = [np.asarray(x) for x in optimizer.variables]
    table_m = [value for value in state if value.shape == TABLE_SHAPE]
    assert len(table_m) == 2
    np.testing.assert_allclose(table_m[0], m, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(table_m[1], v, rtol=1e-5, atol=1e-9)


def test_untouched_rows_and_their_moments_stay_bit_for_bit():
    table = tf.Variable(np.ones(TABLE_SHAPE, np.float32))
    optimizer = LazyAdam(LR)
    first = tf.IndexedSlices(tf.ones([2, 3]), tf.constant([0, 1]), tf.constant(TABLE_SHAPE))
    optimizer.apply_gradients([(first, table)])
    weights = table.numpy().copy()
    state = [np.asarray(v).copy() for v in optimizer.variables]
    second = tf.IndexedSlices(tf.ones([2, 3]), tf.constant([2, 2]), tf.constant(TABLE_SHAPE))
    optimizer.apply_gradients([(second, table)])
    after = table.numpy()
    np.testing.assert_array_equal(after[[0, 1, 3, 4]], weights[[0, 1, 3, 4]])  # Adam moves 0, 1
    assert np.all(after[2] < weights[2])
    for before, now in zip(state, optimizer.variables):
        now = np.asarray(now)
        if now.shape == TABLE_SHAPE:
            np.testing.assert_array_equal(now[[0, 1, 3]], before[[0, 1, 3]])
            assert np.all(now[2] != before[2])


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("granularity", ["variable", "row"])
def test_clippy_lazy_adam_matches_numpy(granularity, jit_compile, rng):
    """Weights and the last step's statistics, with and without XLA (which sums the gradient
    norm pairwise, over row counts that are not powers of two)."""
    initial, steps = initial_values(rng), make_steps(rng, 10)
    optimizer = Clippy(
        LazyAdam(LR),
        variable_relative_threshold=0.1,
        absolute_threshold=1e-3,
        granularity=granularity,
    )
    got = run_steps(optimizer, initial, steps, jit_compile=jit_compile)
    step, _ = lazy_adam_reference(LR)
    expected, statistics = numpy_clipped(
        step, initial, steps, relative=0.1, absolute=1e-3, granularity=granularity
    )
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    recorded = clipping_statistics(optimizer)
    assert len(recorded) == 3
    for values, reference in zip(recorded.values(), statistics):
        np.testing.assert_allclose([values[k] for k in STATISTICS], reference, rtol=1e-4)


def test_nonfinite_gradient_leaves_the_variable_and_its_moments(rng):
    for optimizer in (LazyAdam(LR), Clippy(LazyAdam(LR))):
        table = tf.Variable(rng.normal(size=TABLE_SHAPE).astype(np.float32))
        good = tf.IndexedSlices(tf.ones([2, 3]), tf.constant([0, 4]), tf.constant(TABLE_SHAPE))
        optimizer.apply_gradients([(good, table)])
        weights, state = table.numpy().copy(), [np.asarray(v).copy() for v in optimizer.variables]
        values = tf.constant([[1.0, math.nan, 1.0], [1.0, 1.0, 1.0]])
        bad = tf.IndexedSlices(values, tf.constant([0, 5]), tf.constant(TABLE_SHAPE))
        optimizer.apply_gradients([(bad, table)])
        np.testing.assert_array_equal(table.numpy(), weights)
        assert int(nonfinite_gradient_count(optimizer)) == 1
        for before, now in zip(state, optimizer.variables):
            if np.asarray(now).shape == TABLE_SHAPE:
                np.testing.assert_array_equal(np.asarray(now), before)


def test_config_round_trips_whole():
    optimizer = LazyAdam(0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-6, clipnorm=1.0)
    assert_config_roundtrip(optimizer)
    config = optimizer.get_config()
    assert (config["beta_1"], config["beta_2"], config["epsilon"]) == (0.8, 0.99, 1e-6)
    assert_config_roundtrip(Clippy(LazyAdam(0.02), granularity="row"))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"learning_rate": -1.0}, ValueError, "learning_rate=-1.0"),
        ({"beta_1": 1.0}, ValueError, "beta_1=1.0"),
        ({"beta_2": -0.1}, ValueError, "beta_2=-0.1"),
        ({"epsilon": math.inf}, ValueError, "epsilon=inf"),
        ({"beta_1": "0.9"}, TypeError, "beta_1='0.9'"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        LazyAdam(**kwargs)


@pytest.mark.parametrize("wrapped", [False, True])
def test_restarts_continue_exactly(wrapped, rng, tmp_path):
    def optimizer():
        return Clippy(LazyAdam(LR), granularity="row") if wrapped else LazyAdam(LR)

    assert_restarts_continue_exactly(optimizer, rng, tmp_path)


def test_row_statistics_of_an_empty_sparse_gradient_say_nothing_was_clipped():
    from tfsmooth.optimizers import clipping_statistics

    table = tf.Variable(np.ones(TABLE_SHAPE, np.float32))
    optimizer = Clippy(LazyAdam(LR), granularity="row")
    empty = tf.IndexedSlices(tf.zeros([0, 3]), tf.zeros([0], tf.int32), tf.constant(TABLE_SHAPE))
    optimizer.apply_gradients([(empty, table)])
    (stats,) = clipping_statistics(optimizer).values()
    assert (stats["clipping_factor"], stats["update_ratio"]) == (1.0, 0.0)
    np.testing.assert_array_equal(table.numpy(), np.ones(TABLE_SHAPE, np.float32))
