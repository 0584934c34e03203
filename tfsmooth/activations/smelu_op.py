"""smelu: Smooth ReLU, its XLA kernels and custom gradient."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfsmooth import _keras
from tfsmooth._validation import FLOAT32_MAX
from tfsmooth.activations.parameters import (
    _SMALL,
    Parameter,
    _as,
    _check_broadcast,
    _check_input,
    _check_parameter,
    _divide,
    _is_number,
    _safe_sqrt,
    _sum_to_shape,
    _symbolic_layer,
)
from tfsmooth.ops.dtypes import compute_dtype

__all__ = ["smelu"]


@tf.function(jit_compile=True)
def _smelu_forward(x, beta):
    dtype = compute_dtype(x.dtype)
    xf, b = tf.cast(x, dtype), _as(beta, dtype)
    # h = (clip(x) + b) / 2 is 0 left of -b (exactly), b right of +b, and (x + b)^2 / 4b = h (h / b):
    # 0 left of -b, the quadratic inside and b right of +b; relu(x - b) adds the rest of the
    # identity on the right. Every intermediate stays in [0, b] (never (x + b)^2, which overflows
    # for b > 1.8e19, nor 1 / b, a subnormal flushed to 0 for b > 8.5e37), so every width
    # representable in float32 is exact, and x = -inf, +inf give 0, inf. No branch is ever evaluated
    # on an out-of-range value.
    clipped = tf.minimum(tf.maximum(xf, -b), b)
    if _is_number(b) and b <= FLOAT32_MAX / 2:
        half = (clipped + b) * 0.5
    else:
        half = clipped * 0.5 + b * 0.5
    y = half * _divide(half, b) + tf.nn.relu(xf - b)
    return tf.cast(y, x.dtype)


def _smelu_slope_from_output(y: tf.Tensor, b: Any) -> tf.Tensor:
    # Inside the transition region y = (x + b)^2 / 4b, so the slope (x + b) / 2b = sqrt(y / b).
    inside = y < b
    slope = _safe_sqrt(_divide(tf.where(inside, y, tf.zeros_like(y)), b))
    return tf.where(inside, slope, tf.ones_like(slope))


@tf.function(jit_compile=True)
def _smelu_backward(dy, y, beta):
    dtype = compute_dtype(y.dtype)
    slope = _smelu_slope_from_output(tf.cast(y, dtype), _as(beta, dtype))
    return tf.cast(tf.cast(dy, dtype) * slope, dy.dtype)


@tf.function(jit_compile=True)
def _smelu_backward_with_beta(dy, y, beta):
    dtype = compute_dtype(y.dtype)
    dyf = tf.cast(dy, dtype)
    slope = _smelu_slope_from_output(tf.cast(y, dtype), tf.cast(beta, dtype))
    # d/dbeta (x + b)^2 / 4b = slope - slope^2 inside the region, 0 outside (where slope is 0 or 1).
    dbeta = _sum_to_shape(dyf * (slope - slope * slope), beta)
    return tf.cast(dyf * slope, dy.dtype), dbeta


@tf.function(jit_compile=True)
def _smelu_backward_from_input(dy, x, beta):
    dtype = compute_dtype(x.dtype)
    b = _as(beta, dtype)
    half = (tf.minimum(tf.maximum(tf.cast(x, dtype), -b), b) + b) * 0.5
    return tf.cast(tf.cast(dy, dtype) * _divide(half, b), dy.dtype)


def _smelu_constant(x: tf.Tensor, beta: float) -> tf.Tensor:
    # Below _SMALL, outputs inside the region, y <= beta, are subnormal (flushed to 0) or close to
    # it, so the slope sqrt(y / beta) cannot be read from them: the gradient then keeps the input.
    from_output = beta >= _SMALL

    @tf.custom_gradient
    def op(x):
        y = _smelu_forward(x, beta)
        if from_output:
            return y, lambda dy: _smelu_backward(dy, y, beta)
        return y, lambda dy: _smelu_backward_from_input(dy, x, beta)

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
        beta: half-width of the transition region, ``> 0``. A Python or numpy number, which must be
            representable in float32 (between 1.18e-38 and 3.4e38; every such width is computed
            without overflow); a list or numpy array of such widths (checked element by element),
            or a float tensor or variable, broadcastable against ``x`` without changing its shape
            (e.g. per channel, shape ``[C]``), which then receives a gradient too. A tensor width is not checked at run time (a host round trip): a width ``<= 0`` or
            NaN gives NaN, ``+inf`` gives ``+inf`` (the limit), and below ``2**-64`` its gradient,
            read from the output, loses accuracy; :class:`tfsmooth.layers.SmeLU` keeps a learned
            width within ``[min_beta, 3.4e38]``.

    Returns:
        A tensor of the shape and dtype of ``x``.

    Raises:
        TypeError: if ``x`` is not floating point, or ``beta`` is neither a number nor a float tensor.
        ValueError: if a numeric ``beta`` is not a finite number ``> 0`` representable in float32,
            or a tensor ``beta`` of known shape does not broadcast against ``x``.

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
    beta = _check_parameter("beta", beta, positive=True)
    if _keras.is_keras_tensor(x):
        return _symbolic_layer(x, "SmeLU", beta=beta)
    x = _check_input(x, "smelu")
    _check_broadcast("beta", beta, x)
    if _is_number(beta):
        return _smelu_constant(x, beta)
    return _smelu_variable(x, beta)


# ----------------------------------------------------------------------------------------------------
# Generalized SmeLU.
#
# With r = x + alpha, w = alpha + beta, k = g+ - g-, u = clip(r, 0, w), rho = u / w in [0, 1] and
# R = relu(x - beta) (= relu(r - w)):
#   f(x)       = t + g- min(r, 0) + u (g- (1 - rho / 2) + g+ rho / 2) + g+ R
#                                                  (= t + g- r + k (u^2 / 2w + R))
#   df/dx      = g- + k rho
#   df/dt      = 1
#   df/dg+     = u rho / 2 + R
#   df/dg-     = min(r, 0) + u (1 - rho / 2)           (= r - df/dg+, finite at r = inf)
#   df/dw      = -k rho^2 / 2   (r held fixed);   df/dalpha = df/dx + df/dw;   df/dbeta = df/dw
# and inside the region the slope satisfies s^2 = g-^2 + 2 k (y - t) / w, which gives the slope from
# the output wherever f is monotone (both slopes >= 0). Written with rho (never u^2 or 1 / w), no
# width representable in float32 overflows or underflows; the middle piece's factor is a convex
# combination of the two slopes, so it cannot overflow either.
