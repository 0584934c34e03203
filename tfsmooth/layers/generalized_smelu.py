"""The GeneralizedSmeLU layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from tfsmooth import activations
from tfsmooth._keras import keras, register_serializable
from tfsmooth._validation import check_bool, check_float, is_bool
from tfsmooth.activations.parameters import check_width
from tfsmooth.layers import _utils

PARAMETERS = ("alpha", "beta", "negative_slope", "positive_slope", "offset")


def _learnable_names(learnable: bool | Sequence[str]) -> tuple[str, ...]:
    if learnable is None:
        return ()
    if is_bool(learnable):
        return PARAMETERS if learnable else ()
    if isinstance(learnable, str) or not isinstance(learnable, Sequence):
        raise TypeError(
            "`learnable` must be a bool or a list of parameter names from "
            f"{list(PARAMETERS)}. Received: learnable={learnable!r}"
        )
    unknown = [name for name in learnable if name not in PARAMETERS]
    if unknown:
        raise ValueError(
            f"`learnable` names unknown parameters {unknown}; choose from {list(PARAMETERS)}. "
            f"Received: learnable={list(learnable)!r}"
        )
    return tuple(name for name in PARAMETERS if name in learnable)


@register_serializable
class GeneralizedSmeLU(keras.layers.Layer):
    """Generalized SmeLU as a layer; any of its five parameters can be learned, per channel or not.

    .. math::

        f(x) = t + g_-(x + \\alpha) + (g_+ - g_-)\\left(
            \\frac{u^2}{2(\\alpha + \\beta)} + \\max(x - \\beta, 0)\\right),
        \\quad u = \\mathrm{clip}(x + \\alpha, 0, \\alpha + \\beta)

    that is, a line of slope :math:`g_-` left of :math:`-\\alpha`, a line of slope :math:`g_+` right
    of :math:`\\beta`, and the quadratic joining them with continuous value and slope. A thin shell
    over :func:`tfsmooth.activations.generalized_smelu`. Learned region widths stay positive: the
    forward pass uses :math:`\\beta_{\\mathrm{eff}} = \\max(\\beta, w_{\\min} - \\alpha)`, so
    :math:`\\alpha + \\beta_{\\mathrm{eff}} \\ge w_{\\min}` always.

    Args:
        alpha: float. The region starts at ``-alpha`` (initial value when learnable).
        beta: float. The region ends at ``beta``; ``alpha + beta > 0``.
        negative_slope: float. Slope left of the region.
        positive_slope: float. Slope right of the region.
        offset: float. Value at ``x = -alpha``.
        learnable: bool, or a list of the parameter names to learn (e.g. ``["alpha", "beta"]``).
        per_channel: bool. Learned parameters get one value per channel (last axis).
        min_width: float. Lower bound of the learned width ``alpha + beta``, ``> 0``.
        **kwargs: base ``Layer`` arguments.

    Raises:
        TypeError: for parameters that are not numbers, or a ``learnable`` of the wrong kind.
        ValueError: for parameters not finite or not representable in float32, ``alpha + beta``
            not between 1.18e-38 and 3.4e38, ``min_width`` not in
            ``(0, alpha + beta]``, unknown learnable names, or ``per_channel`` without anything
            learnable.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.layers import GeneralizedSmeLU
    >>> layer = GeneralizedSmeLU(negative_slope=0.05, learnable=["alpha", "beta"])
    >>> layer(tf.constant([[-2.0, 0.0, 2.0]])).shape
    TensorShape([1, 3])

    References:
        - [Lin, Shamir (2022)](https://arxiv.org/abs/2202.06499)
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        negative_slope: float = 0.0,
        positive_slope: float = 1.0,
        offset: float = 0.0,
        learnable: bool | Sequence[str] = False,
        per_channel: bool = False,
        min_width: float = 1e-3,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        values = (alpha, beta, negative_slope, positive_slope, offset)
        for name, value in zip(PARAMETERS, values):
            setattr(self, name, check_float(name, value, float32=True))
        check_width(self.alpha, self.beta)
        self.min_width = check_float("min_width", min_width, 0.0, min_inclusive=False, float32=True)
        if self.min_width > self.alpha + self.beta:
            raise ValueError(
                f"`min_width` must be <= alpha + beta. Received: min_width={min_width!r}, "
                f"alpha + beta={self.alpha + self.beta!r}"
            )
        self.learnable = _learnable_names(learnable)
        self.per_channel = check_bool("per_channel", per_channel)
        if self.per_channel and not self.learnable:
            raise ValueError(
                "`per_channel=True` needs at least one learnable parameter. "
                "Received: per_channel=True, learnable=False"
            )
        self.supports_masking = True
        self.parameter_variables: dict[str, Any] = {}

    def build(self, input_shape):
        shape = _utils.parameter_shape(input_shape, self.per_channel, "GeneralizedSmeLU")
        for name in self.learnable:
            self.parameter_variables[name] = self.add_weight(
                name=name,
                shape=shape,
                initializer=keras.initializers.Constant(getattr(self, name)),
                trainable=True,
            )
        super().build(input_shape)

    def _parameters(self) -> dict[str, Any]:
        params = {name: getattr(self, name) for name in PARAMETERS}
        for name, variable in self.parameter_variables.items():
            params[name] = tf.convert_to_tensor(variable)
        if "alpha" in self.parameter_variables or "beta" in self.parameter_variables:
            alpha, beta = params["alpha"], params["beta"]
            dtype = (beta if tf.is_tensor(beta) else alpha).dtype
            floor = tf.cast(self.min_width, dtype) - tf.cast(alpha, dtype)
            params["beta"] = tf.maximum(tf.cast(beta, dtype), floor)
        return params

    def call(self, inputs):
        return activations.generalized_smelu(inputs, **self._parameters())

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({name: getattr(self, name) for name in PARAMETERS})
        config.update(
            learnable=list(self.learnable),
            per_channel=self.per_channel,
            min_width=self.min_width,
        )
        return config
