"""SmeLU and GeneralizedSmeLU layers: values, learnable widths, configs, saving, serving, distribution."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    assert_config_roundtrip,
    export_saved_model,
    serve_in_clean_process,
)
from references import generalized_reference, smelu_reference

from tfsmooth._keras import IS_KERAS_3, keras
from tfsmooth.activations import generalized_smelu, smelu
from tfsmooth.layers import GeneralizedSmeLU, SmeLU

X = np.linspace(-3, 3, 24).reshape(4, 6).astype("float32")


def test_smelu_layer_values():
    np.testing.assert_allclose(SmeLU(beta=0.7)(X), smelu_reference(X, 0.7), rtol=1e-6, atol=1e-7)


def test_generalized_layer_values():
    layer = GeneralizedSmeLU(
        alpha=0.5, beta=1.5, negative_slope=0.1, positive_slope=0.9, offset=0.2
    )
    expected = generalized_reference(X, 0.5, 1.5, 0.1, 0.9, 0.2)
    np.testing.assert_allclose(layer(X), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: SmeLU(),
        lambda: SmeLU(beta=2.5, learnable=True, per_channel=True, min_beta=0.1, name="act"),
        lambda: GeneralizedSmeLU(),
        lambda: GeneralizedSmeLU(
            alpha=0.3,
            beta=0.9,
            negative_slope=0.05,
            positive_slope=1.1,
            offset=-0.2,
            learnable=["alpha", "offset"],
            per_channel=True,
            min_width=0.01,
        ),
        lambda: GeneralizedSmeLU(learnable=True),
    ],
)
def test_config_round_trips_whole(layer):
    assert_config_roundtrip(layer())


def test_learnable_shapes_and_trainable_weights():
    scalar = SmeLU(learnable=True)
    scalar.build((None, 6))
    assert [tuple(w.shape) for w in scalar.trainable_weights] == [()]
    per_channel = SmeLU(learnable=True, per_channel=True)
    per_channel.build((None, 3, 6))
    assert [tuple(w.shape) for w in per_channel.trainable_weights] == [(6,)]
    general = GeneralizedSmeLU(learnable=["beta", "positive_slope"], per_channel=True)
    general.build((None, 6))
    assert sorted(w.name.split("/")[-1].split(":")[0] for w in general.trainable_weights) == [
        "beta",
        "positive_slope",
    ]
    assert not SmeLU().trainable_weights


def test_learnable_beta_gets_the_reference_gradient():
    layer = SmeLU(beta=1.3, learnable=True, per_channel=True)
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y * y)
    grad = tape.gradient(loss, layer.trainable_weights[0]).numpy()
    h = 1e-4
    x64 = X.astype(np.float64)
    expected = [
        (
            np.sum(smelu_reference(x64[:, c], 1.3 + h) ** 2)
            - np.sum(smelu_reference(x64[:, c], 1.3 - h) ** 2)
        )
        / (2 * h)
        for c in range(6)
    ]
    np.testing.assert_allclose(grad, expected, rtol=2e-4, atol=1e-5)


def test_learned_beta_stays_above_min_beta_under_an_optimizer_pushing_it_down():
    layer = SmeLU(beta=0.5, learnable=True, min_beta=0.05)
    x = tf.constant(X)
    optimizer = keras.optimizers.SGD(learning_rate=10.0)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))  # d loss / d beta > 0: SGD drives beta far below 0
        grads = tape.gradient(loss, layer.trainable_weights)
        optimizer.apply_gradients(zip(grads, layer.trainable_weights))
    beta = float(np.asarray(layer.trainable_weights[0]))
    assert beta == pytest.approx(0.05)  # the constraint projected it back
    np.testing.assert_allclose(layer(x), smelu_reference(X, 0.05), rtol=1e-5, atol=1e-6)


def test_forward_clamps_widths_even_without_constraints():
    # A custom loop that never applies constraints can leave bad values in the variables.
    layer = SmeLU(beta=0.5, learnable=True, min_beta=0.05)
    layer.build((None, 6))
    layer.trainable_weights[0].assign(-3.0)
    np.testing.assert_allclose(layer(X), smelu_reference(X, 0.05), rtol=1e-5, atol=1e-6)

    general = GeneralizedSmeLU(alpha=0.2, beta=0.3, learnable=True, min_width=0.05)
    general.build((None, 6))
    for w in general.trainable_weights:
        if w.name.split("/")[-1].split(":")[0] == "beta":
            w.assign(-5.0)
    expected = generalized_reference(X, 0.2, 0.05 - 0.2, 0.0, 1.0, 0.0)
    np.testing.assert_allclose(general(X), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SmeLU(beta=0), r"`beta` must be > 0. Received: beta=0"),
        (lambda: SmeLU(beta=-1), r"`beta` must be > 0. Received: beta=-1"),
        (lambda: SmeLU(min_beta=2.0), r"`min_beta` must be <= `beta`"),
        (lambda: SmeLU(per_channel=True), r"`per_channel=True` needs `learnable=True`"),
        (lambda: GeneralizedSmeLU(alpha=-2.0), r"`alpha \+ beta`.*Received: alpha=-2, beta=1"),
        (lambda: GeneralizedSmeLU(learnable=["gamma"]), r"unknown parameters \['gamma'\]"),
        (lambda: GeneralizedSmeLU(offset=float("inf")), r"`offset` must be a finite number"),
        (lambda: GeneralizedSmeLU(min_width=5.0), r"`min_width` must be <= alpha \+ beta"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: SmeLU(beta=1e39), ValueError, r"`beta` must be representable in float32"),
        (lambda: SmeLU(beta=1e-46), ValueError, r"`beta` must be representable in float32"),
        (lambda: SmeLU(min_beta=1e-40), ValueError, r"`min_beta` must be representable"),
        (lambda: SmeLU(beta=float("nan")), ValueError, r"`beta` must be a finite number"),
        (lambda: SmeLU(beta="wide"), TypeError, r"`beta` must be a number"),
        (lambda: SmeLU(beta=None), TypeError, r"`beta` must be a number"),
        (lambda: GeneralizedSmeLU(beta=1e-40, alpha=0.0), ValueError, r"`beta` must be repr"),
        (lambda: GeneralizedSmeLU(alpha=3e38, beta=3e38), ValueError, r"`alpha \+ beta`.*float32"),
        (lambda: GeneralizedSmeLU(offset="0"), TypeError, r"`offset` must be a number"),
        (lambda: GeneralizedSmeLU(learnable=1), TypeError, r"`learnable` must be a bool"),
    ],
)
def test_arguments_follow_the_validation_contract(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_numpy_scalars_are_accepted_like_python_ones():
    layer = SmeLU(beta=np.float32(0.5), learnable=np.True_, per_channel=np.False_)
    assert layer.get_config()["beta"] == 0.5 and layer.learnable is True
    general = GeneralizedSmeLU(
        alpha=np.int64(1), negative_slope=np.float64(0.1), learnable=np.True_
    )
    assert general.learnable == ("alpha", "beta", "negative_slope", "positive_slope", "offset")
    np.testing.assert_allclose(
        general(X), generalized_reference(X, 1.0, 1.0, 0.1, 1.0, 0.0), rtol=1e-5, atol=1e-6
    )
    assert GeneralizedSmeLU(learnable=np.False_).learnable == ()


def test_an_infinite_learned_width_is_capped_at_the_largest_float32():
    layer = SmeLU(beta=1.0, learnable=True)
    layer.build((None, 6))
    layer.beta_variable.assign(np.inf)
    top = float(np.finfo(np.float32).max)
    x = np.array([[-1.0, 0.0, 1.0, 2.0, -np.inf, np.inf]], np.float32)
    # SmeLU at the widest width, in float64: (x + b) / 2 * ((x + b) / 2b).
    expected = (x.astype(np.float64) + top) / 2 * ((x.astype(np.float64) + top) / (2 * top))
    expected[0, 4:] = [0.0, np.inf]
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6)


def test_bad_argument_types():
    with pytest.raises(TypeError, match="`learnable` must be True or False"):
        SmeLU(learnable="yes")
    with pytest.raises(TypeError, match="`learnable` must be a bool or a list"):
        GeneralizedSmeLU(learnable="alpha")
    with pytest.raises(ValueError, match="known last"):
        SmeLU(learnable=True, per_channel=True).build((None, None))


def build_model(seed: int = 0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(16, activation=smelu)(inputs)
    h = keras.layers.Dense(16, activation=generalized_smelu)(h)
    h = keras.layers.Dense(8)(h)
    h = SmeLU(beta=0.8, learnable=True, per_channel=True)(h)
    h = GeneralizedSmeLU(negative_slope=0.05, learnable=["alpha", "beta"])(h)
    outputs = keras.layers.Dense(1)(h)
    return keras.Model(inputs, outputs)


def _train(model, steps=3):
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = np.sin(x).sum(axis=1, keepdims=True).astype("float32")
    model.fit(x, y, epochs=steps, batch_size=32, verbose=0)
    return x


def test_keras_file_round_trip_keeps_learned_parameters(tmp_path):
    model = build_model()
    x = _train(model)
    learned = [np.asarray(w) for w in model.layers[4].trainable_weights]
    assert not np.allclose(learned[0], 0.8), "the width should have been learned"
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), restored.predict(x, verbose=0))
    np.testing.assert_array_equal(learned[0], np.asarray(restored.layers[4].trainable_weights[0]))
    assert restored.layers[1].activation is smelu
    assert restored.layers[2].activation is generalized_smelu
    assert restored.layers[4].get_config() == model.layers[4].get_config()


@pytest.mark.slow
def test_saved_model_serves_identically_without_tfsmooth(tmp_path):
    model = build_model()
    x = _train(model)
    path = export_saved_model(model, tmp_path)
    served = serve_in_clean_process(path, x)["output"]
    np.testing.assert_array_equal(served, model.predict(x, verbose=0))


def test_mixed_precision_policy():
    policy = "mixed_float16"
    layer = SmeLU(beta=1.0, learnable=True, dtype=policy)
    y = layer(tf.constant(X))
    assert y.dtype == tf.float16
    assert layer.trainable_weights[0].dtype == tf.float32
    np.testing.assert_allclose(tf.cast(y, tf.float32), smelu_reference(X, 1.0), atol=2e-3)


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device(mirrored_strategy):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = np.sin(x).sum(axis=1, keepdims=True).astype("float32")

    def train(strategy):
        with strategy.scope():
            model = build_model(seed=3)
            model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        model.fit(dataset, epochs=2, verbose=0)
        return [np.asarray(w) for w in model.weights]

    assert mirrored_strategy.num_replicas_in_sync == 2
    distributed = train(mirrored_strategy)
    single = train(tf.distribute.get_strategy())
    assert len(distributed) == len(single)
    for a, b in zip(distributed, single):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_keras3_autocapture_does_not_replace_explicit_config():
    # Both flavours must give the same, explicit config keys.
    keys = set(SmeLU().get_config())
    assert {"beta", "learnable", "per_channel", "min_beta", "name", "trainable"} <= keys
    if IS_KERAS_3:
        assert "dtype" in keys
