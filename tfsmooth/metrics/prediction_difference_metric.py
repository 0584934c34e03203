"""The PredictionDifference Keras metric."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth._keras import keras, register_serializable
from tfsmooth.metrics.prediction_difference import (
    CLASS_KINDS,
    EPSILON,
    check_epsilon,
    check_kind,
    check_sample_weight,
    per_example_difference,
)


@register_serializable
class PredictionDifference(keras.metrics.Metric):
    """Prediction difference of a model against a reference, accumulated over ``evaluate``.

    The streaming form of :func:`tfsmooth.metrics.prediction_difference` (same kinds, same formulas):
    each batch adds its weighted per-example differences and weights; ``result()`` is their ratio
    (for ``"l2"``, its square root).

    Two ways to give the reference predictions:

    - ``reference=None`` (default): the *targets* are the reference predictions. Compare a model with
      a reference model by evaluating on ``reference_model.predict(x)``::

          model.compile(loss=None, metrics=[PredictionDifference()])  # or any loss
          model.evaluate(x, reference_model.predict(x))

      Works in every setting, including ``tf.distribute`` strategies.
    - ``reference=array``: stored reference predictions for the evaluation examples, *in order*.
      Each batch is compared with the next slice of the array, so the targets stay free for the
      labels and one ``evaluate`` reports accuracy and PD together::

          model.compile(loss="binary_crossentropy",
                        metrics=["auc", PredictionDifference(reference=reference_predictions)])
          model.evaluate(x, labels, batch_size=1024)   # x unshuffled, in the reference's order

      The evaluation data must not be shuffled and must run on one replica (a
      ``tf.distribute`` strategy with several replicas splits batches across them: use the first
      form there). Running past the end of the array raises an error; ``reset_state()`` (called by
      ``evaluate``) starts again at the first example.

    Non-finite predictions are not dropped: they make the result NaN, which shows in the logs.

    Args:
        kind: ``"relative"`` (default), ``"absolute"``, ``"l2"``, ``"l1"`` or ``"top1"``.
        reference: ``None``, or the stored reference predictions (array-like, ``[N]``, ``[N, 1]``
            or ``[N, C]``).
        epsilon: the "both zero" threshold of the relative kind, ``> 0``.
        name: metric name.
        dtype: dtype of the accumulators and result (``float32`` by default; ``"l2"`` sums its
            squared distances in ``float64``, where they cannot overflow).

    Raises:
        TypeError: for a non-numeric ``epsilon``.
        ValueError: for an unknown ``kind``, an ``epsilon`` that is not ``> 0``, a non-finite
            stored reference, or (at run time) a batch whose shape does not match the reference,
            or sample weights that are NaN/Inf, negative, or neither one per example nor one for
            the batch.

    Example:

    >>> import numpy as np
    >>> from tfsmooth.metrics import PredictionDifference
    >>> metric = PredictionDifference(kind="absolute")
    >>> metric.update_state(np.array([0.2, 0.4]), np.array([0.3, 0.4]))
    >>> round(float(metric.result()), 4)
    0.05

    References:
        - [Shamir, Lin, Coviello (2020)](https://arxiv.org/abs/2010.09931)
    """

    def __init__(
        self,
        kind: str = "relative",
        reference: Any = None,
        epsilon: float = EPSILON,
        name: str = "prediction_difference",
        dtype: Any = None,
        **kwargs: Any,
    ):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.kind = check_kind(kind)
        self.epsilon = check_epsilon(epsilon)
        self.reference = None
        if reference is not None:
            values = np.asarray(reference, dtype=np.float32)
            if values.ndim == 0 or not np.all(np.isfinite(values)):
                raise ValueError(
                    "`reference` must be a finite array with one row per example. Received: "
                    f"reference of shape {values.shape} with "
                    f"{int(np.size(values) - np.isfinite(values).sum())} non-finite value(s)"
                )
            self.reference = values
        # l2 sums squared distances, which overflow float32 beyond 1.8e19 but never float64 (the
        # squares of float32 values stay below 1.2e77): its total is a float64.
        self.total = self.add_weight(
            name="total",
            shape=(),
            initializer="zeros",
            **({"dtype": "float64"} if self.kind == "l2" else {}),
        )
        self.weight_sum = self.add_weight(name="weight_sum", shape=(), initializer="zeros")
        self.position = self.add_weight(
            name="position", shape=(), initializer="zeros", dtype="int64"
        )

    def _stored_reference(self, batch: tf.Tensor) -> tf.Tensor:
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            raise ValueError(
                "`PredictionDifference(reference=array)` reads the array in order and cannot follow "
                "batches split across replicas; pass the reference predictions as targets instead. "
                f"Received: {context.num_replicas_in_sync} replicas"
            )
        reference = tf.constant(self.reference)
        size = tf.shape(batch, out_type=tf.int64)[0]
        start = tf.convert_to_tensor(self.position)
        tf.debugging.assert_less_equal(
            start + size,
            tf.constant(len(self.reference), tf.int64),
            message="`PredictionDifference`: more predictions than stored reference predictions",
        )
        indices = tf.minimum(start + tf.range(size), len(self.reference) - 1)
        selected = tf.gather(reference, indices)
        # Rows past the end (only reachable where assertions are compiled away) become NaN.
        valid = start + tf.range(size) < len(self.reference)
        shape = tf.concat([[size], tf.ones([tf.rank(selected) - 1], tf.int64)], axis=0)
        nan = tf.fill(tf.shape(selected), tf.constant(math.nan, selected.dtype))
        selected = tf.where(tf.reshape(valid, shape), selected, nan)
        self.position.assign_add(size)
        return selected

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        dtype = self.total.dtype  # float64 for l2
        prediction = tf.cast(y_pred, dtype)
        if self.reference is not None:
            reference = tf.cast(self._stored_reference(prediction), dtype)
        else:
            reference = tf.cast(tf.convert_to_tensor(y_true), dtype)
        batch = tf.shape(prediction)[0]
        if self.kind in CLASS_KINDS:
            classes = tf.shape(prediction)[-1]  # class probabilities: [B, C]
            prediction = tf.reshape(prediction, [batch, classes])
            reference = tf.reshape(reference, [batch, classes])
        else:  # [B], [B, 1] and friends all become [B, k]
            prediction = tf.reshape(prediction, [batch, -1])
            reference = tf.reshape(reference, [batch, -1])
        tf.debugging.assert_equal(
            tf.shape(prediction),
            tf.shape(reference),
            message="`PredictionDifference`: predictions and reference differ in shape",
        )
        if sample_weight is None:
            weights = tf.ones([batch], dtype)
        else:
            weights = tf.cast(tf.convert_to_tensor(sample_weight), dtype)
            if weights.shape.rank == 0:  # one weight for the whole batch
                weights = tf.fill([batch], weights)
            weights = check_sample_weight(weights, batch, dtype)
        terms = per_example_difference(prediction, reference, self.kind, self.epsilon)
        self.total.assign_add(tf.reduce_sum(weights * terms))
        self.weight_sum.assign_add(tf.cast(tf.reduce_sum(weights), self.weight_sum.dtype))

    def result(self):
        total = tf.convert_to_tensor(self.total)
        mean = tf.math.divide_no_nan(
            total, tf.cast(tf.convert_to_tensor(self.weight_sum), total.dtype)
        )
        if self.kind == "l2":
            return tf.cast(tf.sqrt(mean), self.weight_sum.dtype)
        return mean

    def reset_state(self):
        for variable in (self.total, self.weight_sum, self.position):
            variable.assign(tf.zeros((), variable.dtype))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            kind=self.kind,
            reference=None if self.reference is None else self.reference.tolist(),
            epsilon=self.epsilon,
        )
        return config
