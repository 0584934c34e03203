"""StabilityMonitor: batch losses, spikes, divergence, rollback of weights and optimizer state,
the first layer to move, History and TensorBoard logs."""

from __future__ import annotations

import glob
import math

import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_config_roundtrip

from tfsmooth._keras import keras
from tfsmooth.callbacks import StabilityMonitor
from tfsmooth.optimizers import ClippyAdagrad, clipping_statistics

BATCH = 16


class Recorder(keras.callbacks.Callback):
    """Independent record of the weights and optimizer variables after every batch."""

    def __init__(self):
        super().__init__()
        self.weights, self.optimizer = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append([np.array(w) for w in self.model.get_weights()])
        self.optimizer.append([np.array(v) for v in self.model.optimizer.variables])


def linear_data(rng, batches, scale=1.0):
    x = rng.normal(size=(batches * BATCH, 4)).astype("float32") * scale
    y = (x @ np.array([[1.0], [-2.0], [0.5], [1.5]], np.float32)).astype("float32")
    return x, y


def linear_model(optimizer, hidden=True):
    layers = [keras.Input((4,))]
    if hidden:
        layers.append(
            keras.layers.Dense(
                4, kernel_initializer=keras.initializers.GlorotUniform(1), name="hidden"
            )
        )
    layers.append(
        keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(2), name="top")
    )
    model = keras.Sequential(layers)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
    return model


def run(model, x, y, monitor, *extra, epochs=1):
    return model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[*extra, monitor],
    )


def test_config_round_trips():
    assert_config_roundtrip(
        StabilityMonitor(
            spike_factor=4.0,
            spike_patience=2,
            average_decay=0.9,
            warmup_steps=3,
            layer_factor=5.0,
            stop_on_divergence=False,
            restore_on_divergence=False,
            snapshot_every=7,
            log_every=2,
            log_dir="logs",
            log_layers=True,
            loss_in_logs="batch",
            history_size=10,
            verbose=0,
        )
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"spike_factor": 1.0}, ValueError, "spike_factor=1.0"),
        ({"spike_patience": 0}, ValueError, "spike_patience=0"),
        ({"average_decay": 1.0}, ValueError, "average_decay=1.0"),
        ({"layer_factor": math.nan}, ValueError, "layer_factor"),
        ({"snapshot_every": 2.5}, TypeError, "snapshot_every=2.5"),
        ({"stop_on_divergence": "yes"}, TypeError, "stop_on_divergence='yes'"),
        ({"loss_in_logs": "mean"}, ValueError, "loss_in_logs='mean'"),
        ({"log_dir": 3}, TypeError, "log_dir=3"),
        ({"history_size": 0}, ValueError, "history_size=0"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        StabilityMonitor(**kwargs)


def test_batch_losses_are_recovered_from_keras_epoch_means(rng):
    x, y = linear_data(rng, 6)
    model = linear_model(keras.optimizers.SGD(0.0))  # weights never change
    monitor = StabilityMonitor(log_every=1000, verbose=0)
    run(model, x, y, monitor, epochs=2)
    predictions = model.predict(x, verbose=0)
    expected = ((predictions - y) ** 2).reshape(-1, BATCH).mean(axis=1)
    losses = [record["loss"] for record in monitor.history]
    np.testing.assert_allclose(losses, np.tile(expected, 2), rtol=1e-4)


def constant_model(jit_compile):
    """``y_pred = 0`` for every input, so the loss is the data's alone: ``mean(y^2)``."""
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", jit_compile=jit_compile)
    return model


@pytest.mark.parametrize("jit_compile", [False, True])
def test_true_batch_losses_after_an_explosion(jit_compile):
    """The issue's sequence ``[1.4]*20 + [8e14, 8e22] + [1e14]*30``: float32's running mean
    cannot hold the batches after 8e22, so only a loss read inside the step gives them back."""
    losses = np.array([1.4] * 20 + [8e14, 8e22] + [1e14] * 30, np.float64)
    y = np.repeat(np.sqrt(losses), BATCH).astype("float32")[:, None]
    x = np.ones_like(y)
    expected = np.square(np.sqrt(losses).astype(np.float32).astype(np.float64))
    watch = StabilityMonitor(stop_on_divergence=False, restore_on_divergence=False, verbose=0)
    run(constant_model(jit_compile), x, y, watch)
    np.testing.assert_allclose([r["loss"] for r in watch.history], expected, rtol=1e-6)
    monitor = StabilityMonitor(spike_patience=3, verbose=0)
    run(constant_model(jit_compile), x, y, monitor)
    assert monitor.divergence["reason"] == "loss spike"
    assert monitor.divergence["onset_step"] == 20 and monitor.divergence["step"] == 22


def test_true_batch_losses_under_mirrored_strategy(mirrored_strategy):
    losses = np.array([1.0, 4.0, 1e20, 9.0, 1e10], np.float64)
    y = np.repeat(np.sqrt(losses), BATCH).astype("float32")[:, None]
    with mirrored_strategy.scope():
        model = constant_model(False)
    monitor = StabilityMonitor(stop_on_divergence=False, restore_on_divergence=False, verbose=0)
    run(model, np.ones_like(y), y, monitor)
    np.testing.assert_allclose([r["loss"] for r in monitor.history], losses, rtol=1e-6)


def test_custom_train_step_without_compute_loss_warns():
    class Custom(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

        def train_step(self, data):
            x, y = data
            return {"loss": tf.reduce_mean(tf.square(self(x) - y))}

    model = Custom()
    model.compile(optimizer="sgd", jit_compile=False)
    x = np.ones((4 * BATCH, 1), np.float32)
    with pytest.warns(UserWarning, match="compute_loss"):
        run(model, x, x, StabilityMonitor(verbose=0))


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("blow_up", [1e11, np.inf], ids=["1e22", "nan"])
def test_a_real_explosion_is_caught_and_the_last_good_state_restored(rng, jit_compile, blow_up):
    """Targets jump to 1e11 (losses of 1e22 and beyond) or to inf (NaN) from batch 30 on."""
    x, y = linear_data(rng, 60)
    y[30 * BATCH :] = blow_up
    model = linear_model(keras.optimizers.Adagrad(0.05))
    model.compile(optimizer=keras.optimizers.Adagrad(0.05), loss="mse", jit_compile=jit_compile)
    recorder = Recorder()
    monitor = StabilityMonitor(spike_patience=3, warmup_steps=5, snapshot_every=10, verbose=0)
    run(model, x, y, monitor, recorder)
    divergence = monitor.divergence
    assert divergence is not None
    assert divergence["onset_step"] == 30
    assert divergence["reason"] == ("loss spike" if np.isfinite(blow_up) else "non-finite loss")
    assert divergence["restored_step"] == 19  # the snapshot after 29 gave batch 30's loss
    assert len(recorder.weights) == divergence["step"] + 1  # training stopped there
    for a, b in zip(model.get_weights(), recorder.weights[19]):
        np.testing.assert_array_equal(a, b)
    for variable, value in zip(model.optimizer.variables, recorder.optimizer[19]):
        np.testing.assert_array_equal(np.asarray(variable), value)
    if np.isfinite(blow_up):
        assert min(r["loss"] for r in list(monitor.history)[30:]) > 1e20


def test_non_finite_loss_stops_and_restores_the_start(rng):
    x, y = linear_data(rng, 40, scale=30.0)
    model = linear_model(keras.optimizers.SGD(1.0))
    initial = [w.copy() for w in model.get_weights()]
    monitor = StabilityMonitor(snapshot_every=1000, verbose=0)
    history = run(model, x, y, monitor)
    divergence = monitor.divergence
    assert divergence["reason"] == "non-finite loss"
    assert divergence["restored_step"] == -1  # no snapshot before the onset: the start
    assert len(monitor.history) == divergence["step"] + 1 < 40  # training stopped
    for a, b in zip(model.get_weights(), initial):
        np.testing.assert_array_equal(a, b)
    assert int(model.optimizer.iterations) == 0
    # The loss turns non-finite before any layer has a baseline (5 readings), so both layers' onsets
    # are that step, with equal (infinite) jumps: the tie goes to the bottom layer, `hidden`.
    step = divergence["step"]
    onsets = {name.split("/")[-1]: at for name, at in divergence["layer_onsets"].items()}
    assert step < 5 and onsets == {"hidden": step, "top": step}, (step, onsets)
    assert divergence["first_layer"].split("/")[-1] == "hidden"
    assert divergence["first_layer_step"] == step
    assert history.history["nonfinite_losses"] == [1.0]


def test_spike_divergence_restores_weights_and_optimizer_state(rng):
    x, y = linear_data(rng, 50)
    y[40 * BATCH :] *= 100.0  # from batch 40 on, every batch spikes
    model = linear_model(keras.optimizers.Adagrad(0.05))
    recorder = Recorder()
    monitor = StabilityMonitor(
        spike_factor=3.0, spike_patience=5, warmup_steps=5, snapshot_every=10, verbose=0
    )
    run(model, x, y, monitor, recorder)
    divergence = monitor.divergence
    assert divergence["reason"] == "loss spike"
    assert divergence["onset_step"] == 40 and divergence["step"] == 44
    # Snapshots after batches 9, 19, 29, 39; the one after 39 produced the first spiking loss.
    assert divergence["restored_step"] == 29
    for a, b in zip(model.get_weights(), recorder.weights[29]):
        np.testing.assert_array_equal(a, b)
    for variable, value in zip(model.optimizer.variables, recorder.optimizer[29]):
        np.testing.assert_array_equal(np.asarray(variable), value)  # accumulators, iterations
    assert int(model.optimizer.iterations) == 30
    assert len(recorder.weights) == 45  # stopped at the divergence


def test_a_micro_spike_is_counted_and_training_goes_on(rng):
    x, y = linear_data(rng, 30)
    y[20 * BATCH : 21 * BATCH] *= 100.0  # one bad batch
    model = linear_model(keras.optimizers.Adagrad(0.05))
    monitor = StabilityMonitor(warmup_steps=5, verbose=0)
    history = run(model, x, y, monitor)
    assert monitor.divergence is None
    assert history.history["loss_spikes"] == [1.0]
    assert [r["step"] for r in monitor.history if r["spike"]] == [20]
    assert len(monitor.history) == 30


def test_an_explosion_during_warmup_is_a_spike_and_diverges(rng):
    # Before the moving average has settled (warmup_steps=20), losses are compared with the mean
    # of the healthy ones so far: from batch 6 on every batch is ~10^4 times the first ones.
    x, y = linear_data(rng, 30)
    y[6 * BATCH :] *= 100.0
    model = linear_model(keras.optimizers.SGD(0.0))  # the loss is the data's alone
    initial = [w.copy() for w in model.get_weights()]
    monitor = StabilityMonitor(spike_patience=3, warmup_steps=20, verbose=0)
    run(model, x, y, monitor)
    divergence = monitor.divergence
    assert divergence["reason"] == "loss spike"
    assert divergence["onset_step"] == 6 and divergence["step"] == 8
    assert divergence["restored_step"] == -1
    for a, b in zip(model.get_weights(), initial):
        np.testing.assert_array_equal(a, b)
    # The exploded losses never entered the average: it is the mean of batches 0-5.
    expected = np.mean([r["loss"] for r in monitor.history][:6])
    assert [r["spike"] for r in monitor.history] == [False] * 6 + [True] * 3
    assert monitor.history[-1]["loss_average"] < 2 * expected


def test_the_first_batches_cannot_spike_during_warmup(rng):
    x, y = linear_data(rng, 8)
    y[BATCH : 2 * BATCH] *= 3.0  # batch 1: ~9x batch 0's loss, but too early to compare
    y[4 * BATCH : 5 * BATCH] *= 100.0  # batch 4: three healthy batches before it
    model = linear_model(keras.optimizers.SGD(0.0))
    monitor = StabilityMonitor(warmup_steps=20, verbose=0)
    run(model, x, y, monitor)
    assert [r["step"] for r in monitor.history if r["spike"]] == [4]


def test_rollback_without_stopping(rng):
    x, y = linear_data(rng, 30)
    y[12 * BATCH : 15 * BATCH] *= 100.0
    model = linear_model(keras.optimizers.Adagrad(0.05))
    monitor = StabilityMonitor(
        spike_patience=2, warmup_steps=3, snapshot_every=5, stop_on_divergence=False, verbose=0
    )
    run(model, x, y, monitor)
    assert monitor.divergence["restored_step"] == 9
    assert len(monitor.history) == 30  # went on after the rollback


def read_scalars(directory):
    scalars = {}
    for path in glob.glob(f"{directory}/**/events.out.tfevents.*", recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor)))
                )
    return scalars


def test_clippy_signals_in_history_and_tensorboard(rng, tmp_path):
    x, y = linear_data(rng, 12)
    model = linear_model(ClippyAdagrad(0.5))
    monitor = StabilityMonitor(log_dir=str(tmp_path), log_layers=True, verbose=0)
    history = run(model, x, y, monitor, epochs=2).history
    for key in ("loss_average", "loss_spikes", "clipping_factor", "update_ratio", "gradient_norm"):
        assert len(history[key]) == 2, key
    layers = {path.rsplit("/", 1)[0] for path in clipping_statistics(model.optimizer)}
    assert {f"update_ratio/{layer}" for layer in layers} <= set(history)
    # The last logged batch agrees with what the optimizer recorded in that step.
    last = monitor.history[-1]["layers"]
    for layer in layers:
        recorded = [
            v for k, v in clipping_statistics(model.optimizer).items() if k.startswith(layer + "/")
        ]
        assert last[layer]["clipping_factor"] == pytest.approx(
            min(r["clipping_factor"] for r in recorded)
        )
        norm = math.sqrt(sum(r["gradient_norm"] ** 2 for r in recorded))
        assert last[layer]["gradient_norm"] == pytest.approx(norm, rel=1e-5)
    assert min(history["clipping_factor"]) < 1.0
    scalars = read_scalars(tmp_path)
    assert len(scalars["stability/loss"]) == 24
    for layer in layers:
        assert len(scalars[f"clipping_factor/{layer}"]) == 24
        assert len(scalars[f"grad_to_weight/{layer}"]) == 24


def test_plain_optimizer_gives_update_norms(rng):
    x, y = linear_data(rng, 5)
    model = linear_model(keras.optimizers.SGD(0.1))
    recorder = Recorder()
    before = [w.copy() for w in model.get_weights()]
    monitor = StabilityMonitor(log_layers=True, verbose=0)
    history = run(model, x, y, monitor, recorder).history
    assert "update_norm" in history and "update_to_weight" in history
    first = monitor.history[0]["layers"]
    # hidden layer: kernel and bias moved from `before` to the weights after batch 0.
    moved = math.sqrt(
        sum(np.sum((a - b) ** 2) for a, b in zip(recorder.weights[0][:2], before[:2]))
    )
    (hidden,) = [name for name in first if name.endswith("hidden")]
    assert first[hidden]["update_norm"] == pytest.approx(moved, rel=1e-5)


def test_reports_the_layer_that_moved_first(rng):
    """Input ``a`` grows 3x per step from step 30: branch ``a``'s gradient grows 9x per step,
    branch ``b``'s (through the residual only) 3x, so ``a`` crosses its threshold first."""
    n = 45 * BATCH
    a = rng.normal(size=(n, 4)).astype("float32")
    b = rng.normal(size=(n, 4)).astype("float32")
    y = (a.sum(1, keepdims=True) - b.sum(1, keepdims=True)).astype("float32")
    growth = np.ones(45, np.float32)
    growth[30:] = 3.0 ** np.arange(1, 16)
    a = a * np.repeat(growth, BATCH)[:, None]
    input_a, input_b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    init = keras.initializers.GlorotUniform
    out = keras.layers.Add()(
        [
            keras.layers.Dense(1, kernel_initializer=init(1), name="a_branch")(input_a),
            keras.layers.Dense(1, kernel_initializer=init(2), name="b_branch")(input_b),
        ]
    )
    model = keras.Model({"a": input_a, "b": input_b}, out)
    # The paper's lambda_rel = 0.1 (the timing of the onsets above depends on the bound).
    optimizer = ClippyAdagrad(0.05, variable_relative_threshold=0.1)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
    monitor = StabilityMonitor(warmup_steps=5, layer_factor=10.0, verbose=0)
    model.fit({"a": a, "b": b}, y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[monitor])
    divergence = monitor.divergence
    assert divergence is not None and divergence["onset_step"] >= 30
    assert divergence["first_layer"].endswith("a_branch")
    onsets = divergence["layer_onsets"]
    a_onset = next(v for k, v in onsets.items() if k.endswith("a_branch"))
    b_onset = next((v for k, v in onsets.items() if k.endswith("b_branch")), math.inf)
    assert 30 <= a_onset < b_onset
