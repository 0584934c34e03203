"""Clippy(optimizer) against numpy references; mixed precision, MirroredStrategy, saving, serving."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import LOGICAL_CPUS
from helpers import (
    TABLE_SHAPE,
    assert_config_roundtrip,
    assert_restarts_continue_exactly,
    export_saved_model,
    fit,
    initial_values,
    make_data,
    make_model,
    make_steps,
    run_steps,
    serve_in_clean_process,
)
from references import adam_reference, dense_gradient, numpy_clipped

from tfsmooth._keras import IS_KERAS_3, keras
from tfsmooth.optimizers import Clippy, ClippyAdagrad, LazyAdam, clipping_statistics


@pytest.mark.parametrize("granularity", ["variable", "row"])
def test_clippy_sgd_matches_numpy(granularity, rng):
    initial, steps = initial_values(rng), make_steps(rng, 10)
    optimizer = Clippy(
        keras.optimizers.SGD(0.5),
        variable_relative_threshold=0.2,
        absolute_threshold=0.01,
        granularity=granularity,
    )
    got = run_steps(optimizer, initial, steps)
    expected, statistics = numpy_clipped(
        lambda t, i, w, g: w - 0.5 * g,
        initial,
        steps,
        relative=0.2,
        absolute=0.01,
        granularity=granularity,
    )
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    recorded = clipping_statistics(optimizer)
    assert len(recorded) == 3
    for values, reference in zip(recorded.values(), statistics):
        np.testing.assert_allclose(
            [
                values[k]
                for k in ("clipping_factor", "update_ratio", "gradient_norm", "variable_norm")
            ],
            reference,
            rtol=1e-4,
        )


def test_clippy_adam_matches_numpy(rng):
    # Dense gradients: how Adam itself treats sparse ones differs between the Keras flavours.
    initial = initial_values(rng)
    steps = [
        [dense_gradient(g, np.shape(w)) for g, w in zip(step, initial)]
        for step in make_steps(rng, 12)
    ]
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-7
    optimizer = Clippy(
        keras.optimizers.Adam(lr), variable_relative_threshold=0.1, absolute_threshold=1e-3
    )
    variables = [tf.Variable(np.asarray(v, np.float32)) for v in initial]
    apply = tf.function(lambda *g: optimizer.apply_gradients(zip(g, variables)))
    for gradients in steps:
        apply(*(tf.constant(g, tf.float32) for g in gradients))
    got = [v.numpy() for v in variables]
    adam = adam_reference(lr, b1, b2, eps)
    expected, _ = numpy_clipped(adam, initial, steps, relative=0.1, absolute=1e-3)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    assert (
        int(optimizer.iterations) == 12
        and optimizer.iterations is optimizer.inner_optimizer.iterations
    )


def test_without_clipping_it_is_exactly_the_inner_optimizer(rng):
    initial, steps = initial_values(rng), make_steps(rng, 6)
    settings = {"learning_rate": 0.01, "global_clipnorm": 1.0, "weight_decay": 0.01}
    plain = run_steps(keras.optimizers.Adam(**settings), initial, steps)
    wrapped = run_steps(
        Clippy(keras.optimizers.Adam(**settings), absolute_threshold=1e6), initial, steps
    )
    for a, b in zip(plain, wrapped):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("granularity", ["variable", "row"])
@pytest.mark.parametrize("inner", ["lazy_adam", "clippy_adagrad"])
def test_writing_for_a_tfsmooth_optimizer_without_clipping_changes_nothing(inner, granularity, rng):
    """Around LazyAdam and ClippyAdagrad Clippy writes the update itself (dense and sparse
    gradients, repeated rows): where it clips nothing the weights are the inner optimizer's."""
    make = {"lazy_adam": lambda: LazyAdam(0.05), "clippy_adagrad": lambda: ClippyAdagrad(0.3)}
    initial, steps = initial_values(rng), make_steps(rng, 6)
    plain = run_steps(make[inner](), initial, steps)
    wrapped = run_steps(
        Clippy(make[inner](), absolute_threshold=1e6, granularity=granularity), initial, steps
    )
    for a, b in zip(plain, wrapped):
        np.testing.assert_array_equal(a, b)
    clipped = run_steps(Clippy(make[inner](), granularity=granularity), initial, steps)
    assert any(not np.array_equal(a, b) for a, b in zip(plain, clipped))  # the test can fail


def test_variable_constraints_still_hold():
    variable = tf.Variable([0.05, 1.0], constraint=keras.constraints.NonNeg())
    optimizer = Clippy(keras.optimizers.SGD(1.0), variable_relative_threshold=0.5)
    optimizer.apply_gradients([(tf.constant([1.0, 1.0]), variable)])
    # SGD + constraint: [0, 0], a move of [-0.05, -1]; bounds [0.026, 0.501] give sigma = 0.501.
    np.testing.assert_allclose(variable.numpy(), [0.05 - 0.501 * 0.05, 1 - 0.501], rtol=1e-6)
    assert np.all(variable.numpy() >= 0)


def test_config_round_trips_with_the_inner_optimizer():
    optimizer = Clippy(
        keras.optimizers.Adam(0.002, beta_1=0.8, global_clipnorm=3.0),
        variable_relative_threshold=0.3,
        absolute_threshold=0.02,
        granularity="row",
        export_clipping_factors=False,
        name="clippy_adam",
    )
    assert_config_roundtrip(optimizer)
    clone = Clippy.from_config(optimizer.get_config())
    assert isinstance(clone.inner_optimizer, keras.optimizers.Adam)
    assert clone.inner_optimizer.beta_1 == pytest.approx(0.8)
    assert isinstance(Clippy("sgd").inner_optimizer, keras.optimizers.SGD)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"variable_relative_threshold": -1.0}, ValueError, "variable_relative_threshold=-1.0"),
        ({"absolute_threshold": math.nan}, ValueError, "absolute_threshold=nan"),
        ({"variable_relative_threshold": 0.0, "absolute_threshold": 0.0}, ValueError, "> 0"),
        ({"granularity": "unit"}, ValueError, "granularity='unit'"),
        ({"export_clipping_factors": "yes"}, TypeError, "export_clipping_factors='yes'"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        Clippy(keras.optimizers.SGD(0.1), **kwargs)


@pytest.mark.parametrize(
    "identifier",
    [
        {"class_name": "Adam", "config": {"learning_rate": 0.25, "beta_1": 0.8}},
        {"class_name": "adam", "config": {"learning_rate": 0.25, "beta_1": 0.8}},
    ],
)
def test_inner_optimizer_from_a_config_dict(identifier):
    """The docstring's promise, in both flavours (tf-keras made such a dict a legacy optimizer)."""
    for optimizer in (Clippy(identifier), Clippy.from_config({"optimizer": identifier})):
        inner = optimizer.inner_optimizer
        assert isinstance(inner, keras.optimizers.Adam)
        assert float(inner.learning_rate) == 0.25 and inner.beta_1 == pytest.approx(0.8)
        assert_config_roundtrip(optimizer)
    variable = tf.Variable([1.0, -1.0])
    optimizer.apply_gradients([(tf.constant([1.0, 1.0]), variable)])
    # Adam's first step moves each coordinate by lr (sign of g); the bound 0.1 |w| + 1e-3 clips.
    np.testing.assert_allclose(variable.numpy(), [1.0 - 0.101, -1.0 - 0.101], rtol=1e-5)


def test_bad_inner_optimizer():
    with pytest.raises(ValueError):
        Clippy("no-such-optimizer")


# ----------------------------------------------------------------------------------------------------
# In training: restarts, mixed precision, MirroredStrategy, serving.

ADAM = {"variable_relative_threshold": 0.05, "absolute_threshold": 1e-3, "granularity": "row"}


def clippy_adam():
    return Clippy(keras.optimizers.Adam(0.05), **ADAM)


def test_restarts_continue_exactly(rng, tmp_path):
    assert_restarts_continue_exactly(clippy_adam, rng, tmp_path)


def one_step_moves_within_bounds(model, data, relative, absolute):
    before = [w.copy() for w in model.get_weights()]
    x, y = data
    model.train_on_batch({k: v[:16] for k, v in x.items()}, y[:16])
    for old, new in zip(before, model.get_weights()):
        bound = relative * np.abs(old) + absolute
        assert np.all(np.abs(new - old) <= bound * (1 + 1e-5) + 1e-7)


@pytest.mark.parametrize("optimizer", ["clippy_adam", "clippy_adagrad"])
def test_mixed_precision(optimizer, rng):
    data = make_data(rng)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = make_model()
        if optimizer == "clippy_adam":
            chosen, relative, absolute = clippy_adam(), ADAM["variable_relative_threshold"], 1e-3
        else:
            chosen = ClippyAdagrad(0.5, variable_relative_threshold=0.1, absolute_threshold=0.01)
            relative, absolute = 0.1, 0.01
        model.compile(optimizer=chosen, loss="mse")
        assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
        for _ in range(4):
            one_step_moves_within_bounds(model, data, relative, absolute)
        fit(model, data, 4)
        statistics = clipping_statistics(model.optimizer)
        assert statistics and all(
            np.isfinite(list(v.values())).all() for v in statistics.values()
        ), statistics
        assert any(v["clipping_factor"] < 1 for v in statistics.values())
        assert model.get_weights()[0].dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["clippy_adam", "clippy_adagrad", "clippy_lazy_adam"])
def test_mirrored_strategy_matches_one_device(optimizer, rng, mirrored_strategy):
    data = make_data(rng)

    def build():
        if optimizer == "clippy_adam":
            chosen = clippy_adam()
        elif optimizer == "clippy_lazy_adam":  # the sparse path: rows of both replicas
            chosen = Clippy(LazyAdam(0.05), **ADAM)
        else:
            chosen = ClippyAdagrad(0.3, granularity="row", absolute_threshold=0.01)
        model = make_model()
        model.compile(optimizer=chosen, loss="mse")
        return model

    single = build()
    fit(single, data, 4, batch_size=16)
    with mirrored_strategy.scope():
        mirrored = build()
    fit(mirrored, data, 4, batch_size=16)  # 8 examples per replica
    assert mirrored.distribute_strategy.num_replicas_in_sync == len(LOGICAL_CPUS)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    ours, theirs = clipping_statistics(single.optimizer), clipping_statistics(mirrored.optimizer)
    assert len(ours) == len(theirs) == len(single.trainable_variables)
    for a, b in zip(ours.values(), theirs.values()):  # layer names differ, order does not
        np.testing.assert_allclose(list(a.values()), list(b.values()), rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_trained_model_exports_and_serves_without_tfsmooth(rng, tmp_path):
    # Clippy around ClippyAdagrad: both classes are in the saved object graph (tf-keras saves
    # the optimizer with the model), served by plain TensorFlow.
    data = make_data(rng)
    x = {k: v[:8] for k, v in data[0].items()}
    model = make_model()
    model.compile(optimizer=Clippy(ClippyAdagrad(0.3), variable_relative_threshold=0.5), loss="mse")
    fit(model, data, 2)
    served = serve_in_clean_process(export_saved_model(model, tmp_path), x)
    np.testing.assert_allclose(
        next(iter(served.values())).reshape(-1),
        np.asarray(model(x)).reshape(-1),
        rtol=1e-5,
        atol=1e-6,
    )


def test_sparse_updates_touch_only_what_the_inner_optimizer_moves():
    """ClippyAdagrad moves only looked-up rows; Clippy(Adam) also clips what momentum moves."""
    for optimizer, momentum_moves_rows in (
        (ClippyAdagrad(0.1, variable_relative_threshold=0.1), False),
        (Clippy(keras.optimizers.SGD(0.1, momentum=0.9), absolute_threshold=1e-2), True),
    ):
        table = tf.Variable(np.ones(TABLE_SHAPE, np.float32))
        for rows in ([0, 1], [2, 3]):
            after_first = table.numpy().copy()
            gradient = tf.IndexedSlices(
                tf.ones([2, 3]), tf.constant(rows), tf.constant(TABLE_SHAPE)
            )
            optimizer.apply_gradients([(gradient, table)])
        after_second = table.numpy()
        assert np.all(after_second[4:] == 1.0)  # never looked up, no momentum
        moved_again = np.abs(after_second[:2] - after_first[:2]).max()
        assert bool(moved_again > 0) is momentum_moves_rows
        # every move within the bound 0.1 |w| + lambda_abs
        bound = 0.1 * np.abs(after_first) + optimizer.absolute_threshold
        assert np.all(np.abs(after_second - after_first) <= bound * (1 + 1e-6))


@pytest.mark.skipif(IS_KERAS_3, reason="tf-keras LossScaleOptimizer wrapping explicitly")
def test_explicit_loss_scale_optimizer_tf_keras(rng):
    variable = tf.Variable(np.ones(3, np.float32))
    optimizer = keras.mixed_precision.LossScaleOptimizer(
        Clippy(keras.optimizers.SGD(1.0), variable_relative_threshold=0.1, absolute_threshold=0.0)
    )
    scaled = optimizer.get_scaled_loss(tf.constant(1.0))
    assert float(scaled) > 1
    optimizer.apply_gradients([(tf.constant([1.0, 1.0, 1.0]), variable)])
    np.testing.assert_allclose(variable.numpy(), 0.9, rtol=1e-6)
