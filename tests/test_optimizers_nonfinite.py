"""Non-finite gradients: the variable and its optimizer state are left as they were, and counted.

Every tfsmooth optimizer skips the update of a variable whose gradient has a NaN or infinite
coordinate (weights and state unchanged, bit for bit) and counts it in ``nonfinite_gradients``;
the other variables take the step a numpy reference gives; in a graph and under XLA, in both
Keras flavours, and in `fit` with the StabilityMonitor reading the count.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from references import adam_reference, momentum_reference, numpy_clipped, numpy_clippy_adagrad

from tfsmooth._keras import keras
from tfsmooth.optimizers import Clippy, ClippyAdagrad, nonfinite_gradient_count

# Distinct shapes, so each optimizer variable can be told apart by its shape in both flavours
# (the clipping statistics are (3,), counters and iterations scalars).
KERNEL, TABLE, BIAS = (5, 4), (12, 4), (4,)
ADAGRAD = {"learning_rate": 0.3, "absolute_threshold": 0.01, "variable_relative_threshold": 0.2}
LR, B1, B2, EPS = 0.05, 0.9, 0.999, 1e-7


def clippy_adam():
    return Clippy(keras.optimizers.Adam(LR), variable_relative_threshold=0.1)


def clippy_momentum():
    return Clippy(
        keras.optimizers.SGD(0.5, momentum=0.9),
        variable_relative_threshold=0.2,
        absolute_threshold=0.01,
    )


def reference(name, initial, steps):
    """The numpy weights after ``steps`` (only the variables whose gradients are all finite)."""
    if name.startswith("clippy_adagrad"):
        config = dict(ADAGRAD, granularity="row" if name.endswith("row") else "variable")
        return numpy_clippy_adagrad(initial, steps, **config)[0]
    if name == "clippy_adam":
        inner = adam_reference(LR, B1, B2, EPS)
    else:
        inner = momentum_reference(learning_rate=0.5, momentum=0.9)
    relative, absolute = (0.1, 1e-3) if name == "clippy_adam" else (0.2, 0.01)
    return numpy_clipped(inner, initial, steps, relative=relative, absolute=absolute)[0]


OPTIMIZERS = {
    "clippy_adagrad": lambda: ClippyAdagrad(**ADAGRAD),
    "clippy_adagrad_row": lambda: ClippyAdagrad(**ADAGRAD, granularity="row"),
    "clippy_adam": clippy_adam,
    "clippy_momentum": clippy_momentum,
}


def make_problem(rng):
    initial = [rng.normal(size=KERNEL), rng.normal(size=TABLE) * 0.1, rng.normal(size=BIAS)]
    steps = []
    for _ in range(2):
        rows = rng.choice(TABLE[0], size=3, replace=False)
        steps.append(
            [
                rng.normal(size=KERNEL),
                (rows, rng.normal(size=(3, TABLE[1]))),
                rng.normal(size=BIAS),
            ]
        )
    return initial, steps


def poison(steps, where):
    """The last step's kernel (dense) or table (sparse) gradient gets one non-finite value."""
    dense, (rows, values), bias = steps[-1]
    dense, values = dense.copy(), values.copy()
    if where == "dense":
        dense[2, 1] = np.nan
    else:
        values[1, 3] = np.inf
    return [*steps[:-1], [dense, (rows, values), bias]]


def state_by_shape(optimizer) -> dict:
    state = {}
    for variable in optimizer.variables:
        value = np.array(variable)
        state.setdefault(value.shape, []).append(value)
    return state


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("where", ["dense", "sparse"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_nonfinite_gradient_leaves_variable_and_state_unchanged(name, where, jit, rng):
    initial, steps = make_problem(rng)
    steps = poison(steps, where)
    optimizer = OPTIMIZERS[name]()
    variables = [tf.Variable(np.asarray(v, np.float32)) for v in initial]

    @tf.function(jit_compile=jit)
    def apply(dense, rows, values, bias):
        sparse = tf.IndexedSlices(values, rows, tf.constant(TABLE, tf.int64))
        optimizer.apply_gradients(zip([dense, sparse, bias], variables))

    def run(step):
        dense, (rows, values), bias = step
        apply(
            tf.constant(dense, tf.float32),
            tf.constant(rows, tf.int32),
            tf.constant(values, tf.float32),
            tf.constant(bias, tf.float32),
        )

    run(steps[0])
    assert int(nonfinite_gradient_count(optimizer)) == 0
    bad, shape = (0, KERNEL) if where == "dense" else (1, TABLE)
    weights_before = variables[bad].numpy()
    state_before = state_by_shape(optimizer)[shape]
    run(steps[1])

    assert int(nonfinite_gradient_count(optimizer)) == 1
    np.testing.assert_array_equal(variables[bad].numpy(), weights_before)
    state_after = state_by_shape(optimizer)[shape]
    assert len(state_after) == len(state_before) >= 1
    for a, b in zip(state_after, state_before):
        np.testing.assert_array_equal(a, b)

    # The other variables: the numpy reference over both steps.
    good = [i for i in range(3) if i != bad]
    expected = reference(name, [initial[i] for i in good], [[s[i] for i in good] for s in steps])
    for i, want in zip(good, expected):
        assert np.all(np.isfinite(variables[i].numpy()))
        np.testing.assert_allclose(variables[i].numpy(), want, rtol=2e-5, atol=2e-6)
    # The poisoned variable took the first step as the reference says.
    (first,) = reference(name, [initial[bad]], [[steps[0][bad]]])
    np.testing.assert_allclose(weights_before, first, rtol=2e-5, atol=2e-6)


def test_counter_is_checkpointed_and_survives_keras_file(tmp_path):
    variable = tf.Variable([1.0, 2.0])
    model_input = keras.Input((2,))
    model = keras.Model(model_input, keras.layers.Dense(1)(model_input))
    model.compile(optimizer=ClippyAdagrad(0.1), loss="mse")
    kernel, bias = model.trainable_variables
    gradients = [tf.fill(kernel.shape, np.nan), tf.ones(bias.shape)]
    model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    assert int(nonfinite_gradient_count(model.optimizer)) == 2
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert int(nonfinite_gradient_count(loaded.optimizer)) == 2
    optimizer = Clippy(keras.optimizers.SGD(0.1))
    optimizer.apply_gradients([(tf.constant([np.inf, 0.0]), variable)])
    path = tf.train.Checkpoint(optimizer=optimizer).save(str(tmp_path / "ckpt"))
    restored = Clippy(keras.optimizers.SGD(0.1))
    restored.build([variable])
    tf.train.Checkpoint(optimizer=restored).restore(path)
    assert int(nonfinite_gradient_count(restored)) == 1
    np.testing.assert_array_equal(variable.numpy(), [1.0, 2.0])


def test_only_tfsmooth_optimizers_count():
    assert nonfinite_gradient_count(keras.optimizers.SGD(0.1)) is None
    assert nonfinite_gradient_count(None) is None
    assert nonfinite_gradient_count(ClippyAdagrad()) is None  # not built yet


@tf.custom_gradient
def _nan_gradient_when(weights, flag):
    """The identity on ``weights``; its gradient is NaN when ``flag > 0`` (the loss stays finite)."""

    def gradient(upstream):
        poisoned = tf.where(flag > 0, tf.constant(np.nan, upstream.dtype), upstream)
        return poisoned, tf.zeros_like(flag)

    return tf.identity(weights), gradient


class _PoisonedDense(keras.layers.Layer):
    """``x[:, :3] @ w``; the gradient of ``w`` is NaN on a batch whose ``x[:, 3]`` has a 1."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(3, 1), initializer="ones")

    def call(self, x):
        flag = tf.reduce_max(x[:, 3])
        return tf.matmul(x[:, :3], _nan_gradient_when(self.w, flag))


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("name", ["clippy_adagrad", "clippy_adam"])
def test_stability_monitor_reports_skipped_gradients_in_fit(name, jit, rng):
    from tfsmooth.callbacks import StabilityMonitor

    x = rng.normal(size=(32, 4)).astype("float32")
    x[:, 3] = 0.0
    x[17, 3] = 1.0  # batch 2 of 4 (batches of 8)
    y = x[:, :3].sum(axis=1, keepdims=True)
    inputs = keras.Input((4,))
    outputs = keras.layers.Add()(
        [_PoisonedDense(name="poisoned")(inputs), keras.layers.Dense(1, name="dense")(inputs)]
    )
    model = keras.Model(inputs, outputs)
    optimizer = OPTIMIZERS[name]()
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit)
    monitor = StabilityMonitor(log_every=1)
    recorder = []
    weights = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: recorder.append(model.get_weights()[0].copy())
    )
    history = model.fit(
        x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[monitor, weights]
    )
    assert history.history["nonfinite_gradients"] == [1.0]
    assert [r["nonfinite_gradients"] for r in monitor.history] == [0, 0, 1, 0]
    assert all(np.isfinite(w).all() for w in model.get_weights())
    np.testing.assert_array_equal(recorder[2], recorder[1])  # the poisoned batch left w alone
    assert not np.array_equal(recorder[3], recorder[2])
