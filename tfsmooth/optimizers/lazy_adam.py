"""LazyAdam: Adam whose sparse step reads and writes only the rows a gradient touches."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfsmooth import _keras
from tfsmooth._validation import check_float
from tfsmooth.optimizers._base import (
    OptimizerBase,
    check_learning_rate,
    depending_on,
    unique_row_mask,
)

__all__ = ["LazyAdam"]


@_keras.register_serializable
class LazyAdam(OptimizerBase):
    """Adam that, for a sparse gradient, updates only the rows the gradient touches.

    For a dense gradient this is Keras's ``Adam`` (without ``amsgrad``). For a sparse gradient
    (``tf.IndexedSlices``: an embedding table) with rows ``I`` (repeated rows summed first), only
    those rows of the variable and of both moments change, with the global step ``t``:

    .. math::

        m_I \\leftarrow \\beta_1 m_I + (1 - \\beta_1) g_I, \\qquad
        v_I \\leftarrow \\beta_2 v_I + (1 - \\beta_2) g_I^2, \\qquad
        w_I \\leftarrow w_I - \\eta \\frac{\\sqrt{1 - \\beta_2^t}}{1 - \\beta_1^t}
            \\frac{m_I}{\\sqrt{v_I} + \\epsilon} .

    Keras's ``Adam`` instead decays the moments of *every* row in every step and moves every row
    whose momentum is not zero: a step costs O(table) however few rows the batch looks up. Here it
    costs O(rows touched) in time and memory, with or without XLA, so it is the Adam to use (alone
    or inside :class:`~tfsmooth.optimizers.Clippy`) with tables of millions of rows. The results
    differ from Adam's on rows not looked up in a step (their moments are not decayed, so they do
    not coast on their momentum): the "lazy" Adam of TensorFlow Addons and of TensorFlow 1's
    ``LazyAdamOptimizer``, which large-table recommenders use.

    A variable whose gradient has a NaN or infinite coordinate is left unchanged in that step,
    weights and moments, and counted in ``nonfinite_gradients``.

    Args:
        learning_rate: ``eta``: a float > 0, a ``LearningRateSchedule`` or a callable.
        beta_1: decay of the first moment, in ``[0, 1)``.
        beta_2: decay of the second moment, in ``[0, 1)``.
        epsilon: added to ``sqrt(v)``, ``>= 0``.
        name: the optimizer's name.
        **kwargs: the base optimizer's arguments (``clipnorm``, ``global_clipnorm``,
            ``weight_decay``, ...). Weight decay is applied by the Keras base optimizer to the
            whole variable in every step, so it is not lazy.

    Raises:
        ValueError: for a non-positive learning rate, a ``beta`` outside ``[0, 1)`` or a negative
            ``epsilon``.
        TypeError: for an argument that is not a number.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.optimizers import LazyAdam
    >>> table = tf.Variable(tf.ones([5, 2]))
    >>> optimizer = LazyAdam(learning_rate=0.1)
    >>> gradient = tf.IndexedSlices(tf.ones([1, 2]), tf.constant([3]), tf.constant([5, 2]))
    >>> _ = optimizer.apply_gradients([(gradient, table)])
    >>> table.numpy()[:, 0].round(4)  # only row 3 moved, by about the learning rate
    array([1. , 1. , 1. , 0.9, 1. ], dtype=float32)

    References:
        - [Kingma & Ba. Adam: A method for stochastic optimization (ICLR 2015)](https://arxiv.org/abs/1412.6980)
        - [TensorFlow Addons LazyAdam](https://www.tensorflow.org/addons/api_docs/python/tfa/optimizers/LazyAdam)
    """

    def __init__(
        self,
        learning_rate: Any = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        name: str = "LazyAdam",
        **kwargs: Any,
    ):
        learning_rate = check_learning_rate(learning_rate)
        beta_1 = check_float("beta_1", beta_1, 0.0, 1.0, max_inclusive=False, float32=True)
        beta_2 = check_float("beta_2", beta_2, 0.0, 1.0, max_inclusive=False, float32=True)
        epsilon = check_float("epsilon", epsilon, 0.0, float32=True)
        super().__init__(learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def build_state(self, variables: list) -> None:
        self._momentums = [self.add_state(v, "momentum") for v in variables]
        self._velocities = [self.add_state(v, "velocity") for v in variables]

    def apply_update(
        self, gradient: Any, variable: tf.Variable, learning_rate: Any, finite: tf.Tensor
    ) -> None:
        dtype = variable.dtype
        index = self.variable_index(variable)
        momentum = _keras.native_variable(self._momentums[index])
        velocity = _keras.native_variable(self._velocities[index])
        step = tf.cast(_keras.native_variable(self.iterations) + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = (
            tf.cast(learning_rate, dtype)
            * tf.sqrt(1 - tf.pow(beta_2, step))
            / (1 - tf.pow(beta_1, step))
        )
        sparse = isinstance(gradient, tf.IndexedSlices)
        if sparse:
            indices = gradient.indices
            values = tf.cast(gradient.values, dtype)
            m, v = tf.gather(momentum, indices), tf.gather(velocity, indices)
            # Padding rows of the deduplication repeat a real row: they must change nothing.
            keep = tf.logical_and(finite, unique_row_mask(indices))
            keep = tf.reshape(keep, [-1] + [1] * (values.shape.rank - 1))
        else:
            values = tf.cast(gradient, dtype)
            m, v = momentum.value(), velocity.value()
            keep = finite
        # 1 - beta in Python, then rounded to the dtype once, as Keras's Adam does.
        m_change = (values - m) * tf.cast(1 - self.beta_1, dtype)
        v_change = (values * values - v) * tf.cast(1 - self.beta_2, dtype)
        update = alpha * (m + m_change) / (tf.sqrt(v + v_change) + self.epsilon)
        zero = tf.zeros_like(update)
        # A skipped row or variable changes nothing: adding 0 keeps every value bit for bit.
        m_change, v_change = tf.where(keep, m_change, zero), tf.where(keep, v_change, zero)
        update = tf.where(keep, update, zero)
        if sparse:
            momentum.scatter_add(tf.IndexedSlices(depending_on(m, m_change), indices))
            velocity.scatter_add(tf.IndexedSlices(depending_on(v, v_change), indices))
        else:
            momentum.assign_add(m_change)
            velocity.assign_add(v_change)
        self.subtract_update(gradient, variable, update)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return config
