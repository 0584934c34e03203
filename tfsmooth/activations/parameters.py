"""What both activations share: parameter checks (``check_width`` is also the layers'), overflow-safe
division, dtype plumbing."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth._validation import FLOAT32_MAX, FLOAT32_TINY, check_float, is_bool, is_number

Parameter = Any  # a Python number, or a float tensor/variable broadcastable against the input.

# ----------------------------------------------------------------------------------------------------
# Validation and small helpers.


def _is_number(value: Any) -> bool:
    return is_number(value)


def _check_input(x: Any, caller: str) -> tf.Tensor:
    try:
        x = tf.convert_to_tensor(x)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{caller}` needs a floating-point tensor `x`. Received: x={x!r}"
        ) from None
    if not x.dtype.is_floating:
        raise TypeError(
            f"`{caller}` needs a floating-point input (float16, bfloat16, float32 or float64). "
            f"Received: x.dtype={x.dtype.name}"
        )
    return x


def _check_parameter(name: str, value: Any, *, positive: bool = False) -> Any:
    """Numbers and host arrays (lists, tuples, numpy arrays) must hold finite values representable
    in float32 (``> 0`` when ``positive``); host arrays become constants. Tensors must be
    floating point; their values are not checked (that would cost a host round trip)."""
    if is_number(value):
        if positive:
            return check_float(name, value, 0.0, min_inclusive=False, float32=True)
        return check_float(name, value, float32=True)
    if value is None or is_bool(value) or isinstance(value, str):
        raise TypeError(f"`{name}` must be a number or a float tensor. Received: {name}={value!r}")
    if isinstance(value, (list, tuple, np.ndarray)):
        array = np.asarray(value)
        dtype = tf.float64 if array.dtype == np.float64 else tf.float32
        if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
            raise TypeError(
                f"`{name}` must be a number or a float tensor. Received: {name}={value!r}"
            )
        array = array.astype(np.float64)
        magnitude = np.abs(array)
        bad = ~np.isfinite(array) | (magnitude > FLOAT32_MAX)
        bad |= (magnitude < FLOAT32_TINY) & (array > 0 if positive else array != 0)
        if positive:
            bad |= array <= 0
        if bad.any():
            condition = "> 0 and " if positive else ""
            raise ValueError(
                f"`{name}` must hold finite numbers {condition}representable in float32 (a "
                f"magnitude between {FLOAT32_TINY:.3g} and {FLOAT32_MAX:.3g}"
                f"{'' if positive else ', or 0'}). Received: {name}={value!r}"
            )
        return tf.constant(array, dtype)
    tensor = tf.convert_to_tensor(value)
    if not tensor.dtype.is_floating:
        raise TypeError(
            f"`{name}` must be a number or a float tensor. Received: {name} of dtype {tensor.dtype.name}"
        )
    return value


def _check_broadcast(name: str, value: Any, x: tf.Tensor) -> None:
    """A tensor parameter must broadcast against ``x`` without changing ``x``'s shape.

    Checked on static shapes only (free); a parameter of unknown shape is left to run time.
    """
    if is_number(value):
        return
    shape = tf.TensorShape(getattr(value, "shape", None))
    if shape.rank is None or x.shape.rank is None:
        return
    try:
        broadcast = tf.broadcast_static_shape(x.shape, shape)
    except ValueError:
        broadcast = None
    if broadcast is None or (
        broadcast.rank != x.shape.rank
        or any(
            b is not None and d is not None and b != d
            for b, d in zip(broadcast.as_list(), x.shape.as_list())
        )
    ):
        raise ValueError(
            f"`{name}` must broadcast against the input without changing its shape (a scalar, or "
            f"one value per channel of the last axis). Received: {name}.shape={tuple(shape)} for "
            f"x.shape={tuple(x.shape)}"
        )


def check_width(alpha: Any, beta: Any) -> Any:
    """Returns the width ``alpha + beta`` of generalized SmeLU's transition region (numbers or
    numpy arrays, checked element by element).

    Raises:
        ValueError: if the width is not > 0 and representable in float32 (between the smallest
            normal float32, 1.18e-38, and the largest, 3.4e38), the range where it is computed
            without overflow.
    """
    width = alpha + beta
    if not np.all((width >= FLOAT32_TINY) & (width <= FLOAT32_MAX)):
        shown = [f"{v:g}" if _is_number(v) else repr(np.asarray(v).tolist()) for v in (alpha, beta)]
        raise ValueError(
            f"`alpha + beta` (the width of the transition region) must be > 0 and representable "
            f"in float32 (between {FLOAT32_TINY:.3g} and {FLOAT32_MAX:.3g}). "
            f"Received: alpha={shown[0]}, beta={shown[1]}"
        )
    return width


def _as(value: Any, dtype: tf.DType) -> Any:
    """Python numbers stay Python numbers (so XLA folds them); tensors are cast."""
    return value if _is_number(value) else tf.cast(value, dtype)


def _sum_to_shape(grad: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Reduces a broadcast gradient to the shape (and dtype) of the parameter it belongs to."""
    _, axes = tf.raw_ops.BroadcastGradientArgs(s0=tf.shape(grad), s1=tf.shape(like))
    return tf.cast(tf.reshape(tf.reduce_sum(grad, axis=axes), tf.shape(like)), like.dtype)


def _scaled(scale: Any, value: tf.Tensor) -> Any:
    """``scale * value`` that is exactly 0 when the scale is 0, even where ``value`` is infinite."""
    if _is_number(scale):
        return 0.0 if scale == 0 else scale * value
    return tf.where(tf.equal(scale, 0), tf.zeros_like(value), scale * value)


def _safe_sqrt(value: tf.Tensor) -> tf.Tensor:
    """sqrt with a finite gradient at 0 (taken as 0), so second derivatives never see inf * 0."""
    positive = value > 0
    return tf.where(
        positive, tf.sqrt(tf.where(positive, value, tf.ones_like(value))), tf.zeros_like(value)
    )


#: Widths above this are scaled down by it before dividing (see ``_divide``).
_LARGE = 2.0**64
#: Widths below this get their gradient from the input, not the output (see ``_smelu_constant``).
_SMALL = 2.0**-64


def _divide(value: tf.Tensor, width: Any) -> tf.Tensor:
    """``value / width`` for ``|value| <= width``, exact for every float32 width.

    XLA turns a division by a constant into a multiplication by its reciprocal, and the reciprocal
    of a width above 8.5e37 is a subnormal that the CPU flushes to 0. A constant width above
    ``2**64`` is therefore divided in a domain scaled down by ``2**64`` (exact: a power of two), and
    the scaled value is clamped to ``[-width, width]`` (a no-op by the precondition) so that XLA cannot
    fold the two scalings back into one subnormal reciprocal.
    """
    if _is_number(width) and width > _LARGE:
        scaled_width = width / _LARGE
        scaled = tf.minimum(tf.maximum(value * (1.0 / _LARGE), -scaled_width), scaled_width)
        return scaled / scaled_width
    return value / width


def _symbolic_layer(x: Any, layer_name: str, **parameters: Any):
    """Lets the functions be applied to symbolic Keras tensors by wrapping them in their layer."""
    from tfsmooth import layers

    if not all(_is_number(p) for p in parameters.values()):
        raise TypeError(
            f"On a symbolic Keras tensor, give the parameters as numbers or use "
            f"`tfsmooth.layers.{layer_name}(..., learnable=True)`. Received: {parameters}"
        )
    return getattr(layers, layer_name)(**parameters)(x)


# ----------------------------------------------------------------------------------------------------
# SmeLU.
