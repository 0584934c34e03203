"""ClippyAdagrad against a numpy Algorithm 1 / TFRS-variant reference, TFRS itself, and restarts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import requires_tfrs
from helpers import (
    TABLE_SHAPE,
    assert_config_roundtrip,
    assert_restarts_continue_exactly,
    fit,
    initial_values,
    make_data,
    make_model,
    make_steps,
    run_steps,
)
from references import numpy_clippy_adagrad

from tfsmooth._keras import IS_KERAS_3, keras
from tfsmooth.optimizers import ClippyAdagrad

CONFIGS = [
    {},
    {"use_standard_accumulator_update": True, "absolute_threshold": 1e-2},  # Algorithm 1's order
    {"clip_accumulator_update": True, "accumulator_relative_threshold": 0.01},
    {"granularity": "row", "variable_relative_threshold": 0.05, "absolute_threshold": 0.0},
    {"initial_accumulator_value": 0.0, "epsilon": 1e-3, "use_standard_accumulator_update": True},
]


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("config", CONFIGS)
def test_matches_numpy_reference_dense_and_sparse(config, jit_compile, rng):
    """Weights, accumulators, the last factors and gradient norms, with and without XLA."""
    initial, steps = initial_values(rng), make_steps(rng, 15)
    optimizer = ClippyAdagrad(learning_rate=0.3, **config)
    got = run_steps(optimizer, initial, steps, jit_compile=jit_compile)
    expected, accumulators, factors = numpy_clippy_adagrad(
        initial, steps, learning_rate=0.3, **config
    )
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    for a, b in zip(optimizer._accumulators, accumulators):
        np.testing.assert_allclose(np.asarray(a), b, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(
        [float(f) for f in optimizer.clipping_factors], factors[-1], rtol=1e-4
    )
    dense, (indices, values), bias = steps[-1]
    table = np.zeros(TABLE_SHAPE)
    np.add.at(table, indices, values)  # repeated rows summed
    norms = [np.linalg.norm(g) for g in (dense, table, bias)]
    recorded = [s["gradient_norm"] for s in optimizer.clipping_statistics().values()]
    np.testing.assert_allclose(recorded, norms, rtol=1e-5)


def test_float64_variables_match_tightly(rng):
    initial, steps = initial_values(rng), make_steps(rng, 10)
    # 0.25 is exact in the float32 learning-rate variable.
    got = run_steps(ClippyAdagrad(learning_rate=0.25), initial, steps, dtype="float64")
    expected, _, _ = numpy_clippy_adagrad(initial, steps, learning_rate=0.25)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


def test_learning_rate_schedule(rng):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.5, decay_steps=3, decay_rate=0.5)
    initial, steps = initial_values(rng), make_steps(rng, 8)
    got = run_steps(ClippyAdagrad(learning_rate=schedule), initial, steps)
    expected, _, _ = numpy_clippy_adagrad(
        initial, steps, learning_rate=lambda t: 0.5 * 0.5 ** (t / 3)
    )
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    assert_config_roundtrip(ClippyAdagrad(learning_rate=schedule, absolute_threshold=0.01))


def test_per_row_clipping_spares_the_other_rows():
    table = tf.Variable(np.ones((4, 2), np.float32))
    gradient = tf.IndexedSlices(
        tf.constant([[0.01, 0.01], [100.0, 100.0], [0.01, -0.01]]), tf.constant([0, 1, 3])
    )
    updates = {}
    for granularity in ("variable", "row"):
        table.assign(np.ones((4, 2), np.float32))
        optimizer = ClippyAdagrad(
            learning_rate=0.1, variable_relative_threshold=0.1, granularity=granularity
        )
        optimizer.apply_gradients([(gradient, table)])
        updates[granularity] = 1.0 - table.numpy()
    plain = 0.1 * 0.01 / math.sqrt(0.1 + 1e-7)  # Adagrad's unclipped step for the small rows
    np.testing.assert_allclose(np.abs(updates["row"][[0, 3]]), plain, rtol=1e-5)
    assert np.all(np.abs(updates["variable"][[0, 3]]) < 0.01 * plain)
    np.testing.assert_allclose(np.abs(updates["row"][1]), 0.1 * 1.0 + 1e-3, rtol=1e-5)
    assert np.all(updates["row"][2] == 0)


def test_repeated_sparse_rows_are_summed():
    """In both flavours the optimizer sums repeated rows itself (tf-keras's own deduplication is
    skipped)."""
    table = tf.Variable(np.ones((3, 2), np.float32))
    repeated = tf.IndexedSlices(tf.constant([[1.0, 2.0], [3.0, -1.0]]), tf.constant([1, 1]))
    ClippyAdagrad(learning_rate=0.1, absolute_threshold=1.0).apply_gradients([(repeated, table)])
    reference = tf.Variable(np.ones((3, 2), np.float32))
    summed = tf.IndexedSlices(tf.constant([[4.0, 1.0]]), tf.constant([1]))
    ClippyAdagrad(learning_rate=0.1, absolute_threshold=1.0).apply_gradients([(summed, reference)])
    np.testing.assert_allclose(table.numpy(), reference.numpy(), rtol=1e-6)


def test_zero_initialised_bias_trains_with_the_defaults():
    """TFRS's absolute_threshold=1e-7 pins a zero bias (and its layer's sigma) near 0."""
    moved = {}
    tfrs_defaults = {"variable_relative_threshold": 0.1, "absolute_threshold": 1e-7}
    for name, thresholds in (("tfrs", tfrs_defaults), ("ours", {})):
        bias = tf.Variable(tf.zeros([4]))
        kernel = tf.Variable(tf.ones([3, 4]))
        optimizer = ClippyAdagrad(learning_rate=0.1, **thresholds)
        for _ in range(20):
            optimizer.apply_gradients([(tf.fill([4], 0.5), bias), (tf.fill([3, 4], 0.5), kernel)])
        moved[name] = float(tf.reduce_max(tf.abs(bias)))
    # At most 1e-7 (1 + 0.1)^k summed over 20 steps with TFRS's thresholds.
    assert moved["tfrs"] < 1e-5
    assert moved["ours"] > 1e-2


@requires_tfrs
@pytest.mark.parametrize(
    "config",
    [
        {},
        {"use_standard_accumulator_update": True, "initial_accumulator_value": 0.0},
        {"clip_accumulator_update": True, "accumulator_relative_threshold": 0.01},
        {"variable_relative_threshold": 0.3, "absolute_threshold": 0.0, "epsilon": 0.0},
    ],
)
def test_same_weights_as_tfrs_after_100_steps(config, rng):
    import tensorflow_recommenders as tfrs

    arguments = {
        "learning_rate": 0.2,
        "initial_accumulator_value": 0.1,
        "variable_relative_threshold": 0.1,
        "accumulator_relative_threshold": 0.0,
        "absolute_threshold": 1e-7,
        "epsilon": 1e-7,
        "export_clipping_factors": True,
        "clip_accumulator_update": False,
        "use_standard_accumulator_update": False,
    }
    arguments.update(config)
    initial, steps = initial_values(rng), make_steps(rng, 100)
    ours = ClippyAdagrad(**arguments)
    theirs = tfrs.experimental.optimizers.ClippyAdagrad(**arguments)
    got, expected = run_steps(ours, initial, steps), run_steps(theirs, initial, steps)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        [float(f) for f in ours.clipping_factors],
        [float(f) for f in theirs.clipping_factors],
        rtol=1e-6,
    )


def test_config_round_trips_every_argument():
    optimizer = ClippyAdagrad(
        learning_rate=0.2,
        initial_accumulator_value=0.3,
        variable_relative_threshold=0.4,
        accumulator_relative_threshold=0.05,
        absolute_threshold=0.006,
        epsilon=1e-5,
        export_clipping_factors=False,
        clip_accumulator_update=False,
        use_standard_accumulator_update=True,
        granularity="row",
        name="clippy",
        global_clipnorm=2.0,
        weight_decay=0.01,
    )
    assert_config_roundtrip(optimizer)
    config = optimizer.get_config()
    assert config["use_standard_accumulator_update"] is True  # the flag TFRS drops
    assert config["granularity"] == "row" and config["global_clipnorm"] == 2.0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"learning_rate": 0.0}, ValueError, "learning_rate=0.0"),
        ({"learning_rate": "fast"}, TypeError, "learning_rate='fast'"),
        ({"learning_rate": None}, TypeError, "learning_rate=None"),
        ({"learning_rate": np.float32(-0.1)}, ValueError, "must be > 0"),
        ({"absolute_threshold": "small"}, TypeError, "absolute_threshold='small'"),
        ({"epsilon": 1e-300}, ValueError, "representable in float32"),
        ({"clip_accumulator_update": np.int64(1)}, TypeError, "clip_accumulator_update"),
        ({"initial_accumulator_value": -1.0}, ValueError, "initial_accumulator_value=-1.0"),
        ({"variable_relative_threshold": math.nan}, ValueError, "variable_relative_threshold"),
        ({"absolute_threshold": -1e-3}, ValueError, "absolute_threshold=-0.001"),
        ({"epsilon": math.inf}, ValueError, "epsilon=inf"),
        ({"export_clipping_factors": 1}, TypeError, "export_clipping_factors=1"),
        ({"granularity": "layer"}, ValueError, "granularity='layer'"),
        (
            {"clip_accumulator_update": True, "use_standard_accumulator_update": True},
            ValueError,
            "cannot both be True",
        ),
        ({"initial_accumulator_value": 0.0, "epsilon": 0.0}, ValueError, "divide by zero"),
        ({"variable_relative_threshold": 0.0, "absolute_threshold": 0.0}, ValueError, "> 0"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        ClippyAdagrad(**kwargs)


# ----------------------------------------------------------------------------------------------------
# Training with fit, saving and restarting.


def compiled(optimizer, seed=0):
    model = make_model(seed)
    model.compile(optimizer=optimizer, loss="mse")
    return model


OPTIMIZER = {"learning_rate": 0.3, "granularity": "row", "absolute_threshold": 0.01}


def test_checkpoint_and_keras_file_restarts_continue_exactly(rng, tmp_path):
    assert_restarts_continue_exactly(lambda: ClippyAdagrad(**OPTIMIZER), rng, tmp_path)


@pytest.mark.skipif(not IS_KERAS_3, reason="Keras 3 compiles fit with XLA; tf-keras does not")
def test_xla_compiled_fit_matches_graph_fit(rng):
    data = make_data(rng)
    results = []
    for jit in (False, True):
        model = make_model()
        model.compile(optimizer=ClippyAdagrad(**OPTIMIZER), loss="mse", jit_compile=jit)
        fit(model, data, 4)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
