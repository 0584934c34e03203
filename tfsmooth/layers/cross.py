"""The DCN cross layer."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfsmooth._keras import keras, register_serializable
from tfsmooth._validation import check_bool, check_float, check_int


@register_serializable
class Cross(keras.layers.Layer):
    """The cross layer of Deep & Cross Network v2: explicit feature crosses of bounded degree.

    .. math::

        x_{l+1} = x_0 \\odot (W x_l + b + d\\, x_l) + x_l

    with a full-rank :math:`W \\in R^{D \\times D}`, or the low-rank :math:`W = U V` with
    :math:`U \\in R^{D \\times r}`, :math:`V \\in R^{r \\times D}` when ``projection_dim = r`` is given,
    and :math:`d` = ``diag_scale`` (0 by default). The same computation as
    ``tfrs.layers.dcn.Cross``, usable in both Keras flavours and without TensorFlow Recommenders.

    Call it as ``Cross()(x0)`` for the first layer of a stack (:math:`x_l = x_0`) and
    ``Cross()(x0, x)`` for the next ones.

    Args:
        projection_dim: int or None. Rank ``r`` of a low-rank kernel; ``None`` for full rank.
        diag_scale: float >= 0. Added to the kernel's diagonal (helps low-rank training).
        use_bias: bool. Whether to add ``b``.
        kernel_initializer: initializer of ``W`` (or ``U`` and ``V``).
        bias_initializer: initializer of ``b``.
        kernel_regularizer: optional regularizer of ``W`` (or ``U`` and ``V``).
        bias_regularizer: optional regularizer of ``b``.
        **kwargs: base ``Layer`` arguments.

    Integer (or bool) inputs are cast to the layer's compute dtype, as ``Dense`` does.

    Raises:
        TypeError: for a ``projection_dim`` that is not an integer, a ``diag_scale`` that is not a
            number, a ``use_bias`` that is not a bool, or (at call time) non-numeric inputs.
        ValueError: for ``projection_dim < 1``, a ``diag_scale`` that is negative, NaN, infinite
            or not representable in float32, or (at call time) ``x0`` and ``x`` of different
            widths.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.layers import Cross
    >>> x0 = tf.keras.Input((12,))
    >>> x1 = Cross()(x0)
    >>> x2 = Cross(projection_dim=4)(x0, x1)
    >>> tf.keras.Model(x0, x2).output_shape
    (None, 12)

    References:
        - [Wang et al. DCN V2 (2020), Eq. 1 and 2](https://arxiv.org/abs/2008.13535)
        - [Wang et al. Deep & Cross Network (2017)](https://arxiv.org/abs/1708.05123)
    """

    def __init__(
        self,
        projection_dim: int | None = None,
        diag_scale: float = 0.0,
        use_bias: bool = True,
        kernel_initializer: Any = "truncated_normal",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.projection_dim = check_int("projection_dim", projection_dim, 1, allow_none=True)
        self.diag_scale = check_float("diag_scale", diag_scale, 0.0, float32=True)
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.supports_masking = True

    def _kernel_initializer(self):
        # A fresh initializer per weight: a seeded initializer gives U and V different values only
        # through different shapes, so clone it to keep Keras from warning about reuse.
        return self.kernel_initializer.__class__.from_config(self.kernel_initializer.get_config())

    def build(self, x0_shape, x_shape=None):
        width = tuple(x0_shape)[-1]
        if width is None:
            raise ValueError(
                f"`Cross` needs a known last dimension. Received: x0.shape={tuple(x0_shape)}"
            )
        width = int(width)
        if self.projection_dim is None:
            self.kernel = self.add_weight(
                name="kernel",
                shape=(width, width),
                initializer=self._kernel_initializer(),
                regularizer=self.kernel_regularizer,
            )
        else:
            self.kernel_u = self.add_weight(
                name="kernel_u",
                shape=(width, self.projection_dim),
                initializer=self._kernel_initializer(),
                regularizer=self.kernel_regularizer,
            )
            self.kernel_v = self.add_weight(
                name="kernel_v",
                shape=(self.projection_dim, width),
                initializer=self._kernel_initializer(),
                regularizer=self.kernel_regularizer,
            )
        self.bias = (
            self.add_weight(
                name="bias",
                shape=(width,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
            if self.use_bias
            else None
        )
        self.built = True

    def _as_float(self, tensor, name: str):
        tensor = tf.convert_to_tensor(tensor)
        if tensor.dtype.is_floating:
            return tensor
        if tensor.dtype.is_integer or tensor.dtype == tf.bool:
            # As Dense does: integer features are numbers; the kernel stays in floating point.
            return tf.cast(tensor, self.compute_dtype)
        raise TypeError(
            f"`Cross` needs numeric inputs. Received: {name} of dtype {tensor.dtype.name}"
        )

    def call(self, x0, x=None):
        x0 = self._as_float(x0, "x0")
        x = x0 if x is None else self._as_float(x, "x")
        if x0.shape[-1] is not None and x.shape[-1] is not None and x0.shape[-1] != x.shape[-1]:
            raise ValueError(
                f"`x0` and `x` must have the same last dimension. Received: "
                f"x0.shape={tuple(x0.shape)}, x.shape={tuple(x.shape)}"
            )
        if self.projection_dim is None:
            product = tf.matmul(x, tf.cast(self.kernel, x.dtype))
        else:
            product = tf.matmul(
                tf.matmul(x, tf.cast(self.kernel_u, x.dtype)), tf.cast(self.kernel_v, x.dtype)
            )
        if self.bias is not None:
            product = product + tf.cast(self.bias, x.dtype)
        if self.diag_scale:
            product = product + self.diag_scale * x
        return x0 * product + x

    def compute_output_shape(self, x0_shape, x_shape=None):
        return x0_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            projection_dim=self.projection_dim,
            diag_scale=self.diag_scale,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer)
            if self.kernel_regularizer is not None
            else None,
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer)
            if self.bias_regularizer is not None
            else None,
        )
        return config
