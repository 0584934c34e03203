"""The SmeLU layer."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfsmooth import activations
from tfsmooth._keras import keras, register_serializable
from tfsmooth._validation import FLOAT32_MAX, check_bool, check_float
from tfsmooth.layers import _utils


@register_serializable
class SmeLU(keras.layers.Layer):
    """Smooth ReLU as a layer, with an optionally learnable (and per-channel) width.

    .. math::

        \\mathrm{SmeLU}_\\beta(x) = 0 \\;(x \\le -\\beta), \\quad
        \\frac{(x + \\beta)^2}{4\\beta} \\;(|x| \\le \\beta), \\quad
        x \\;(x \\ge \\beta)

    A thin shell over :func:`tfsmooth.activations.smelu`. With ``learnable=True`` the half-width
    ``beta`` is a weight (one scalar, or one per channel of the last axis with ``per_channel=True``)
    trained with the model; it is kept ``>= min_beta`` both by a constraint applied after every
    optimizer step and by a clamp in the forward pass, so a learned width never reaches 0; the
    forward pass also caps it at the largest float32, 3.4e38 (an infinite width would make every
    output infinite). A NaN width (after a NaN gradient step) is not hidden: the outputs are NaN.

    Args:
        beta: float. Half-width of the transition region (the initial value when learnable), ``> 0``.
        learnable: bool. Whether ``beta`` is a trainable weight.
        per_channel: bool. One ``beta`` per channel (last axis) instead of one shared value. Needs
            ``learnable=True``.
        min_beta: float. Lower bound of a learned ``beta``, ``0 < min_beta <= beta``.
        **kwargs: base ``Layer`` arguments (``name``, ``dtype``, ...).

    Raises:
        TypeError: for a ``beta``/``min_beta`` that is not a number, or flags that are not bools.
        ValueError: for a ``beta``/``min_beta`` that is not ``> 0`` and representable in float32,
            ``min_beta > beta``, ``per_channel`` without ``learnable``, or an unknown channel
            dimension.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.layers import SmeLU
    >>> model = tf.keras.Sequential([
    ...     tf.keras.Input((8,)),
    ...     tf.keras.layers.Dense(16),
    ...     SmeLU(beta=1.0, learnable=True, per_channel=True),
    ...     tf.keras.layers.Dense(1),
    ... ])

    References:
        - [Shamir, Lin, Coviello (2020)](https://arxiv.org/abs/2010.09931)
        - [Lin, Shamir (2022)](https://arxiv.org/abs/2202.06499)
    """

    def __init__(
        self,
        beta: float = 1.0,
        learnable: bool = False,
        per_channel: bool = False,
        min_beta: float = 1e-3,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.beta = check_float("beta", beta, 0.0, min_inclusive=False, float32=True)
        self.learnable = check_bool("learnable", learnable)
        self.per_channel = check_bool("per_channel", per_channel)
        self.min_beta = check_float("min_beta", min_beta, 0.0, min_inclusive=False, float32=True)
        if self.min_beta > self.beta:
            raise ValueError(
                f"`min_beta` must be <= `beta`. Received: min_beta={min_beta!r}, beta={beta!r}"
            )
        if self.per_channel and not self.learnable:
            raise ValueError(
                "`per_channel=True` needs `learnable=True` (a fixed width is the same for every "
                "channel). Received: per_channel=True, learnable=False"
            )
        self.supports_masking = True
        self.beta_variable = None

    def build(self, input_shape):
        if self.learnable:
            self.beta_variable = self.add_weight(
                name="beta",
                shape=_utils.parameter_shape(input_shape, self.per_channel, "SmeLU"),
                initializer=keras.initializers.Constant(self.beta),
                constraint=_utils.MinValue(self.min_beta),
                trainable=True,
            )
        super().build(input_shape)

    def call(self, inputs):
        if self.beta_variable is None:
            return activations.smelu(inputs, self.beta)
        beta = tf.convert_to_tensor(self.beta_variable)
        # The clamp keeps the width where smelu is exact even if a step pushed it past float32's
        # range (an infinite width would give infinite outputs); a NaN width stays NaN, visibly.
        beta = tf.clip_by_value(beta, self.min_beta, FLOAT32_MAX)
        return activations.smelu(inputs, beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            beta=self.beta,
            learnable=self.learnable,
            per_channel=self.per_channel,
            min_beta=self.min_beta,
        )
        return config
