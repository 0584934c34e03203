"""StabilityMonitor: watch training for divergence, log the early-warning signals, roll back.

Tang et al. (KDD 2023) describe how multitask ranking models diverge: loss spikes that recover
(micro-divergence) or that never do (divergence, AUC at 0.5 for good). At the onset the gradient
norm jumps; Clippy's update-to-bound ratio ``max_i |u_i| / (lambda_rel |w_i| + lambda_abs)`` jumps
by orders of magnitude while ``|g| / |w|`` barely moves; bottom layers move first.

References:
    - [Tang et al. Improving training stability for multitask ranking models in recommender
      systems (KDD 2023)](https://arxiv.org/abs/2302.09178)
"""

from __future__ import annotations

import math
import os
import warnings
from collections import deque
from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth import _keras
from tfsmooth._keras import keras, register_serializable
from tfsmooth._validation import check_bool, check_float, check_int
from tfsmooth.callbacks._batch_loss import BatchLossProbe
from tfsmooth.callbacks.events import EventWriter
from tfsmooth.callbacks.layer_onsets import LayerOnsetTracker
from tfsmooth.callbacks.layer_signals import (
    batch_summary,
    clippy_signals,
    epoch_summary,
    reduce_signal,
    signal_name,
    update_signals,
)
from tfsmooth.callbacks.snapshots import SnapshotStore
from tfsmooth.callbacks.spike_detector import SpikeDetector

__all__ = ["StabilityMonitor"]

_LOSS_MODES = ("epoch_mean", "batch")


@register_serializable
class StabilityMonitor(keras.callbacks.Callback):
    """Detects divergence as it starts, logs its early-warning signals and rolls training back.

    Every batch it takes the batch's own loss (read inside the training step, not recovered
    from ``fit``'s running mean) and compares it with a running average (an
    exponential moving average of the healthy batches). A loss above ``spike_factor`` times the
    average is a *spike*; ``spike_patience`` spikes in a row, or one NaN/Inf loss, is a
    *divergence*. On divergence it stops training (``stop_on_divergence``) and puts back the last
    good weights **and** optimizer state (``restore_on_divergence``: accumulators, momenta,
    iteration count, clipping statistics), so nothing learned before the onset is lost, and it
    reports which layer moved first (:attr:`divergence`).

    Per-layer signals, every ``log_every`` batches, from the real training step (no extra forward
    or backward pass):

    - with a Clippy optimizer (:class:`~tfsmooth.optimizers.ClippyAdagrad`,
      :class:`~tfsmooth.optimizers.Clippy`, also inside a ``LossScaleOptimizer``), recorded by the
      optimizer in the step itself: gradient norm ``||g||``, ``||g|| / ||w||``, Clippy's
      update-to-bound ratio (the max over the layer's variables) and clipping factor (the min);
    - with any other optimizer the callback sees weights, not gradients: it logs each layer's
      update norm ``||dw||`` and ``||dw|| / ||w||`` (for SGD ``||dw|| = lr ||g||``), reading the
      weights before and after the logged batches (one extra read of the weights per logged
      batch; raise ``log_every`` for very large tables).

    "Which layer moved first": each layer's signal (update-to-bound ratio, or ``||dw|| / ||w||``)
    is compared with its own baseline, the median of its recent healthy readings (robust to the
    first steps' transient); the layer whose signal first rose above ``layer_factor`` times its
    baseline in the run-up to the divergence is reported, with the step of that onset.

    Logs: the epoch logs (so ``History`` and a later ``keras.callbacks.TensorBoard``) get
    ``loss_average``, ``loss_spikes`` (spikes this epoch), ``nonfinite_losses``,
    ``nonfinite_gradients`` (with a tfsmooth optimizer: the variable-updates it skipped this epoch
    because their gradient had a NaN or Inf; also in :attr:`history` on logged batches, counted
    since the previous logged batch) and, over the
    epoch's logged batches, ``gradient_norm`` and ``grad_to_weight`` (max over layers),
    ``update_ratio`` (max) and ``clipping_factor`` (min) -- or ``update_norm`` and
    ``update_to_weight`` for plain optimizers; per layer as ``signal/layer`` with
    ``log_layers=True``. With ``log_dir`` every logged batch is also written to TensorBoard, per
    layer. :attr:`history` keeps every logged batch.

    Args:
        spike_factor: ``k``: a batch loss above ``k`` times the running average is a spike.
        spike_patience: ``m``: this many spikes in a row are a divergence.
        average_decay: decay of the loss's moving average (``0.98``: about the last 50 batches).
        warmup_steps: batches during which the moving average settles. Meanwhile a batch's
            loss is compared with the plain mean of the healthy losses so far (from the
            third healthy batch on), so an explosion in the first steps is a spike too; only the
            first two batches cannot spike (a NaN/Inf loss always diverges).
        layer_factor: a layer's signal above this many times its own average marks its onset.
        stop_on_divergence: stop training on divergence.
        restore_on_divergence: put back the last good weights and optimizer state.
        snapshot_every: batches between snapshots of weights and optimizer state (host copies;
            the last good one is restored).
        log_every: batches between per-layer readings.
        log_dir: write per-batch scalars to TensorBoard under this directory (``None``: don't).
        log_layers: also put per-layer values in the epoch logs (History).
        loss_in_logs: ``"epoch_mean"`` -- Keras's built-in ``fit`` reports the mean loss since
            the epoch began; the monitor takes each batch's own loss where the training step
            computes it (:class:`~tfsmooth.callbacks._batch_loss.BatchLossProbe` on ``compute_loss``), and
            recovers it from the running mean, with a warning, only for a ``train_step`` that
            never calls ``compute_loss``. ``"batch"`` -- a custom ``train_step`` that returns the
            batch's own loss as ``"loss"``.
        history_size: how many batches :attr:`history` keeps.
        verbose: print divergences and restores.

    Raises:
        ValueError: for out-of-range numbers or an unknown ``loss_in_logs``.
        TypeError: for non-boolean flags.

    Example:

    >>> from tfsmooth.callbacks import StabilityMonitor
    >>> monitor = StabilityMonitor(spike_factor=3.0, spike_patience=5, log_dir="logs")
    >>> # model.fit(data, epochs=3, callbacks=[monitor, tf.keras.callbacks.TensorBoard("logs")])
    >>> # monitor.divergence -> None, or {"step", "reason", "first_layer", "restored_step", ...}

    References:
        - [Tang et al. (2023)](https://arxiv.org/abs/2302.09178)
    """

    def __init__(
        self,
        spike_factor: float = 3.0,
        spike_patience: int = 5,
        average_decay: float = 0.98,
        warmup_steps: int = 20,
        layer_factor: float = 10.0,
        stop_on_divergence: bool = True,
        restore_on_divergence: bool = True,
        snapshot_every: int = 50,
        log_every: int = 1,
        log_dir: str | None = None,
        log_layers: bool = False,
        loss_in_logs: str = "epoch_mean",
        history_size: int = 100_000,
        verbose: int = 1,
    ):
        super().__init__()
        self.spike_factor = check_float("spike_factor", spike_factor, 1.0, min_inclusive=False)
        self.spike_patience = check_int("spike_patience", spike_patience, 1)
        self.average_decay = check_float("average_decay", average_decay, 0.0)
        if self.average_decay >= 1.0:
            raise ValueError(
                f"`average_decay` must be < 1. Received: average_decay={average_decay!r}"
            )
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        self.layer_factor = check_float("layer_factor", layer_factor, 1.0, min_inclusive=False)
        self.stop_on_divergence = check_bool("stop_on_divergence", stop_on_divergence)
        self.restore_on_divergence = check_bool("restore_on_divergence", restore_on_divergence)
        self.snapshot_every = check_int("snapshot_every", snapshot_every, 1)
        self.log_every = check_int("log_every", log_every, 1)
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"`log_dir` must be a path or None. Received: log_dir={log_dir!r}")
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.log_layers = check_bool("log_layers", log_layers)
        if loss_in_logs not in _LOSS_MODES:
            raise ValueError(
                f"`loss_in_logs` must be one of {list(_LOSS_MODES)}. "
                f"Received: loss_in_logs={loss_in_logs!r}"
            )
        self.loss_in_logs = loss_in_logs
        self.history_size = check_int("history_size", history_size, 1)
        self.verbose = check_int("verbose", verbose, 0)
        self._reset()

    # ------------------------------------------------------------------------------------------
    # State.

    def _reset(self) -> None:
        #: The last ``history_size`` batches: ``{"step", "loss", "loss_average", "spike"}`` and,
        #: on logged batches, the summed-up signals (per layer under ``"layers"`` with
        #: ``log_layers`` or ``log_dir``).
        self.history: deque = deque(maxlen=self.history_size)
        #: ``None``, or what happened at the divergence (see the class docstring).
        self.divergence: dict[str, Any] | None = None
        self._step = 0
        self._spikes = SpikeDetector(
            self.spike_factor, self.spike_patience, self.average_decay, self.warmup_steps
        )
        self._onsets = LayerOnsetTracker(
            self.layer_factor,
            window=max(5, round(1.0 / (1.0 - self.average_decay))),
            calm_steps=self.spike_patience,
        )
        self._snapshots = SnapshotStore(keep=3)
        self._previous_mean = None
        self._previous_batch = -1
        self._before = None
        self._last_layers: dict[str, dict[str, float]] = {}
        self._epoch: dict[str, Any] = {}
        self._writer: EventWriter | None = None
        self._probe: BatchLossProbe | None = None
        self._warned_reconstruction = False
        self._nonfinite_seen = 0

    @property
    def _average(self) -> float | None:
        return self._spikes.average

    def get_config(self) -> dict:
        return {
            "spike_factor": self.spike_factor,
            "spike_patience": self.spike_patience,
            "average_decay": self.average_decay,
            "warmup_steps": self.warmup_steps,
            "layer_factor": self.layer_factor,
            "stop_on_divergence": self.stop_on_divergence,
            "restore_on_divergence": self.restore_on_divergence,
            "snapshot_every": self.snapshot_every,
            "log_every": self.log_every,
            "log_dir": self.log_dir,
            "log_layers": self.log_layers,
            "loss_in_logs": self.loss_in_logs,
            "history_size": self.history_size,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config: dict) -> StabilityMonitor:
        return cls(**config)

    # ------------------------------------------------------------------------------------------
    # Keras hooks.

    def on_train_begin(self, logs=None):
        self._reset()
        self._skipped_gradients()  # what the optimizer skipped before this fit is not counted
        if self.loss_in_logs == "epoch_mean":
            self._probe = BatchLossProbe.attach(self.model)
            self._probe.prepare()
            self._probe.read()  # forget what an earlier fit or evaluation wrote
        if self.log_dir is not None:
            self._writer = EventWriter(self.log_dir)
        if self.restore_on_divergence:
            self._build_optimizer()
            self._snapshots.take(self.model, -1, initial=True)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def on_epoch_begin(self, epoch, logs=None):
        self._previous_mean = None
        self._previous_batch = -1
        self._epoch = {
            "spikes": 0,
            "nonfinite": 0,
            "nonfinite_gradients": 0,
            "signals": {},
            "epoch": epoch,
        }

    def on_train_batch_begin(self, batch, logs=None):
        if self._logs_this_step() and self._optimizer_statistics() is None:
            # A plain optimizer: keep the weights before the step (copy on write, on device).
            self._before = [tf.identity(_keras.native_variable(v)) for v in self._variables()]

    def on_train_batch_end(self, batch, logs=None):
        logs = logs if logs is not None else {}
        loss = self._batch_loss(batch, logs)
        step = self._step
        self._step += 1
        if loss is None:
            return
        record = {"step": step, "loss": loss}
        spike = self._update_loss(loss, step)
        record.update(loss_average=self._average, spike=spike)
        if self._logs_this_step(step):
            signals = self._layer_signals()
            record.update(batch_summary(signals))
            self._track_layers(signals, step)
            self._last_layers = signals
            self._accumulate_epoch(signals)
            skipped = self._skipped_gradients()
            if skipped is not None:
                record["nonfinite_gradients"] = skipped
                self._epoch["nonfinite_gradients"] = (
                    self._epoch.get("nonfinite_gradients", 0) + skipped
                )
            if self.log_layers or self._writer is not None:
                record["layers"] = signals
        self.history.append(record)
        if self._writer is not None:
            self._writer.write(record)
        if self._spikes.diverged:
            self._on_divergence(
                step, loss, "non-finite loss" if not math.isfinite(loss) else "loss spike"
            )
        elif (
            self.restore_on_divergence
            and self._spikes.streak == 0
            and (step + 1) % self.snapshot_every == 0
        ):
            self._snapshots.take(self.model, step)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["loss_average"] = float(self._average) if self._average is not None else math.nan
        logs["loss_spikes"] = float(self._epoch.get("spikes", 0))
        logs["nonfinite_losses"] = float(self._epoch.get("nonfinite", 0))
        skipped = self._skipped_gradients()
        if skipped is not None:
            total = self._epoch.get("nonfinite_gradients", 0) + skipped
            logs["nonfinite_gradients"] = float(total)
        layers = self._epoch.get("signals", {})
        logs.update(epoch_summary(layers))
        if self.log_layers:
            for layer, signals in layers.items():
                for signal, values in signals.items():
                    logs[f"{signal}/{layer}"] = reduce_signal(signal, values)

    # ------------------------------------------------------------------------------------------
    # The loss.

    def _batch_loss(self, batch: int, logs: dict) -> float | None:
        if self.loss_in_logs == "batch":
            return float(np.asarray(logs["loss"])) if "loss" in logs else None
        if self._probe is not None:
            loss = self._probe.read()
            if loss is not None:
                return loss
        if "loss" not in logs:
            return None
        return self._loss_from_epoch_mean(batch, float(np.asarray(logs["loss"])))

    def _loss_from_epoch_mean(self, batch: int, value: float) -> float:
        """A batch loss recovered from ``fit``'s running mean: only for a ``train_step`` that
        never calls ``compute_loss``. The float32 mean cancels once the loss jumps by many orders
        of magnitude, so this warns once."""
        if not self._warned_reconstruction:
            self._warned_reconstruction = True
            warnings.warn(
                "StabilityMonitor: the model's train_step did not call `compute_loss`, so the "
                "batch loss is recovered from the epoch's running mean, which loses the loss of "
                "a batch after an explosion. Return the batch's own loss from `train_step` and "
                'pass `loss_in_logs="batch"`.',
                stacklevel=2,
            )
        count, previous_count = batch + 1, self._previous_batch + 1
        previous = self._previous_mean
        self._previous_mean, self._previous_batch = value, batch
        if previous is None or previous_count <= 0 or count <= previous_count:
            return value
        if not math.isfinite(previous):
            return previous
        return (count * value - previous_count * previous) / (count - previous_count)

    def _update_loss(self, loss: float, step: int) -> bool:
        spike = self._spikes.update(loss, step)
        if not math.isfinite(loss):
            self._epoch["nonfinite"] = self._epoch.get("nonfinite", 0) + 1
        elif spike:
            self._epoch["spikes"] = self._epoch.get("spikes", 0) + 1
        return spike

    # ------------------------------------------------------------------------------------------
    # Per-layer signals.

    def _logs_this_step(self, step: int | None = None) -> bool:
        step = self._step if step is None else step
        return step % self.log_every == 0

    def _variables(self) -> list:
        return list(self.model.trainable_variables)

    def _skipped_gradients(self) -> int | None:
        """Variable-updates the optimizer skipped for a non-finite gradient since the last call;
        ``None`` for an optimizer that does not count them (see
        :func:`~tfsmooth.optimizers.nonfinite_gradient_count`). A rollback lowers the count:
        nothing is counted until it grows again."""
        from tfsmooth.optimizers import nonfinite_gradient_count

        counter = nonfinite_gradient_count(getattr(self.model, "optimizer", None))
        if counter is None:
            return None
        total = int(np.asarray(counter))
        skipped = max(0, total - self._nonfinite_seen)
        self._nonfinite_seen = total
        return skipped

    def _optimizer_statistics(self) -> dict | None:
        from tfsmooth.optimizers import find_clippy

        clippy = find_clippy(getattr(self.model, "optimizer", None))
        if clippy is None or not clippy.export_clipping_factors:
            return None
        return clippy.clipping_statistics()

    def _layer_signals(self) -> dict[str, dict[str, float]]:
        statistics = self._optimizer_statistics()
        if statistics:
            return clippy_signals(statistics)
        before, self._before = self._before, None
        if before is None:
            return {}
        variables = self._variables()
        if len(variables) != len(before):  # a subclassed model built in this very step
            return {}
        return update_signals(variables, before)

    def _track_layers(self, layers: dict[str, dict[str, float]], step: int) -> None:
        signals = {layer: values[signal_name(values)] for layer, values in layers.items()}
        self._onsets.track(signals, step, ready=self._spikes.settled)

    def _accumulate_epoch(self, layers: dict[str, dict[str, float]]) -> None:
        store = self._epoch.setdefault("signals", {})
        for layer, values in layers.items():
            for name, value in values.items():
                store.setdefault(layer, {}).setdefault(name, []).append(value)

    # ------------------------------------------------------------------------------------------
    # Divergence, snapshots, TensorBoard.

    def _build_optimizer(self) -> None:
        """Creates the optimizer's state now, so the first snapshot holds all of it."""
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None or getattr(optimizer, "built", getattr(optimizer, "_built", False)):
            return
        with self.model.distribute_strategy.scope():
            optimizer.build(self.model.trainable_variables)

    def _first_layer(self) -> tuple[str | None, int | None]:
        last = {layer: v[signal_name(v)] for layer, v in self._last_layers.items()}
        return self._onsets.first_layer(last, self.history[-1]["step"] if self.history else None)

    def _on_divergence(self, step: int, loss: float, reason: str) -> None:
        onset = self._spikes.streak_start if self._spikes.streak_start is not None else step
        layer, layer_step = self._first_layer()
        restored = None
        if self.restore_on_divergence:
            restored = self._snapshots.restore_before(self.model, onset)
        self.divergence = {
            "step": step,
            "epoch": self._epoch.get("epoch"),
            "reason": reason,
            "loss": loss,
            "loss_average": self._average,
            "onset_step": onset,
            "first_layer": layer,
            "first_layer_step": layer_step,
            "layer_onsets": self._onsets.onset_steps(),
            "restored_step": restored,
        }
        if self.verbose:
            where = f"; layer '{layer}' moved first (step {layer_step})" if layer else ""
            back = (
                f"; restored the weights and optimizer state after step {restored}"
                if restored is not None and restored >= 0
                else "; restored the weights and optimizer state from the start of training"
                if restored is not None
                else ""
            )
            print(
                f"StabilityMonitor: divergence at step {step} ({reason}, loss {loss:.4g}){where}{back}."
            )
        self._spikes.clear_streak()
        self._onsets.clear_onsets()
        self._previous_mean = None
        if self.stop_on_divergence:
            self.model.stop_training = True
