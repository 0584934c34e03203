"""The Clippy rule: shrink an update so that no coordinate moves further than its bound.

Clippy (Tang et al., KDD 2023) multiplies a variable's update ``u`` by the largest factor
``sigma`` in ``(0, 1]`` that keeps every coordinate within a bound built from reference tensors
(the variable itself, Adagrad's preconditioner, ...):

.. math::

    b_i = \\lambda_{abs} + \\sum_j \\lambda_j |r_{j,i}|, \\qquad
    \\sigma = \\min\\left(1, \\min_i \\frac{b_i}{|u_i|}\\right), \\qquad
    u \\leftarrow \\sigma u .

One ``sigma`` per variable (the paper) keeps the direction of the update; one per row (first axis)
lets each row of an embedding table keep its own step, so one outlier row does not shrink the
update of every other row. This module holds that rule as one pure function; the optimizers
(:class:`~tfsmooth.optimizers.ClippyAdagrad`, :class:`~tfsmooth.optimizers.Clippy`) are thin shells
around it.

References:
    - [Tang et al. Improving training stability for multitask ranking models in recommender
      systems (KDD 2023)](https://arxiv.org/abs/2302.09178)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import tensorflow as tf

from tfsmooth import _keras
from tfsmooth._validation import check_bool, check_float
from tfsmooth.ops.dtypes import compute_dtype

__all__ = ["ShrunkUpdate", "shrink_update"]


class ShrunkUpdate(NamedTuple):
    """What :func:`shrink_update` returns.

    Attributes:
        update: the update multiplied by its clipping factor (shape and dtype of the input).
        factor: the clipping factor ``sigma`` in ``[0, 1]``: a scalar, or one per row (shape
            ``[rows]``) with ``per_row=True``. ``1`` means the update was left alone.
        ratio: the update-to-bound ratio ``max_i |u_i| / b_i`` (same shape as ``factor``), the
            paper's early-warning signal: ``sigma = min(1, 1 / ratio)``. Unlike ``factor`` it keeps
            moving while no clipping happens (``ratio < 1``); ``0`` for an all-zero update.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.optimizers import shrink_update
    >>> update, factor, ratio = shrink_update(tf.constant([0.5, -0.1]), [tf.ones(2)], [0.1], 0.0)
    >>> round(float(ratio), 6), round(float(factor), 6)  # 0.5 against a bound of 0.1 * |1|
    (5.0, 0.2)
    """

    update: tf.Tensor
    factor: tf.Tensor
    ratio: tf.Tensor


def _check_threshold(name: str, value: Any) -> float:
    return check_float(name, value, 0.0, float32=True)


@_keras.register_serializable
def shrink_update(
    update: Any,
    references: Sequence[Any],
    relative_thresholds: Sequence[float],
    absolute_threshold: float,
    *,
    per_row: bool = False,
) -> ShrunkUpdate:
    """Shrinks ``update`` so that every coordinate stays within its bound (the Clippy rule).

    With bound :math:`b_i = \\lambda_{abs} + \\sum_j \\lambda_j |r_{j,i}|`:

    .. math::

        \\rho = \\max_i \\frac{|u_i|}{b_i}, \\qquad
        \\sigma = \\min(1, 1 / \\rho), \\qquad u \\leftarrow \\sigma u,

    taking the max (and so the factor) over the whole tensor, or over each row (every axis but the
    first) with ``per_row=True``. Coordinates with ``u_i = 0`` never constrain ``sigma``; a
    coordinate with ``u_i != 0`` and ``b_i = 0`` forces ``sigma = 0`` (possible only with
    ``absolute_threshold = 0``, as in TFRS's ``shrink_by_references``, whose results this matches
    exactly). A NaN or infinite update is never hidden: it reaches the shrunk update as NaN.

    Half-precision inputs are computed in ``float32``; the result has the input's dtype.

    Args:
        update: float tensor, the proposed change ``u`` (e.g. ``-lr * g / sqrt(G)``), or the
            values of a ``tf.IndexedSlices`` update (one row per looked-up embedding row).
        references: tensors broadcastable to ``update`` (the variable ``w``, Adagrad's
            preconditioner, ...).
        relative_thresholds: one number ``lambda_j >= 0`` per reference.
        absolute_threshold: ``lambda_abs >= 0``. Keeping it ``> 0`` guarantees ``sigma > 0``, so a
            variable at zero (a fresh bias) can still move.
        per_row: one factor per row (first axis) instead of one for the whole tensor.

    Returns:
        A :class:`ShrunkUpdate` ``(update, factor, ratio)``; ``factor`` and ``ratio`` are scalars,
        or of shape ``[rows]`` with ``per_row=True``.

    Raises:
        ValueError: for a negative or non-finite threshold, as many thresholds as references
            mismatch, or ``per_row=True`` on a scalar update.
        TypeError: for a non-floating-point update.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.optimizers import shrink_update
    >>> w = tf.constant([1.0, 0.1])
    >>> result = shrink_update(tf.constant([1.0, 1.0]), [w], [0.1], 0.01)
    >>> round(float(result.factor), 6)  # the second coordinate may move 0.1 * 0.1 + 0.01 = 0.02
    0.02
    >>> result.update.numpy()
    array([0.02, 0.02], dtype=float32)

    References:
        - [Tang et al. (2023), Algorithm 1](https://arxiv.org/abs/2302.09178)
    """
    if isinstance(references, (tf.Tensor, tf.Variable)) or not isinstance(
        references, (list, tuple)
    ):
        raise TypeError(
            "`references` must be a list or tuple of tensors. "
            f"Received: references of type {type(references).__name__}"
        )
    relative = [
        _check_threshold(f"relative_thresholds[{i}]", value)
        for i, value in enumerate(relative_thresholds)
    ]
    if len(relative) != len(references):
        raise ValueError(
            "`relative_thresholds` must have one value per reference. Received: "
            f"{len(relative)} relative_thresholds for {len(references)} references"
        )
    absolute = _check_threshold("absolute_threshold", absolute_threshold)
    per_row = check_bool("per_row", per_row)
    update = tf.convert_to_tensor(update)
    if not update.dtype.is_floating:
        raise TypeError(
            f"`update` must be a floating-point tensor. Received: update.dtype={update.dtype.name}"
        )
    if per_row and update.shape.rank == 0:
        raise ValueError(
            "`per_row=True` needs an update with at least one axis (the rows). "
            f"Received: update.shape={update.shape}"
        )
    return _shrink(update, references, relative, absolute, per_row)


def _headroom(
    update: tf.Tensor,
    references: Sequence[Any],
    relative: Sequence[float],
    absolute: float,
    per_row: bool,
) -> tf.Tensor:
    """``min_i b_i / |u_i|`` (over the whole tensor, or per row) in the compute dtype: the
    factor is ``min(1, headroom)`` and the ratio ``1 / headroom``.

    A sharded table takes the smallest headroom over its shards; ``min`` is exact, so that is the
    headroom of the whole table bit for bit, whatever the shards.
    """
    dtype = compute_dtype(update.dtype)
    u = tf.cast(update, dtype)
    # b = lambda_abs + sum_j lambda_j |r_j|, summed in the order TFRS sums it (so results agree to
    # the bit); terms with lambda_j = 0 are skipped (they add exactly 0 for finite references).
    bound = None
    for reference, factor in zip(references, relative):
        if factor == 0.0:
            continue
        term = tf.abs(tf.cast(reference, dtype)) * factor
        bound = term + absolute if bound is None else bound + term
    if bound is None:
        bound = tf.constant(absolute, dtype)
    magnitude = tf.abs(u)
    if absolute > 0:
        # b > 0 everywhere: b / |u| is +inf where u = 0, which never wins the min.
        headroom = bound / magnitude
    else:
        headroom = tf.where(
            tf.equal(magnitude, 0),
            tf.constant(math.inf, dtype),
            tf.math.divide_no_nan(tf.broadcast_to(bound, tf.shape(u)), magnitude),
        )
    if per_row:
        axes = list(range(1, u.shape.rank)) if u.shape.rank is not None else None
        return tf.reduce_min(headroom, axis=axes) if axes else headroom
    return tf.reduce_min(headroom)


def _shrink(
    update: tf.Tensor,
    references: Sequence[Any],
    relative: Sequence[float],
    absolute: float,
    per_row: bool,
    headroom: tf.Tensor | None = None,
) -> ShrunkUpdate:
    """The rule without validation: the optimizers call this in their hot path.

    ``headroom``, when given, is that of a whole sharded table (the smallest of its shards'
    :func:`_headroom`), which sets the factor in place of this update's own.
    """
    dtype = compute_dtype(update.dtype)
    u = tf.cast(update, dtype)
    smallest = _headroom(u, references, relative, absolute, per_row)
    if headroom is not None:
        # The table's headroom is at most this shard's, so this is the table's, exactly. The
        # shard's own is computed all the same so that the step's graph is the unsharded one:
        # Grappler reassociates a product whose intermediate has one consumer (the update alone),
        # which would round the shrunk update differently from the unsharded table's.
        smallest = tf.minimum(smallest, tf.cast(headroom, dtype))
    # NaN in the update stays NaN in the result (NaN * factor); the factor itself is NaN too on
    # CPU/GPU kernels, while XLA's min may skip NaN.
    factor = tf.minimum(tf.constant(1.0, dtype), smallest)
    ratio = tf.math.reciprocal(smallest)
    if per_row and u.shape.rank is not None and u.shape.rank > 1:
        scale = tf.reshape(factor, [-1] + [1] * (u.shape.rank - 1))
    else:
        scale = factor
    shrunk = u * scale
    return ShrunkUpdate(tf.cast(shrunk, update.dtype), factor, ratio)
