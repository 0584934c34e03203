"""Smooth ReLU activations: SmeLU and generalized SmeLU, with fused XLA kernels.

Both are piecewise functions -- a line on each side of a transition region joined by the quadratic
that matches value and slope at both knots -- so they are as cheap as ReLU but have a continuous
gradient. Smooth activations make two identically trained models agree far more than ReLU does
(Shamir, Lin, Coviello 2020; Lin, Shamir 2022).

Implementation notes:

- Forward and backward are each one ``tf.function(jit_compile=True)`` kernel: XLA fuses all the
  element-wise math into one pass over memory on CPU and GPU, and the kernels are inlined into any
  surrounding XLA-compiled step.
- Half-precision inputs (``float16``, ``bfloat16``) are computed in ``float32`` inside the kernel and
  the result is cast back, so accuracy is that of ``float32`` at the memory cost of the input type.
- The custom gradient of ``smelu`` keeps only the activation's *output*: the slope of SmeLU is a
  function of its value (``sqrt(y / beta)`` inside the transition region). The output is the tensor
  the next layer keeps for its own gradient anyway, so a SmeLU network holds exactly the activations
  a ReLU network holds. ``generalized_smelu`` does the same whenever its parameters are fixed Python
  numbers with non-negative slopes; otherwise (learnable parameters, or a negative slope that makes it
  non-monotone) it keeps only its input.
- Parameters given as Python numbers are validated and compiled in as constants. Parameters given as
  tensors or variables (e.g. learnable widths) get gradients too, reduced to their own shape, so a
  per-channel ``beta`` of shape ``[C]`` broadcasts against inputs ``[..., C]``. Tensor parameters are
  not checked at run time (that would cost a host round trip); the layers keep them valid.

References:
    - [Shamir, Lin, Coviello. Smooth activations and reproducibility in deep networks (2020)](
      https://arxiv.org/abs/2010.09931)
    - [Lin, Shamir. Real world large scale recommendation systems reproducibility and smooth
      activations (2022)](https://arxiv.org/abs/2202.06499)
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import tensorflow as tf

from tfsmooth import _keras

__all__ = ["generalized_smelu", "smelu"]

Parameter = Any  # a Python number, or a float tensor/variable broadcastable against the input.

_HALF_TYPES = (tf.float16, tf.bfloat16)


# ----------------------------------------------------------------------------------------------------
# Validation and small helpers.


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_number(name: str, value: Any) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
    return float(value)


def _check_input(x: Any, caller: str) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(
            f"`{caller}` needs a floating-point input (float16, bfloat16, float32 or float64). "
            f"Received: x.dtype={x.dtype.name}"
        )
    return x


def _check_parameter(name: str, value: Any) -> Any:
    """Python numbers are checked to be finite; tensors and variables must be floating point."""
    if _is_number(value):
        return _check_number(name, value)
    if isinstance(value, (bool, str, type(None))):
        raise TypeError(f"`{name}` must be a number or a float tensor. Received: {name}={value!r}")
    tensor = tf.convert_to_tensor(value)
    if not tensor.dtype.is_floating:
        raise TypeError(
            f"`{name}` must be a number or a float tensor. Received: {name} of dtype {tensor.dtype.name}"
        )
    return value


def _compute_dtype(dtype: tf.DType) -> tf.DType:
    return tf.float32 if dtype in _HALF_TYPES else dtype


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


@tf.function(jit_compile=True)
def _smelu_forward(x, beta):
    dtype = _compute_dtype(x.dtype)
    xf, b = tf.cast(x, dtype), _as(beta, dtype)
    # (clip(x) + b)^2 / 4b is 0 left of -b, the quadratic inside and b right of +b; relu(x - b) adds
    # the rest of the identity on the right. No branch is ever evaluated on an out-of-range value.
    clipped = tf.minimum(tf.maximum(xf, -b), b) + b
    y = clipped * clipped * (0.25 / b) + tf.nn.relu(xf - b)
    return tf.cast(y, x.dtype)


def _smelu_slope_from_output(y: tf.Tensor, b: Any) -> tf.Tensor:
    # Inside the transition region y = (x + b)^2 / 4b, so the slope (x + b) / 2b = sqrt(y / b).
    inside = y < b
    slope = _safe_sqrt(tf.where(inside, y, tf.zeros_like(y)) / b)
    return tf.where(inside, slope, tf.ones_like(slope))


@tf.function(jit_compile=True)
def _smelu_backward(dy, y, beta):
    dtype = _compute_dtype(y.dtype)
    slope = _smelu_slope_from_output(tf.cast(y, dtype), _as(beta, dtype))
    return tf.cast(tf.cast(dy, dtype) * slope, dy.dtype)


@tf.function(jit_compile=True)
def _smelu_backward_with_beta(dy, y, beta):
    dtype = _compute_dtype(y.dtype)
    dyf = tf.cast(dy, dtype)
    slope = _smelu_slope_from_output(tf.cast(y, dtype), tf.cast(beta, dtype))
    # d/dbeta (x + b)^2 / 4b = slope - slope^2 inside the region, 0 outside (where slope is 0 or 1).
    dbeta = _sum_to_shape(dyf * (slope - slope * slope), beta)
    return tf.cast(dyf * slope, dy.dtype), dbeta


def _smelu_constant(x: tf.Tensor, beta: float) -> tf.Tensor:
    @tf.custom_gradient
    def op(x):
        y = _smelu_forward(x, beta)
        return y, lambda dy: _smelu_backward(dy, y, beta)

    return op(x)


def _smelu_variable(x: tf.Tensor, beta: Any) -> tf.Tensor:
    @tf.custom_gradient
    def op(x, beta):
        y = _smelu_forward(x, beta)
        return y, lambda dy: _smelu_backward_with_beta(dy, y, beta)

    return op(x, tf.convert_to_tensor(beta))


@_keras.register_serializable
def smelu(x: Any, beta: Parameter = 1.0) -> tf.Tensor:
    """Smooth ReLU (SmeLU): ReLU with its kink replaced by a quadratic of width ``2 * beta``.

    .. math::

        \\mathrm{SmeLU}_\\beta(x) = \\begin{cases}
            0 & x \\le -\\beta \\\\
            \\frac{(x + \\beta)^2}{4 \\beta} & |x| \\le \\beta \\\\
            x & x \\ge \\beta
        \\end{cases}
        \\qquad
        \\mathrm{SmeLU}_\\beta'(x) = \\mathrm{clip}\\left(\\frac{x + \\beta}{2 \\beta}, 0, 1\\right)

    SmeLU is ReLU convolved with a box of width ``2 * beta``: monotone, exactly 0 on the left and the
    identity on the right, with a continuous gradient. ``beta -> 0`` gives ReLU; a wider ``beta`` makes
    the network smoother (more reproducible) and, eventually, closer to linear. Its gradient is computed
    from its output (``sqrt(y / beta)`` inside the region), so it saves no tensor beyond the one the
    next layer keeps: training memory equals ReLU's.

    Args:
        x: float tensor of any shape (``float16``, ``bfloat16``, ``float32`` or ``float64``).
        beta: half-width of the transition region, ``> 0``. A Python number, or a float tensor or
            variable broadcastable against ``x`` (e.g. per channel, shape ``[C]``), which then
            receives a gradient too.

    Returns:
        A tensor of the shape and dtype of ``x``.

    Raises:
        TypeError: if ``x`` is not floating point, or ``beta`` is neither a number nor a float tensor.
        ValueError: if a numeric ``beta`` is not a finite number ``> 0``.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.activations import smelu
    >>> smelu(tf.constant([-2.0, -0.5, 0.0, 0.5, 2.0]), beta=1.0).numpy()
    array([0.    , 0.0625, 0.25  , 0.5625, 2.    ], dtype=float32)
    >>> dense = tf.keras.layers.Dense(16, activation=smelu)  # as any Keras activation

    References:
        - [Shamir, Lin, Coviello (2020)](https://arxiv.org/abs/2010.09931)
        - [Lin, Shamir (2022)](https://arxiv.org/abs/2202.06499)
    """
    beta = _check_parameter("beta", beta)
    if _is_number(beta) and beta <= 0:
        raise ValueError(f"`beta` must be > 0. Received: beta={beta:g}")
    if _keras.is_keras_tensor(x):
        return _symbolic_layer(x, "SmeLU", beta=beta)
    x = _check_input(x, "smelu")
    if _is_number(beta):
        return _smelu_constant(x, beta)
    return _smelu_variable(x, beta)


# ----------------------------------------------------------------------------------------------------
# Generalized SmeLU.
#
# With r = x + alpha, w = alpha + beta, k = g+ - g-, u = clip(r, 0, w) and R = relu(r - w):
#   f(x)       = t + g- min(r, 0) + g- u + k u^2 / 2w + g+ R   (= t + g- r + k (u^2 / 2w + R))
#   df/dx      = g- + k u / w
#   df/dt      = 1
#   df/dg+     = u^2 / 2w + R
#   df/dg-     = min(r, 0) + u - u^2 / 2w           (= r - df/dg+, written to stay finite at r = inf)
#   df/dw      = -k (u / w)^2 / 2   (r held fixed);   df/dalpha = df/dx + df/dw;   df/dbeta = df/dw
# and inside the region the slope satisfies s^2 = g-^2 + 2 (k / w) (y - t), which gives the slope from
# the output wherever f is monotone (both slopes >= 0).

_GENERALIZED_NAMES = ("alpha", "beta", "negative_slope", "positive_slope", "offset")


def _generalized_parts(x, params):
    dtype = _compute_dtype(x.dtype)
    alpha, beta, slope_left, slope_right, offset = (_as(p, dtype) for p in params)
    r = tf.cast(x, dtype) + alpha
    width = alpha + beta
    u = tf.minimum(tf.maximum(r, 0.0), width)
    quadratic = u * u / (2.0 * width) + tf.nn.relu(r - width)
    return dtype, r, width, u, quadratic, (alpha, beta, slope_left, slope_right, offset)


@tf.function(jit_compile=True)
def _generalized_forward(x, params):
    _, r, width, u, _, (_, _, slope_left, slope_right, offset) = _generalized_parts(x, params)
    k = slope_right - slope_left
    # The three pieces are added separately so that r = +-inf never meets inf - inf.
    left = _scaled(slope_left, tf.minimum(r, 0.0))
    middle = slope_left * u + k * u * u / (2.0 * width)
    right = _scaled(slope_right, tf.nn.relu(r - width))
    return tf.cast(offset + left + middle + right, x.dtype)


@tf.function(jit_compile=True)
def _generalized_backward_from_output(dy, y, params):
    """Slope from the output; valid only for fixed parameters with both slopes >= 0."""
    dtype = _compute_dtype(y.dtype)
    alpha, beta, slope_left, slope_right, offset = params
    k = slope_right - slope_left
    lo, hi = sorted((slope_left**2, slope_right**2))
    squared = slope_left**2 + (2.0 * k / (alpha + beta)) * (tf.cast(y, dtype) - offset)
    slope = _safe_sqrt(tf.clip_by_value(squared, lo, hi))  # clip: the lines outside the region
    return tf.cast(tf.cast(dy, dtype) * slope, dy.dtype)


@tf.function(jit_compile=True)
def _generalized_backward_from_input(dy, x, params, wanted):
    """Gradients for x and for the parameters flagged in ``wanted`` (those given as tensors)."""
    dtype, r, width, u, quadratic, (_, _, slope_left, slope_right, _) = _generalized_parts(
        x, params
    )
    dyf = tf.cast(dy, dtype)
    k = slope_right - slope_left
    ratio = u / width
    dfdx = slope_left + k * ratio
    grads = [tf.cast(dyf * dfdx, dy.dtype)]
    if any(wanted):
        dfdw = -0.5 * k * ratio * ratio
        partials = (
            dfdx + dfdw,  # alpha
            dfdw,  # beta
            tf.minimum(r, 0.0) + u - u * u / (2.0 * width),  # negative_slope
            quadratic,  # positive_slope
            tf.ones_like(r),  # offset
        )
        for flag, partial, param in zip(wanted, partials, params):
            if flag:
                grads.append(_sum_to_shape(dyf * partial, param))
    return grads


def _generalized_op(x: tf.Tensor, params: tuple) -> tf.Tensor:
    wanted = tuple(not _is_number(p) for p in params)
    tensors = [tf.convert_to_tensor(p) for p, flag in zip(params, wanted) if flag]

    def merge(values):
        values = iter(values)
        return tuple(next(values) if flag else p for p, flag in zip(params, wanted))

    from_output = not any(wanted) and params[2] >= 0 and params[3] >= 0

    @tf.custom_gradient
    def op(x, *tensor_params):
        full = merge(tensor_params)
        y = _generalized_forward(x, full)

        def grad(dy):
            if from_output:
                return _generalized_backward_from_output(dy, y, full)
            return _generalized_backward_from_input(dy, x, full, wanted)

        return y, grad

    return op(x, *tensors)


@_keras.register_serializable
def generalized_smelu(
    x: Any,
    alpha: Parameter = 1.0,
    beta: Parameter = 1.0,
    negative_slope: Parameter = 0.0,
    positive_slope: Parameter = 1.0,
    offset: Parameter = 0.0,
) -> tf.Tensor:
    """Generalized SmeLU: two lines of any slopes joined by a quadratic over ``[-alpha, beta]``.

    With slopes :math:`g_-` (``negative_slope``), :math:`g_+` (``positive_slope``) and offset
    :math:`t`:

    .. math::

        f(x) = \\begin{cases}
            t + g_-(x + \\alpha) & x \\le -\\alpha \\\\
            t + g_-(x + \\alpha) + \\frac{(g_+ - g_-)(x + \\alpha)^2}{2(\\alpha + \\beta)}
                & -\\alpha \\le x \\le \\beta \\\\
            t + \\frac{(\\alpha + \\beta)(g_- + g_+)}{2} + g_+(x - \\beta) & x \\ge \\beta
        \\end{cases}

    Value and slope are continuous at both knots; the slope rises linearly from :math:`g_-` to
    :math:`g_+` across the region. ``alpha = beta``, slopes ``0`` and ``1`` and offset ``0`` give
    :func:`smelu` exactly; a small positive ``negative_slope`` gives a smooth leaky ReLU. The region
    need not be centred: only ``alpha + beta > 0`` is required.

    Args:
        x: float tensor of any shape.
        alpha: the region starts at ``-alpha``.
        beta: the region ends at ``beta``; ``alpha + beta > 0``.
        negative_slope: slope left of the region.
        positive_slope: slope right of the region.
        offset: value at ``x = -alpha``.

        Each parameter is a Python number, or a float tensor or variable broadcastable against ``x``
        that then receives a gradient (parameters may be learned, as the papers suggest).

    Returns:
        A tensor of the shape and dtype of ``x``.

    Raises:
        TypeError: if ``x`` is not floating point or a parameter is neither number nor float tensor.
        ValueError: if a numeric parameter is not finite, or numeric ``alpha + beta <= 0``.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.activations import generalized_smelu
    >>> generalized_smelu(tf.constant([-3.0, 0.0, 3.0]), negative_slope=0.1).numpy()
    array([-0.2  ,  0.325,  3.1  ], dtype=float32)

    References:
        - [Lin, Shamir (2022), Section "Generalized SmeLU"](https://arxiv.org/abs/2202.06499)
        - [Shamir, Lin, Coviello (2020)](https://arxiv.org/abs/2010.09931)
    """
    params = tuple(
        _check_parameter(name, value)
        for name, value in zip(
            _GENERALIZED_NAMES, (alpha, beta, negative_slope, positive_slope, offset)
        )
    )
    if _is_number(params[0]) and _is_number(params[1]) and params[0] + params[1] <= 0:
        raise ValueError(
            f"`alpha + beta` (the width of the transition region) must be > 0. "
            f"Received: alpha={params[0]:g}, beta={params[1]:g}"
        )
    if _keras.is_keras_tensor(x):
        return _symbolic_layer(x, "GeneralizedSmeLU", **dict(zip(_GENERALIZED_NAMES, params)))
    return _generalized_op(_check_input(x, "generalized_smelu"), params)
