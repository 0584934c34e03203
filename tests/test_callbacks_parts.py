"""The StabilityMonitor's parts, each alone and without ``fit``: spike detection, layer onsets,
per-layer signals, snapshots and the TensorBoard writer."""

from __future__ import annotations

import glob
import math

import numpy as np
import pytest
import tensorflow as tf
from references import reference_clippy_signals, reference_spikes, reference_update_signals

from tfsmooth._keras import keras
from tfsmooth.callbacks.events import EventWriter
from tfsmooth.callbacks.layer_onsets import LayerOnsetTracker
from tfsmooth.callbacks.layer_signals import (
    batch_summary,
    clippy_signals,
    epoch_summary,
    update_signals,
)
from tfsmooth.callbacks.snapshots import SnapshotStore
from tfsmooth.callbacks.spike_detector import SpikeDetector


@pytest.mark.parametrize("warmup", [0, 5, 40])
def test_spike_detector_follows_the_rule(warmup):
    rng = np.random.default_rng(1)
    losses = list(rng.uniform(0.8, 1.2, 30)) + [50.0, 1.0, 60.0, 70.0, 80.0] + [1.0] * 5
    flags, average, diverged_at = reference_spikes(losses, 3.0, 3, 0.9, warmup)
    detector = SpikeDetector(3.0, 3, 0.9, warmup)
    got, first_divergence = [], None
    for step, loss in enumerate(losses):
        got.append(detector.update(loss, step))
        if detector.diverged and first_divergence is None:
            first_divergence = step
    assert got == flags
    assert detector.average == pytest.approx(average)
    assert first_divergence == diverged_at


def test_a_non_finite_loss_diverges_at_once_and_never_enters_the_average():
    detector = SpikeDetector(3.0, 5, 0.5, 0)
    for step in range(4):
        detector.update(2.0, step)
    assert detector.update(math.nan, 4) and detector.diverged
    assert detector.streak_start == 4 and detector.average == 2.0
    detector.clear_streak()
    assert not detector.diverged and detector.streak == 0


def test_layer_onsets_name_the_first_layer_to_leave_its_baseline():
    tracker = LayerOnsetTracker(layer_factor=10.0, window=20, calm_steps=2)
    for step in range(10):
        tracker.track({"bottom": 1.0 + 0.01 * step, "top": 2.0}, step, ready=True)
    assert tracker.baseline("top") == pytest.approx(2.0)
    tracker.track({"bottom": 50.0, "top": 3.0}, 10, ready=True)  # bottom: 50 / ~1.05 > 10
    tracker.track({"bottom": 90.0, "top": 40.0}, 11, ready=True)  # top: 40 / 2 > 10
    assert tracker.onset_steps() == {"bottom": 10, "top": 11}
    assert tracker.first_layer({}, None) == ("bottom", 10)
    # Two calm readings clear an onset; baselines stay.
    for step in (12, 13):
        tracker.track({"bottom": 1.0, "top": 2.0}, step, ready=True)
    assert tracker.onsets == {}
    assert tracker.first_layer({"bottom": 5.0, "top": 2.0}, 13) == ("bottom", 13)


def test_no_onset_before_the_loss_is_ready_or_the_baseline_exists():
    tracker = LayerOnsetTracker(layer_factor=10.0, window=20, calm_steps=2)
    for step in range(3):
        tracker.track({"a": 1.0}, step, ready=True)
    tracker.track({"a": 1000.0}, 3, ready=True)  # only 3 readings: no baseline yet
    assert tracker.onsets == {}
    for step in range(4, 10):
        tracker.track({"a": 1.0}, step, ready=False)
    tracker.track({"a": 1000.0}, 10, ready=False)
    assert tracker.onsets == {}
    tracker.track({"a": math.inf}, 11, ready=False)  # non-finite is anomalous at any time
    assert tracker.onset_steps() == {"a": 11}


def _assert_signals_equal(got, want):
    assert set(got) == set(want)
    for layer, signals in want.items():
        assert set(got[layer]) == set(signals), layer
        for name, value in signals.items():
            assert got[layer][name] == pytest.approx(value, rel=1e-5), (layer, name)


def test_update_signals_are_the_norms_of_each_layers_weight_change():
    rng = np.random.default_rng(3)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="bottom"),
            keras.layers.Dense(2, name="top", kernel_initializer="zeros"),
        ]
    )
    before = [tf.constant(np.asarray(v)) for v in model.trainable_variables]
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    got = update_signals(model.trainable_variables, before)
    # Keys are layer paths ("bottom" or ".../bottom" depending on the flavour).
    got = {layer.rsplit("/", 1)[-1]: values for layer, values in got.items()}
    pairs = {
        layer.name: [
            (b, np.asarray(v))
            for v, b in zip(model.trainable_variables, before)
            if any(v is w for w in layer.trainable_variables)
        ]
        for layer in model.layers
    }
    want = reference_update_signals(pairs)
    _assert_signals_equal(got, want)
    assert got["top"]["update_to_weight"] == math.inf  # all-zero weights before the step
    assert batch_summary(got)["update_norm"] == pytest.approx(
        math.hypot(want["bottom"]["update_norm"], want["top"]["update_norm"]), rel=1e-5
    )
    # No variables: no layers.
    assert update_signals([], []) == {}


def test_clippy_signals_combine_each_layers_variable_statistics():
    rng = np.random.default_rng(5)
    grouped, flat = {}, {}
    for layer, names in {"model/embed": ["embeddings"], "model/dense": ["kernel", "bias"]}.items():
        for name in names:
            stats = {
                "gradient_norm": float(rng.uniform(0.1, 3.0)),
                "variable_norm": float(rng.uniform(0.1, 3.0)),
                "update_ratio": float(rng.uniform(0.0, 5.0)),
                "clipping_factor": float(rng.uniform(0.0, 1.0)),
            }
            grouped.setdefault(layer, []).append(stats)
            flat[f"{layer}/{name}"] = stats
    got = clippy_signals(flat)
    want = reference_clippy_signals(grouped)
    _assert_signals_equal(got, want)
    summary = batch_summary(got)
    assert summary["clipping_factor"] == min(w["clipping_factor"] for w in want.values())
    assert summary["update_ratio"] == max(w["update_ratio"] for w in want.values())
    epoch = epoch_summary(
        {layer: {k: [v, v / 2] for k, v in s.items()} for layer, s in got.items()}
    )
    assert epoch["clipping_factor"] == pytest.approx(summary["clipping_factor"] / 2)
    assert epoch["grad_to_weight"] == pytest.approx(summary["grad_to_weight"])


def test_snapshots_restore_the_newest_good_state_and_forget_newer_ones():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adagrad(0.1), "mse")
    model.optimizer.build(model.trainable_variables)
    store = SnapshotStore(keep=3)
    store.take(model, -1, initial=True)
    values = {}
    for step in (9, 19, 29):
        weights = [np.full_like(w, step) for w in model.get_weights()]
        model.set_weights(weights)
        for variable in model.optimizer.variables:
            variable.assign(tf.cast(tf.fill(tf.shape(variable), step), variable.dtype))
        store.take(model, step)
        values[step] = weights
    # Onset at batch 30: the snapshot after 29 produced batch 30's loss, so 19 is restored.
    assert store.restore_before(model, onset=30) == 19
    for got, want in zip(model.get_weights(), values[19]):
        np.testing.assert_array_equal(got, want)
    assert int(model.optimizer.iterations) == 19
    # The snapshot after 29 is gone; an onset at 10 goes back to the start.
    assert store.restore_before(model, onset=10) == -1
    np.testing.assert_array_equal(model.get_weights()[1], np.zeros(1))
    empty = SnapshotStore()
    assert empty.restore_before(model, onset=3) is None


def test_event_writer_writes_every_scalar(tmp_path):
    writer = EventWriter(str(tmp_path))
    for step in range(3):
        writer.write(
            {
                "step": step,
                "loss": 1.0 + step,
                "loss_average": 1.0,
                "spike": step == 2,
                "layers": {"dense": {"update_ratio": 0.5 * step}},
            }
        )
    writer.close()
    scalars = {}
    for path in glob.glob(f"{tmp_path}/**/events.out.tfevents.*", recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor)))
                )
    assert scalars["stability/loss"] == [(0, 1.0), (1, 2.0), (2, 3.0)]
    assert scalars["stability/spike"] == [(0, 0.0), (1, 0.0), (2, 1.0)]
    assert scalars["update_ratio/dense"] == [(0, 0.0), (1, 0.5), (2, 1.0)]
