"""TensorFlow op determinism as a context manager that restores the previous state.

References:
    - [TensorFlow: tf.config.experimental.enable_op_determinism](
      https://www.tensorflow.org/api_docs/python/tf/config/experimental/enable_op_determinism)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tensorflow as tf

from tfsmooth._validation import check_bool

__all__ = ["op_determinism"]


def _determinism_switches():
    """(is_enabled, disable) from TensorFlow; the public API only has ``enable_op_determinism``."""
    try:
        from tensorflow.python.framework import config as tf_config

        return tf_config.is_op_determinism_enabled, tf_config.disable_op_determinism
    except (ImportError, AttributeError):  # pragma: no cover -- other TensorFlow versions
        return (lambda: False), None


def op_determinism(enabled: bool = True) -> contextlib.AbstractContextManager[None]:
    """Turns TensorFlow op determinism on inside the block and restores the previous state after.

    With it, the same seeds give bit-identical results (TensorFlow picks deterministic kernels and
    raises for ops that have none). Where TensorFlow cannot turn it off again, it stays on. Inside
    the block, TensorFlow requires a seed for random ops (``tf.random.set_seed`` or
    ``keras.utils.set_random_seed``): an unseeded one raises ``RuntimeError``.

    Args:
        enabled: turn determinism on; ``False`` leaves TensorFlow's state as it is (a no-op block,
            for callers with a ``deterministic`` switch such as :func:`train_replicas`).

    Returns:
        A context manager (use it in a ``with`` statement); it yields nothing.

    Raises:
        TypeError: ``enabled`` is not ``True`` or ``False`` (checked at the call, before the
            block).

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.reproducibility import op_determinism
    >>> with op_determinism():
    ...     tf.random.set_seed(7)
    ...     first = tf.random.uniform([3])
    ...     tf.random.set_seed(7)
    ...     second = tf.random.uniform([3])
    >>> bool(tf.reduce_all(first == second))
    True
    """
    return _op_determinism(check_bool("enabled", enabled))


@contextlib.contextmanager
def _op_determinism(enabled: bool) -> Iterator[None]:
    is_enabled, disable = _determinism_switches()
    before = is_enabled()
    if enabled and not before:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not before and disable is not None:
            disable()
