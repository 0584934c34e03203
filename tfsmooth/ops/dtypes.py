"""The dtype tfsmooth computes in: half precision is widened to float32, nothing else changes."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

__all__ = ["compute_dtype"]

_HALF_TYPES = (tf.float16, tf.bfloat16)


def compute_dtype(dtype: Any) -> tf.DType:
    """The dtype a kernel computes in for inputs of ``dtype``: float32 for half precision.

    ``float16`` and ``bfloat16`` have too few mantissa bits (10 and 7) for sums over a catalog or
    the quadratic piece of SmeLU, so the activations, the catalog losses and the Clippy rule compute
    in float32 and cast the result back; every other dtype is computed in itself.

    Args:
        dtype: a ``tf.DType`` or anything ``tf.as_dtype`` accepts (``"float16"``, ``np.float32``).

    Returns:
        ``tf.float32`` for ``float16``/``bfloat16``, else ``dtype`` as a ``tf.DType``.

    Raises:
        TypeError: when ``dtype`` is not a dtype.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.ops import compute_dtype
    >>> compute_dtype(tf.bfloat16).name, compute_dtype("float64").name
    ('float32', 'float64')
    """
    if isinstance(dtype, tf.DType):
        result = dtype
    else:
        try:
            result = tf.as_dtype(dtype)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"`dtype` must be a TensorFlow dtype. Received: dtype={dtype!r}"
            ) from error
    return tf.float32 if result in _HALF_TYPES else result
