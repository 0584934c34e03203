"""Prediction difference (PD): how much two models' predictions on the same examples disagree."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfsmooth import _keras
from tfsmooth._validation import check_float

__all__ = ["KINDS", "prediction_difference"]

#: The kinds of :func:`prediction_difference`.
KINDS = ("absolute", "relative", "l2", "l1", "top1")

#: Kinds that compare class-probability vectors along the last axis.
CLASS_KINDS = ("l1", "top1")

#: Below this, a prediction and its sum with the other count as zero (as in TensorFlow Model
#: Analysis' symmetric prediction difference).
EPSILON = 1e-7


def check_epsilon(epsilon: Any) -> float:
    """``epsilon`` of the relative kind: a number ``> 0`` representable in float32."""
    return check_float("epsilon", epsilon, 0.0, min_inclusive=False, float32=True)


@tf.autograph.experimental.do_not_convert  # Python branches on eager values (tf-keras autographs)
def check_sample_weight(weights: Any, count: Any, dtype: tf.DType) -> tf.Tensor:
    """One finite, non-negative weight per example, as a ``[N]`` tensor of ``dtype``.

    Raises (eagerly a ``ValueError``; in a graph, a run-time assertion) for a count that differs from
    ``count`` (an ``int``, or a scalar tensor), NaN/Inf or a negative weight.
    """
    weights = tf.reshape(tf.cast(_as_float(weights, "sample_weight"), dtype), [-1])
    static = tf.get_static_value(count) if tf.is_tensor(count) else count
    if static is not None and weights.shape[0] is not None and weights.shape[0] != static:
        raise ValueError(
            "`sample_weight` needs one weight per example. Received: "
            f"sample_weight.shape={tuple(weights.shape)} for {int(static)} examples"
        )
    weights = check_finite(weights, "sample_weight")
    if tf.executing_eagerly():
        if bool(tf.reduce_any(weights < 0)):
            raise ValueError(
                "`sample_weight` must be >= 0. Received: sample_weight with minimum "
                f"{float(tf.reduce_min(weights)):g}"
            )
        return weights
    checks = [
        tf.debugging.assert_non_negative(weights, message="`sample_weight` must be >= 0"),
    ]
    if static is None or weights.shape[0] is None:
        checks.append(
            tf.debugging.assert_equal(
                tf.size(weights, out_type=tf.int64),
                tf.cast(count, tf.int64),
                message="`sample_weight` needs one weight per example",
            )
        )
    with tf.control_dependencies(checks):
        return tf.identity(weights)


def check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {list(KINDS)}. Received: kind={kind!r}")
    return kind


def _as_float(value: Any, name: str) -> tf.Tensor:
    tensor = tf.convert_to_tensor(value)
    if tensor.dtype.is_floating:
        return tf.cast(tensor, tf.float32) if tensor.dtype in (tf.float16, tf.bfloat16) else tensor
    if tensor.dtype.is_integer or tensor.dtype == tf.bool:
        return tf.cast(tensor, tf.float32)
    raise TypeError(f"`{name}` must hold numbers. Received: {name} of dtype {tensor.dtype.name}")


@tf.autograph.experimental.do_not_convert
def check_finite(tensor: tf.Tensor, name: str) -> tf.Tensor:
    """Raises (eagerly a ValueError) if ``tensor`` holds NaN or Inf; in a graph, an assertion."""
    if tf.executing_eagerly():
        bad = int(tf.size(tensor)) - int(
            tf.reduce_sum(tf.cast(tf.math.is_finite(tensor), tf.int32))
        )
        if bad:
            raise ValueError(
                f"`{name}` must be finite. Received: {name} with {bad} NaN or Inf value(s) of "
                f"{int(tf.size(tensor))}"
            )
        return tensor
    return tf.debugging.assert_all_finite(tensor, f"`{name}` must be finite (NaN or Inf found)")


def check_same_shape(a: tf.Tensor, b: tf.Tensor, names=("a", "b")) -> None:
    if a.shape.rank is not None and b.shape.rank is not None:
        compatible = a.shape.is_compatible_with(b.shape)
        if not compatible:
            raise ValueError(
                f"`{names[0]}` and `{names[1]}` must have the same shape. Received: "
                f"{names[0]}.shape={tuple(a.shape)}, {names[1]}.shape={tuple(b.shape)}"
            )
    if a.shape.is_fully_defined() and b.shape.is_fully_defined():
        return
    tf.debugging.assert_equal(
        tf.shape(a), tf.shape(b), message=f"`{names[0]}` and `{names[1]}` must have the same shape"
    )


def per_example_difference(
    a: tf.Tensor, b: tf.Tensor, kind: str, epsilon: float = EPSILON, scale: Any = None
) -> tf.Tensor:
    """The per-example term of each kind, shape ``[N]`` (``l2``: the squared distance).

    ``a`` and ``b`` are ``[N, ...]`` of one float dtype (for the class kinds, ``[N, C]``). The
    differences are taken of halves, ``a / 2 - b / 2``, so that finite predictions never overflow
    to inf - inf; for ``l2`` with a ``scale``, the squared distance is that of
    ``(a / 2 - b / 2) / scale`` (give ``scale = l2_scale(a, b)``: the result times ``(2 scale)^2`` is
    the squared distance, which itself overflows float32 beyond 1.8e19).
    """
    if kind in CLASS_KINDS:
        if kind == "l1":
            return 0.5 * tf.reduce_sum(tf.abs(a - b), axis=-1)
        return tf.cast(tf.not_equal(tf.argmax(a, axis=-1), tf.argmax(b, axis=-1)), a.dtype)
    half_a = tf.reshape(a, [tf.shape(a)[0], -1]) * 0.5
    half_b = tf.reshape(b, [tf.shape(b)[0], -1]) * 0.5
    half_difference = tf.abs(half_a - half_b)
    if kind == "absolute":
        return tf.reduce_mean(half_difference, axis=1) * 2.0
    if kind == "l2":
        if scale is None:  # the plain squared distance
            return tf.reduce_sum(tf.square(half_difference * 2.0), axis=1)
        return tf.reduce_sum(tf.square(tf.math.divide_no_nan(half_difference, scale)), axis=1)
    # relative: 2|a - b| / |a + b| = 2 |a/2 - b/2| / |a/2 + b/2|, "both zero" below epsilon.
    half_sum = tf.abs(half_a + half_b)
    both_zero = tf.logical_and(4.0 * half_difference < epsilon, 2.0 * half_sum < epsilon)
    ratio = half_difference / tf.maximum(half_sum, tf.cast(0.5 * epsilon, a.dtype)) * 2.0
    return tf.reduce_mean(tf.where(both_zero, tf.zeros_like(ratio), ratio), axis=1)


def l2_scale(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """The largest ``|a / 2 - b / 2|``: the scale of the ``l2`` kind's squared distances."""
    # The maximum with 0 gives 0, not -inf, for no examples.
    return tf.maximum(tf.reduce_max(tf.abs(a * 0.5 - b * 0.5)), tf.zeros((), a.dtype))


def _examples(a: tf.Tensor, kind: str, name: str) -> tf.Tensor:
    """Gives scalars and single vectors a leading example axis; checks the class axis exists."""
    rank = a.shape.rank
    if kind in CLASS_KINDS:
        if rank is not None and rank < 1:
            raise ValueError(
                f"`kind={kind!r}` compares class-probability vectors along the last axis, so "
                f"`{name}` needs rank >= 1. Received: {name}.shape={tuple(a.shape)}"
            )
        return a[tf.newaxis] if rank == 1 else a
    return a[tf.newaxis] if rank == 0 else a


@_keras.register_serializable
def prediction_difference(
    a: Any,
    b: Any,
    kind: str = "relative",
    sample_weight: Any = None,
    *,
    epsilon: float = EPSILON,
) -> tf.Tensor:
    """Prediction difference (PD) between two models' predictions on the same examples.

    With per-example weights :math:`w_i` (1 by default) and :math:`\\bar{x} = \\sum_i w_i x_i /
    \\sum_i w_i`:

    - ``"absolute"``: :math:`\\overline{|a_i - b_i|}`.
    - ``"relative"``: :math:`\\overline{2|a_i - b_i| / |a_i + b_i|}`, with pairs where both
      :math:`2|a_i - b_i|` and :math:`|a_i + b_i|` are below ``epsilon`` counting 0 -- the
      *symmetric prediction difference* of TensorFlow Model Analysis, and the papers' relative PD
      :math:`|p_1 - p_2| / ((p_1 + p_2)/2)`. For non-negative predictions (probabilities, ratings);
      the denominator is floored at ``epsilon`` so the result is always finite.
    - ``"l2"``: the root-mean-square distance :math:`\\sqrt{\\overline{\\|a_i - b_i\\|_2^2}}`.
    - ``"l1"`` (class probabilities ``[N, C]``): :math:`\\overline{\\tfrac12 \\|a_i - b_i\\|_1}`, the
      total-variation distance, in ``[0, 1]``.
    - ``"top1"`` (class probabilities or logits ``[N, C]``): the share of examples whose argmax
      differs (ties go to the lower class index).

    For the first three kinds predictions of shape ``[N, ...]`` are compared element-wise and
    averaged over the trailing axes per example (``[N]`` and ``[N, 1]`` are the usual shapes).

    Args:
        a: predictions of one model, ``[N, ...]`` (``[N, C]`` for ``l1``/``top1``).
        b: predictions of the other model, the same shape.
        kind: one of ``"absolute"``, ``"relative"``, ``"l2"``, ``"l1"``, ``"top1"``.
        sample_weight: optional non-negative weights ``[N]``.
        epsilon: the "both zero" threshold of ``"relative"``, ``> 0`` (it floors the denominator).

    Returns:
        A float scalar tensor (0 when the weights sum to 0 or there are no examples). Finite
        predictions never overflow: differences are taken of halves, and ``"l2"`` is scaled by the
        largest difference before squaring, so it is inf only if the true value exceeds float32.

    Raises:
        ValueError: for an unknown ``kind``, an ``epsilon`` that is not ``> 0``, shapes that
            differ, NaN/Inf in ``a``, ``b`` or the weights, negative weights or a weight count that
            differs from the example count (in a ``tf.function``, shape, NaN and sign checks are
            run-time assertions).
        TypeError: for non-numeric inputs or a non-numeric ``epsilon``.

    Example:

    >>> from tfsmooth.metrics import prediction_difference
    >>> float(prediction_difference([0.2, 0.5, 0.0], [0.3, 0.5, 0.0]))  # (0.4 + 0 + 0) / 3
    0.13333334...
    >>> float(prediction_difference([[0.9, 0.1], [0.4, 0.6]], [[0.6, 0.4], [0.7, 0.3]], "top1"))
    0.5

    References:
        - [Shamir, Lin, Coviello (2020)](https://arxiv.org/abs/2010.09931), Section 2 (PD).
        - [TensorFlow Model Analysis, SymmetricPredictionDifference](
          https://github.com/tensorflow/model-analysis)
    """
    kind = check_kind(kind)
    epsilon = check_epsilon(epsilon)
    a, b = _as_float(a, "a"), _as_float(b, "b")
    dtype = a.dtype if a.dtype == b.dtype else tf.float32
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    check_same_shape(a, b)
    a, b = _examples(a, kind, "a"), _examples(b, kind, "b")
    a, b = check_finite(a, "a"), check_finite(b, "b")
    scale = l2_scale(a, b) if kind == "l2" else None
    terms = per_example_difference(a, b, kind, epsilon, scale)
    if sample_weight is None:
        mean = tf.math.divide_no_nan(
            tf.reduce_sum(terms), tf.cast(tf.size(terms), dtype)
        )  # 0 for no examples
    else:
        weights = check_sample_weight(sample_weight, tf.shape(terms)[0], dtype)
        mean = tf.math.divide_no_nan(tf.reduce_sum(weights * terms), tf.reduce_sum(weights))
    # l2: the root-mean-square of (a - b) is 2 scale sqrt(mean((a/2 - b/2) / scale)^2).
    return tf.sqrt(mean) * scale * 2.0 if kind == "l2" else mean
