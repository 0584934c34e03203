"""generalized_smelu: SmeLU with any slopes and offset, its XLA kernels and custom gradient."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth import _keras
from tfsmooth.activations.parameters import (
    _LARGE,
    _SMALL,
    Parameter,
    _as,
    _check_broadcast,
    _check_input,
    _check_parameter,
    _divide,
    _is_number,
    _safe_sqrt,
    _scaled,
    _sum_to_shape,
    _symbolic_layer,
    check_width,
)
from tfsmooth.ops.dtypes import compute_dtype

__all__ = ["generalized_smelu"]


_GENERALIZED_NAMES = ("alpha", "beta", "negative_slope", "positive_slope", "offset")

#: Above this slope, s^2 overflows float32 (and for widths outside ``[_SMALL, _LARGE]`` the output
#: may be subnormal or the division by the width underflow): the gradient is then computed from the
#: input.
_MAX_SLOPE_FROM_OUTPUT = 1e18


def _generalized_parts(x, params):
    dtype = compute_dtype(x.dtype)
    alpha, beta, slope_left, slope_right, offset = (_as(p, dtype) for p in params)
    xf = tf.cast(x, dtype)
    r = xf + alpha
    width = alpha + beta
    u = tf.minimum(tf.maximum(r, 0.0), width)
    ratio = _divide(u, width)
    right = tf.nn.relu(xf - beta)
    return dtype, r, u, ratio, right, (alpha, beta, slope_left, slope_right, offset)


@tf.function(jit_compile=True)
def _generalized_forward(x, params):
    _, r, u, ratio, right, (_, _, slope_left, slope_right, offset) = _generalized_parts(x, params)
    # The three pieces are added separately so that r = +-inf never meets inf - inf.
    left = _scaled(slope_left, tf.minimum(r, 0.0))
    middle = u * (slope_left * (1.0 - 0.5 * ratio) + slope_right * (0.5 * ratio))
    return tf.cast(offset + left + middle + _scaled(slope_right, right), x.dtype)


@tf.function(jit_compile=True)
def _generalized_backward_from_output(dy, y, params):
    """Slope from the output; valid only for fixed parameters with both slopes >= 0."""
    dtype = compute_dtype(y.dtype)
    alpha, beta, slope_left, slope_right, offset = params
    k = slope_right - slope_left
    lo, hi = sorted((slope_left**2, slope_right**2))
    squared = slope_left**2 + (tf.cast(y, dtype) - offset) / (alpha + beta) * (2.0 * k)
    slope = _safe_sqrt(tf.clip_by_value(squared, lo, hi))  # clip: the lines outside the region
    return tf.cast(tf.cast(dy, dtype) * slope, dy.dtype)


@tf.function(jit_compile=True)
def _generalized_backward_from_input(dy, x, params, wanted):
    """Gradients for x and for the parameters flagged in ``wanted`` (those given as tensors)."""
    dtype, r, u, ratio, right, (_, _, slope_left, slope_right, _) = _generalized_parts(x, params)
    dyf = tf.cast(dy, dtype)
    # g- + k rho and -k rho^2 / 2, written without k = g+ - g-, which may overflow.
    dfdx = slope_left * (1.0 - ratio) + slope_right * ratio
    grads = [tf.cast(dyf * dfdx, dy.dtype)]
    if any(wanted):
        half_square = 0.5 * ratio * ratio
        dfdw = slope_left * half_square - slope_right * half_square
        partials = (
            dfdx + dfdw,  # alpha
            dfdw,  # beta
            tf.minimum(r, 0.0) + u * (1.0 - 0.5 * ratio),  # negative_slope
            0.5 * u * ratio + right,  # positive_slope
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

    from_output = (
        not any(wanted)
        and 0 <= min(params[2:4]) <= max(params[2:4]) <= _MAX_SLOPE_FROM_OUTPUT
        and _SMALL <= params[0] + params[1] <= _LARGE
    )

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

        Each parameter is a Python or numpy number representable in float32, a list or numpy
        array of them (checked element by element), or a float tensor or variable broadcastable
        against ``x`` (without changing its shape) that then receives a gradient (parameters may
        be learned, as the papers suggest). Tensor parameters are not checked at run time.

    Returns:
        A tensor of the shape and dtype of ``x``.

    Raises:
        TypeError: if ``x`` is not floating point or a parameter is neither number nor float tensor.
        ValueError: if a numeric parameter is not finite or not representable in float32, numeric
            ``alpha + beta`` is not between 1.18e-38 and 3.4e38 (the widths computed without
            overflow), or a tensor parameter of known shape does not broadcast against ``x``.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.activations import generalized_smelu
    >>> generalized_smelu(tf.constant([-3.0, 0.0, 3.0]), negative_slope=0.1).numpy()
    array([-0.2  ,  0.325,  3.1  ], dtype=float32)

    References:
        - [Lin, Shamir (2022), Section "Generalized SmeLU"](https://arxiv.org/abs/2202.06499)
        - [Shamir, Lin, Coviello (2020)](https://arxiv.org/abs/2010.09931)
    """
    values = (alpha, beta, negative_slope, positive_slope, offset)
    params = tuple(_check_parameter(n, v) for n, v in zip(_GENERALIZED_NAMES, values))
    if _is_number(params[0]) and _is_number(params[1]):
        check_width(params[0], params[1])
    elif all(_is_number(v) or isinstance(v, (list, tuple, np.ndarray)) for v in values[:2]):
        check_width(*(np.asarray(v, np.float64) for v in values[:2]))  # host values: free
    if _keras.is_keras_tensor(x):
        return _symbolic_layer(x, "GeneralizedSmeLU", **dict(zip(_GENERALIZED_NAMES, params)))
    x = _check_input(x, "generalized_smelu")
    for name, value in zip(_GENERALIZED_NAMES, params):
        _check_broadcast(name, value, x)
    return _generalized_op(x, params)
