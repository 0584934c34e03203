"""The Clippy rule (`shrink_update`) against closed forms, a numpy reference and TFRS's helper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import requires_tfrs
from references import numpy_shrink

from tfsmooth.optimizers import _statistics, shrink_update

# Closed forms: tensor, references, relative factors, absolute, expected (update, factor).
CASES = [
    (2.0, [4.0], [0.1], 0.02, 0.42, 0.21),
    (2.0, [-4.0], [0.1], 0.02, 0.42, 0.21),
    (-2.0, [4.0], [0.1], 0.02, -0.42, 0.21),
    (-2.0, [4.0], [0.1], 0.0, -0.4, 0.2),
    (-2.0, [0.0], [0.1], 0.0, 0.0, 0.0),  # zero bound: nothing may move
    (2.0, [20.0], [0.1], 0.1, 2.0, 1.0),  # within the bound: untouched
    (0.0, [1.0], [0.1], 0.0, 0.0, 1.0),  # a zero update never constrains
    (0.0, [0.0], [0.0], 0.0, 0.0, 1.0),
    (2.0, [4.0, -5.0], [0.1, 0.2], 0.02, 1.42, 0.71),  # bound 0.4 + 1.0 + 0.02
    (2.0, [], [], 0.02, 0.02, 0.01),  # absolute bound only
]


@pytest.mark.parametrize("tensor, references, relative, absolute, update, factor", CASES)
def test_scalar_closed_forms(tensor, references, relative, absolute, update, factor):
    result = shrink_update(
        tf.constant(tensor), [tf.constant(r) for r in references], relative, absolute
    )
    np.testing.assert_allclose(result.update.numpy(), update, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.factor.numpy(), factor, rtol=1e-6, atol=1e-7)


def test_tensor_closed_form_and_ratio():
    # bounds 0.1 * [1, 0.1] + 0.01 = [0.11, 0.02]: the second coordinate decides.
    result = shrink_update(tf.constant([1.0, 1.0]), [tf.constant([1.0, 0.1])], [0.1], 0.01)
    np.testing.assert_allclose(result.update.numpy(), [0.02, 0.02], rtol=1e-6)
    np.testing.assert_allclose(result.factor.numpy(), 0.02, rtol=1e-6)
    np.testing.assert_allclose(result.ratio.numpy(), 50.0, rtol=1e-6)  # 1 / 0.02


def test_ratio_keeps_moving_below_the_bound():
    small = shrink_update(tf.constant([0.01, -0.02]), [tf.constant([1.0, 1.0])], [0.1], 0.0)
    np.testing.assert_allclose(small.factor.numpy(), 1.0)
    np.testing.assert_allclose(small.ratio.numpy(), 0.2, rtol=1e-6)  # 0.02 / 0.1
    zero = shrink_update(tf.zeros([3]), [tf.ones([3])], [0.1], 0.01)
    assert zero.factor.numpy() == 1.0 and zero.ratio.numpy() == 0.0


def test_zero_bound_with_zero_absolute_threshold():
    result = shrink_update(
        tf.constant([1.0, 1.0, 0.0, 0.0]), [tf.constant([1.0, 0.0, 1.0, 0.0])], [0.1], 0.0
    )
    np.testing.assert_array_equal(result.update.numpy(), [0.0, 0.0, 0.0, 0.0])
    assert result.factor.numpy() == 0.0 and math.isinf(result.ratio.numpy())


def test_broadcast_reference():
    result = shrink_update(tf.constant([[1.0, 2.0], [1.0, 2.0]]), [tf.constant(1.0)], [0.1], 0.1)
    np.testing.assert_allclose(result.update.numpy(), [[0.1, 0.2], [0.1, 0.2]], rtol=1e-6)
    np.testing.assert_allclose(result.factor.numpy(), 0.1, rtol=1e-6)


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("shape", [(7,), (5, 3), (4, 2, 3)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_numpy_reference(per_row, shape, dtype, rng):
    update = rng.normal(size=shape).astype(dtype)
    update[0] = 0.0  # a row (or element) with no update
    weights = rng.normal(size=shape).astype(dtype)
    precondition = rng.uniform(0.5, 2.0, size=shape).astype(dtype)
    result = shrink_update(update, [weights, precondition], [0.3, 0.01], 0.05, per_row=per_row)
    expected, factor, ratio = numpy_shrink(
        update, [weights, precondition], [0.3, 0.01], 0.05, per_row
    )
    rtol = 1e-6 if dtype == "float32" else 1e-12
    assert result.update.dtype == dtype
    np.testing.assert_allclose(result.update.numpy(), expected, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(result.factor.numpy(), factor, rtol=rtol)
    np.testing.assert_allclose(result.ratio.numpy(), ratio, rtol=rtol)
    assert result.factor.shape == ((shape[0],) if per_row else ())


def test_every_coordinate_within_its_bound(rng):
    update = rng.normal(size=(50, 8)) * 10 ** rng.uniform(-3, 3, size=(50, 1))
    weights = rng.normal(size=(50, 8))
    for per_row in (False, True):
        shrunk = shrink_update(update, [weights], [0.1], 1e-3, per_row=per_row).update.numpy()
        assert np.all(np.abs(shrunk) <= (0.1 * np.abs(weights) + 1e-3) * (1 + 1e-9))


def test_per_row_spares_rows_from_an_outlier(rng):
    update = rng.normal(size=(6, 4)) * 0.01
    update[3] *= 1e4  # one outlier row
    weights = np.ones((6, 4))
    per_variable = shrink_update(update, [weights], [0.1], 1e-3).update.numpy()
    per_row = shrink_update(update, [weights], [0.1], 1e-3, per_row=True).update.numpy()
    others = [0, 1, 2, 4, 5]
    np.testing.assert_allclose(per_row[others], update[others], rtol=1e-12)  # untouched
    assert np.all(np.abs(per_variable[others]) < 0.01 * np.abs(update[others]))  # all shrunk
    np.testing.assert_allclose(np.abs(per_row[3]).max(), 0.101, rtol=1e-9)  # at its own bound


def test_nan_and_inf_updates_are_not_hidden():
    weights = tf.ones([3])
    nan = shrink_update(tf.constant([0.01, np.nan, 0.01]), [weights], [0.1], 1e-3).update
    assert np.isnan(nan.numpy()[1])
    inf = shrink_update(tf.constant([0.01, np.inf, 0.01]), [weights], [0.1], 1e-3).update
    assert not np.all(np.isfinite(inf.numpy()))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_is_computed_in_float32(dtype):
    update = tf.cast(tf.constant([[300.0, -2.0], [1.0, 0.5]]), dtype)
    weights = tf.cast(tf.constant([[1.0, 2.0], [0.5, 1.0]]), dtype)
    result = shrink_update(update, [weights], [0.1], 1e-3, per_row=True)
    assert result.update.dtype == dtype and result.factor.dtype == tf.float32
    expected, factor, _ = numpy_shrink(
        tf.cast(update, tf.float32).numpy(),
        [tf.cast(weights, tf.float32).numpy()],
        [0.1],
        1e-3,
        True,
    )
    np.testing.assert_allclose(result.factor.numpy(), factor, rtol=1e-6)
    np.testing.assert_allclose(
        tf.cast(result.update, tf.float32).numpy(), expected, rtol=1e-2, atol=1e-4
    )


def test_eager_graph_and_xla_agree(rng):
    update = rng.normal(size=(9, 5)).astype("float32")
    weights = rng.normal(size=(9, 5)).astype("float32")

    def run(u, w):
        result = shrink_update(u, [w], [0.2], 1e-2, per_row=True)
        return result.update, result.factor

    eager = run(update, weights)
    graph = tf.function(run)(update, weights)
    xla = tf.function(run, jit_compile=True)(update, weights)
    for other in (graph, xla):
        for a, b in zip(eager, other):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"relative_thresholds": [-0.1]},
            ValueError,
            r"`relative_thresholds\[0\]` must be .* Received: relative_thresholds\[0\]=-0.1",
        ),
        ({"relative_thresholds": [math.nan]}, ValueError, "relative_thresholds"),
        ({"absolute_threshold": -1.0}, ValueError, "Received: absolute_threshold=-1.0"),
        ({"absolute_threshold": math.inf}, ValueError, "absolute_threshold"),
        ({"relative_thresholds": [0.1, 0.2]}, ValueError, "one value per reference"),
        ({"per_row": 1}, TypeError, "Received: per_row=1"),
        ({"update": tf.constant([1, 2])}, TypeError, "update.dtype=int32"),
        ({"update": tf.constant(1.0), "per_row": True}, ValueError, "at least one axis"),
        ({"references": tf.ones([2])}, TypeError, "list or tuple"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    arguments = {
        "update": tf.ones([2]),
        "references": [tf.ones([2])],
        "relative_thresholds": [0.1],
        "absolute_threshold": 0.01,
    }
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        shrink_update(**arguments)


@requires_tfrs
def test_equals_tfrs_shrink_by_references(rng):
    from tensorflow_recommenders.experimental.optimizers import clippy_adagrad

    for absolute in (0.0, 1e-7, 1e-2):
        update = (rng.normal(size=(40, 6)) * 10 ** rng.uniform(-4, 1, size=(40, 1))).astype(
            "float32"
        )
        update[::7] = 0.0
        weights = rng.normal(size=(40, 6)).astype("float32")
        weights[::5] = 0.0
        precondition = rng.uniform(0.1, 3.0, size=(40, 6)).astype("float32")
        ours = shrink_update(update, [weights, precondition], [0.1, 0.01], absolute)
        theirs = clippy_adagrad.shrink_by_references(
            tf.constant(update),
            [tf.constant(weights), tf.constant(precondition)],
            [0.1, 0.01],
            absolute,
        )
        np.testing.assert_allclose(ours.update.numpy(), theirs[0].numpy(), rtol=1e-7, atol=0)
        np.testing.assert_allclose(ours.factor.numpy(), theirs[1].numpy(), rtol=1e-7, atol=0)


@pytest.mark.parametrize("shape", [(), (1,), (3,), (6, 3), (8, 2), (5, 2, 3), (1000, 7)])
@pytest.mark.parametrize("mode", ["eager", "graph", "xla", "xla_unknown_rows"])
def test_recorded_sums_match_numpy(shape, mode, rng):
    """The statistics' sum of every element (pairwise under XLA, padded to a power of two; a
    product with ones under XLA without a static row count; ``reduce_sum`` elsewhere)."""
    values = rng.normal(size=shape).astype(np.float32)
    run = _statistics.total
    if mode == "graph":
        run = tf.function(run)
    elif mode == "xla":
        run = tf.function(run, jit_compile=True)
    elif mode == "xla_unknown_rows":
        if not shape:
            pytest.skip("a scalar has no rows")
        spec = tf.TensorSpec([None, *shape[1:]], tf.float32)
        run = tf.function(run, jit_compile=True, input_signature=[spec])
    got = float(run(tf.constant(values)))
    # float32 rounding grows with the terms' magnitudes, not with their (cancelling) sum
    scale = 1e-6 * max(float(np.sum(np.abs(values), dtype=np.float64)), 1.0)
    np.testing.assert_allclose(got, np.sum(values, dtype=np.float64), rtol=0, atol=scale)
    square = float(tf.function(_statistics.squared_norm, jit_compile=mode != "eager")(values))
    np.testing.assert_allclose(square, np.sum(np.square(values, dtype=np.float64)), rtol=1e-5)
