"""The DCN Cross layer against the numpy formula and TFRS's Cross; config, saving, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import requires_tfrs
from helpers import assert_config_roundtrip
from references import cross_reference

from tfsmooth._keras import keras
from tfsmooth.layers import Cross

RNG = np.random.default_rng(0)
X0 = RNG.normal(size=(5, 6)).astype("float32")
X1 = RNG.normal(size=(5, 6)).astype("float32")


def _set_random_weights(layer, rng):
    values = [rng.normal(size=tuple(w.shape)).astype("float32") for w in layer.weights]
    layer.set_weights(values)
    return values


def test_full_rank_matches_the_formula():
    layer = Cross(diag_scale=0.5)
    layer(X0, X1)
    kernel, bias = _set_random_weights(layer, np.random.default_rng(1))
    np.testing.assert_allclose(
        layer(X0, X1), cross_reference(X0, X1, kernel, bias, 0.5), rtol=1e-5, atol=1e-5
    )
    # With one input, x = x0.
    np.testing.assert_allclose(
        layer(X0), cross_reference(X0, X0, kernel, bias, 0.5), rtol=1e-5, atol=1e-5
    )


def test_low_rank_without_bias_matches_the_formula():
    layer = Cross(projection_dim=2, use_bias=False)
    layer(X0)
    u, v = _set_random_weights(layer, np.random.default_rng(2))
    assert u.shape == (6, 2) and v.shape == (2, 6)
    np.testing.assert_allclose(
        layer(X0, X1), cross_reference(X0, X1, u @ v, 0.0), rtol=1e-5, atol=1e-5
    )


def test_gradient_matches_finite_differences():
    layer = Cross()
    layer(X0)
    kernel, bias = _set_random_weights(layer, np.random.default_rng(3))
    x0 = tf.constant(X0.astype("float64"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.cast(layer(tf.cast(x0, tf.float32)), tf.float64) ** 2)
    grad = tape.gradient(loss, layer.weights[0]).numpy()
    h = 1e-3
    k64, b64, x64 = kernel.astype(np.float64), bias.astype(np.float64), X0.astype(np.float64)
    i, j = 2, 4
    plus, minus = k64.copy(), k64.copy()
    plus[i, j] += h
    minus[i, j] -= h
    numeric = (
        np.sum(cross_reference(x64, x64, plus, b64) ** 2)
        - np.sum(cross_reference(x64, x64, minus, b64) ** 2)
    ) / (2 * h)
    assert grad[i, j] == pytest.approx(numeric, rel=1e-3)


@requires_tfrs
def test_matches_tfrs_cross_with_the_same_weights():
    import tensorflow_recommenders as tfrs

    for kwargs in ({}, {"projection_dim": 3, "diag_scale": 0.2}):
        ours, theirs = Cross(**kwargs), tfrs.layers.dcn.Cross(**kwargs)
        ours(X0, X1)
        theirs(X0, X1)
        values = [w.numpy() for w in theirs.weights]  # kernel(s) then bias, as ours
        ours.set_weights(values)
        np.testing.assert_allclose(ours(X0, X1), theirs(X0, X1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Cross(),
        lambda: Cross(
            projection_dim=4,
            diag_scale=0.1,
            use_bias=False,
            kernel_initializer=keras.initializers.GlorotUniform(seed=3),
            kernel_regularizer=keras.regularizers.L2(1e-4),
            bias_regularizer="l1",
            name="c",
        ),
    ],
)
def test_config_round_trips_whole(make):
    assert_config_roundtrip(make())


def test_keras_file_round_trip_in_a_stack(tmp_path):
    x0 = keras.Input((6,))
    x1 = Cross(name="c1")(x0)
    x2 = Cross(projection_dim=2, name="c2")(x0, x1)
    model = keras.Model(x0, keras.layers.Dense(1)(x2))
    path = tmp_path / "cross.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict(X0, verbose=0), restored.predict(X0, verbose=0))
    assert model.output_shape == (None, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"`projection_dim` must be an integer >= 1"):
        Cross(projection_dim=0)
    with pytest.raises(TypeError, match=r"`projection_dim` must be an integer or None"):
        Cross(projection_dim=2.5)
    with pytest.raises(ValueError, match=r"`diag_scale` must be >= 0. Received: diag_scale=-1"):
        Cross(diag_scale=-1)
    with pytest.raises(ValueError, match=r"`diag_scale` must be a finite number.*nan"):
        Cross(diag_scale=float("nan"))
    with pytest.raises(ValueError, match=r"`diag_scale` must be representable in float32"):
        Cross(diag_scale=1e39)
    with pytest.raises(TypeError, match=r"`diag_scale` must be a number"):
        Cross(diag_scale="0.5")
    with pytest.raises(TypeError, match=r"`use_bias` must be True or False"):
        Cross(use_bias="yes")
    with pytest.raises(ValueError, match=r"`x0` and `x` must have the same last dimension"):
        Cross()(X0, X1[:, :4])


def test_numpy_scalars_are_accepted_like_python_ones():
    layer = Cross(projection_dim=np.int64(2), diag_scale=np.float32(0.5), use_bias=np.True_)
    config = layer.get_config()
    assert (config["projection_dim"], config["diag_scale"], config["use_bias"]) == (2, 0.5, True)
    assert type(config["projection_dim"]) is int


def test_integer_inputs_are_crossed_as_numbers_not_returned_unchanged():
    x0 = np.array([[1, 2, 0, -1, 3, 1], [0, 1, 1, 2, -2, 1]], np.int32)
    layer = Cross(diag_scale=0.5)
    layer.build((None, 6))
    kernel, bias = _set_random_weights(layer, np.random.default_rng(1))
    y = layer(tf.constant(x0))
    assert y.dtype == tf.float32
    expected = cross_reference(x0.astype("float64"), x0.astype("float64"), kernel, bias, 0.5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        layer(tf.constant(x0, tf.int64), tf.constant(x0)), expected, rtol=1e-5, atol=1e-5
    )
