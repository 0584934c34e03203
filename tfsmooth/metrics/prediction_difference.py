"""Prediction difference (PD): how much two models' predictions on the same examples disagree."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfsmooth import _keras

__all__ = ["KINDS", "prediction_difference"]

#: The kinds of :func:`prediction_difference`.
KINDS = ("absolute", "relative", "l2", "l1", "top1")

#: Kinds that compare class-probability vectors along the last axis.
CLASS_KINDS = ("l1", "top1")

#: Below this, a prediction and its sum with the other count as zero (as in TensorFlow Model
#: Analysis' symmetric prediction difference).
EPSILON = 1e-7


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
    a: tf.Tensor, b: tf.Tensor, kind: str, epsilon: float = EPSILON
) -> tf.Tensor:
    """The per-example term of each kind, shape ``[N]`` (``l2``: the squared distance).

    ``a`` and ``b`` are ``[N, ...]`` of one float dtype (for the class kinds, ``[N, C]``).
    """
    if kind in CLASS_KINDS:
        if kind == "l1":
            return 0.5 * tf.reduce_sum(tf.abs(a - b), axis=-1)
        return tf.cast(tf.not_equal(tf.argmax(a, axis=-1), tf.argmax(b, axis=-1)), a.dtype)
    flat_a = tf.reshape(a, [tf.shape(a)[0], -1])
    flat_b = tf.reshape(b, [tf.shape(b)[0], -1])
    if kind == "absolute":
        return tf.reduce_mean(tf.abs(flat_a - flat_b), axis=1)
    if kind == "l2":
        return tf.reduce_sum(tf.square(flat_a - flat_b), axis=1)
    numerator = 2.0 * tf.abs(flat_a - flat_b)
    denominator = tf.abs(flat_a + flat_b)
    both_zero = tf.logical_and(numerator < epsilon, denominator < epsilon)
    ratio = numerator / tf.maximum(denominator, tf.cast(epsilon, a.dtype))
    return tf.reduce_mean(tf.where(both_zero, tf.zeros_like(ratio), ratio), axis=1)


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
        epsilon: the "both zero" threshold of ``"relative"``.

    Returns:
        A float scalar tensor (0 when the weights sum to 0).

    Raises:
        ValueError: for an unknown ``kind``, shapes that differ, NaN/Inf in ``a``, ``b`` or the
            weights, or negative weights (in a ``tf.function``, shape and NaN checks are run-time
            assertions).
        TypeError: for non-numeric inputs.

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
    a, b = _as_float(a, "a"), _as_float(b, "b")
    dtype = a.dtype if a.dtype == b.dtype else tf.float32
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    check_same_shape(a, b)
    a, b = _examples(a, kind, "a"), _examples(b, kind, "b")
    a, b = check_finite(a, "a"), check_finite(b, "b")
    terms = per_example_difference(a, b, kind, epsilon)
    if sample_weight is None:
        mean = tf.reduce_mean(terms) if terms.shape[0] != 0 else tf.zeros((), dtype)
    else:
        weights = tf.cast(_as_float(sample_weight, "sample_weight"), dtype)
        weights = tf.reshape(weights, [-1])
        known = weights.shape[0] is not None and terms.shape[0] is not None
        if known and weights.shape[0] != terms.shape[0]:
            raise ValueError(
                "`sample_weight` needs one weight per example. Received: "
                f"sample_weight.shape={tuple(weights.shape)} for {terms.shape[0]} examples"
            )
        weights = check_finite(weights, "sample_weight")
        if tf.executing_eagerly() and bool(tf.reduce_any(weights < 0)):
            raise ValueError(
                "`sample_weight` must be >= 0. Received: sample_weight with minimum "
                f"{float(tf.reduce_min(weights)):g}"
            )
        mean = tf.math.divide_no_nan(tf.reduce_sum(weights * terms), tf.reduce_sum(weights))
    return tf.sqrt(mean) if kind == "l2" else mean
