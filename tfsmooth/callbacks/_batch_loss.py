"""The loss of every training batch, as the model's ``compute_loss`` returned it.

Keras's ``fit`` reports the *mean* loss since the epoch began, kept as a float32 running total.
Once the loss jumps by many orders of magnitude that total cannot hold the next batches' losses
(``8e22 + 1e14`` is ``8e22`` in float32), so no arithmetic on the reported means recovers them.
:class:`BatchLossProbe` records each batch's loss where it is computed instead: it wraps the
model's ``compute_loss`` (which ``train_step`` calls in both Keras flavours and in TFRS models) so
the traced training step also writes the loss into a variable, read after the batch.
"""

from __future__ import annotations

import functools
from typing import Any

import tensorflow as tf

__all__ = ["BatchLossProbe"]

_ATTRIBUTE = "_tfsmooth_batch_loss_probe"


class BatchLossProbe:
    """Records each training batch's loss inside the compiled training step.

    The loss ``compute_loss`` returns is each replica's share of the global batch's loss (both
    Keras flavours scale it by ``1 / num_replicas``), so the probe keeps it in a variable
    synchronised on read that sums over replicas: reading it gives the global batch's mean loss,
    with or without XLA and under ``tf.distribute`` strategies. A counter tells whether the
    step that just ran wrote it.

    One probe per model (:meth:`attach` returns the model's existing one); its variables belong
    to no layer, so they are not saved with the model.

    Example:

    >>> import numpy as np
    >>> from tfsmooth._keras import keras
    >>> from tfsmooth.callbacks._batch_loss import BatchLossProbe
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    >>> model.compile("sgd", "mse")
    >>> probe = BatchLossProbe.attach(model)
    >>> model.set_weights([np.zeros((1, 1), "float32")])
    >>> _ = model.fit(np.ones((4, 1)), np.full((4, 1), 3.0), batch_size=4, epochs=1, verbose=0)
    >>> float(probe.read())  # (0 - 3)^2
    9.0
    """

    def __init__(self, model: Any):
        strategy = model.distribute_strategy
        with strategy.scope():
            options = {
                "trainable": False,
                "synchronization": tf.VariableSynchronization.ON_READ,
                "aggregation": tf.VariableAggregation.SUM,
            }
            self._loss = tf.Variable(0.0, dtype=tf.float32, name="batch_loss", **options)
            self._writes = tf.Variable(0, dtype=tf.int64, name="batch_loss_writes", **options)
        self._last_writes = 0
        self._function = None
        self._model = model
        original = model.compute_loss

        @functools.wraps(original)
        def compute_loss(*args: Any, **kwargs: Any) -> Any:
            loss = original(*args, **kwargs)
            if kwargs.get("training", True) is not False and loss is not None:
                self._loss.assign(tf.reduce_mean(tf.cast(loss, tf.float32)))
                self._writes.assign_add(1)
            return loss

        # Bypass Keras's attribute tracking: neither is a layer's state.
        object.__setattr__(model, "compute_loss", compute_loss)
        object.__setattr__(model, _ATTRIBUTE, self)

    @classmethod
    def attach(cls, model: Any) -> BatchLossProbe:
        """The model's probe, created (and ``compute_loss`` wrapped) on the first call."""
        probe = model.__dict__.get(_ATTRIBUTE)
        return probe if probe is not None else cls(model)

    def prepare(self) -> None:
        """Makes sure the model's training function was traced with the probe in place.

        Call it after ``fit`` made its training function (``on_train_begin``): a function made
        before the probe was attached is made again (not yet traced, so this costs nothing).
        """
        model = self._model
        function = getattr(model, "train_function", None)
        if function is not None and function is not self._function:
            made = model.make_train_function(force=True)
            self._function = made if made is not None else model.train_function

    def read(self) -> float | None:
        """The loss of the batch that ran last, or ``None`` if no step wrote it since the last
        read (a ``train_step`` that does not call ``compute_loss``)."""
        writes = int(self._writes.numpy())
        if writes == self._last_writes:
            return None
        self._last_writes = writes
        return float(self._loss.numpy())
