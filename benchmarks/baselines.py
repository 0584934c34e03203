"""What the benchmarks compare tfsmooth with and users would otherwise write: never part of tfsmooth.

- :class:`AdaptiveClippingAdagrad` -- Adagrad after adaptive gradient clipping (AGC), a baseline of
  ``stability.py`` (Keras 3 only).
- :func:`xla_clippy_adagrad` -- tfsmooth ``ClippyAdagrad`` with its updates compiled by XLA under
  tf-keras, a variant timed by ``stability.py`` (it overrides a tf-keras internal).
- :func:`smelu_tf_where` -- SmeLU as the published TensorFlow ports write it, timed by
  ``activations.py``.
- :func:`full_softmax_cross_entropy` -- the materialised ``[N, C]`` softmax cross-entropy, the anchor
  of ``retrieval.py``.
"""

from __future__ import annotations

import tensorflow as tf

from tfsmooth._keras import keras
from tfsmooth.optimizers import ClippyAdagrad


class AdaptiveClippingAdagrad(keras.optimizers.Adagrad):
    """Adagrad after AGC (Brock et al. 2021): unit-wise ``||g|| <= lambda max(||w||, eps)``.

    Units: a Dense/Cross kernel's output columns (norm over the fan-in axis), an embedding's rows
    (over the looked-up rows of a sparse gradient), the whole of a 1-D variable. Keras 3 only.

    Reference: [Brock et al. 2021](https://arxiv.org/abs/2102.06171).
    """

    def __init__(self, learning_rate, clipping=0.01, eps=1e-3, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.clipping, self.eps = clipping, eps

    def _clip(self, gradient, weights, axis):
        g_norm = tf.norm(gradient, axis=axis, keepdims=axis is not None)
        w_norm = tf.maximum(tf.norm(weights, axis=axis, keepdims=axis is not None), self.eps)
        limit = self.clipping * w_norm
        return tf.where(g_norm > limit, gradient * (limit / tf.maximum(g_norm, 1e-12)), gradient)

    def update_step(self, gradient, variable, learning_rate):
        if isinstance(gradient, tf.IndexedSlices):
            rows = tf.gather(variable, gradient.indices)
            values = self._clip(gradient.values, rows, axis=-1)
            gradient = tf.IndexedSlices(values, gradient.indices, gradient.dense_shape)
        else:
            axis = 0 if gradient.shape.rank and gradient.shape.rank > 1 else None
            gradient = self._clip(gradient, variable, axis)
        super().update_step(gradient, variable, learning_rate)


def xla_clippy_adagrad(fuse: str, learning_rate: float = 0.04):
    """tfsmooth ClippyAdagrad under tf-keras with its updates compiled by XLA: ``fuse="all"``,
    every variable's update in one XLA program; ``fuse="variable"``, one program per variable.

    Benchmark-only (it overrides a tf-keras internal, and only outside ``tf.distribute``): it
    measures whether XLA would close the gap to tf-keras Adagrad on CPU. Each variable's update
    goes through ``update_variable`` as tfsmooth's tf-keras adapter calls it.
    """

    class XlaClippyAdagrad(ClippyAdagrad):
        def _distributed_apply_gradients_fn(self, distribution, grads_and_vars, **kwargs):
            grads, variables = (list(x) for x in zip(*grads_and_vars))
            learning_rate = self.learning_rate
            if fuse == "all":
                if not hasattr(self, "_xla_all"):

                    def update_all(grads, learning_rate):
                        for grad, variable in zip(grads, variables):
                            self.update_variable(grad, variable, learning_rate)

                    self._xla_all = tf.function(update_all, jit_compile=True)
                self._xla_all(grads, learning_rate)
            else:
                if not hasattr(self, "_xla_each"):
                    self._xla_each = [
                        tf.function(
                            lambda grad, learning_rate, variable=variable: self.update_variable(
                                grad, variable, learning_rate
                            ),
                            jit_compile=True,
                        )
                        for variable in variables
                    ]
                for update, grad in zip(self._xla_each, grads):
                    update(grad, learning_rate)
            return self.iterations.assign_add(1)

    return XlaClippyAdagrad(learning_rate)


def smelu_tf_where(x, beta=1.0):
    """SmeLU as the published TensorFlow ports write it (autodiff through tf.where)."""
    return tf.where(tf.math.abs(x) <= beta, ((x + beta) ** 2) / (4 * beta), tf.nn.relu(x))


def full_softmax_cross_entropy(queries, items, labels):
    """Mean softmax cross-entropy over the whole catalog through the materialised ``[N, C]`` logits
    (``tf.matmul`` + ``tf.nn.sparse_softmax_cross_entropy_with_logits``)."""
    logits = tf.matmul(queries, items, transpose_b=True)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_mean(losses)
