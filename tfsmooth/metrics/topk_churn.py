"""Top-k churn: how much two retrieval models' top-k recommendations differ."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfsmooth import _keras
from tfsmooth._validation import check_int
from tfsmooth.metrics.prediction_difference import (
    check_finite,
    check_same_shape,
    check_sample_weight,
)

__all__ = ["topk_churn"]


def _shared_counts(top_a, top_b, n_candidates, k: int, static_candidates) -> tf.Tensor:
    """``|A n B|`` per query for index sets ``[Q, k]`` whose rows hold distinct indices."""
    if static_candidates is None or k * k <= static_candidates:
        # Pairwise matches: [Q, k, k] booleans, the cheaper form for small k.
        matches = tf.equal(top_a[:, :, tf.newaxis], top_b[:, tf.newaxis, :])
        return tf.reduce_sum(tf.cast(matches, tf.float32), axis=[1, 2])
    # Large k: mark A's items in a [Q, C] mask and look B's items up in it.
    queries = tf.shape(top_a)[0]
    rows = tf.repeat(tf.range(queries), k)
    indices = tf.stack([rows, tf.reshape(top_a, [-1])], axis=1)
    mask = tf.scatter_nd(indices, tf.ones([queries * k], tf.float32), [queries, n_candidates])
    return tf.reduce_sum(tf.gather(mask, top_b, batch_dims=1), axis=1)


@_keras.register_serializable
def topk_churn(scores_a: Any, scores_b: Any, k: int, sample_weight: Any = None) -> tf.Tensor:
    """Top-k churn: the share of each query's top-k items that the other model does not recommend.

    .. math::

        \\mathrm{churn@k} = \\frac{1}{Q} \\sum_{q=1}^{Q}
            \\left(1 - \\frac{|\\mathrm{top}_k(a_q) \\cap \\mathrm{top}_k(b_q)|}{k}\\right)

    0 when both models recommend the same k items to every query (in any order), 1 when they share
    none. Ties among scores go to the lower item index (``tf.math.top_k``'s rule), so equal scores
    never create churn by themselves.

    Args:
        scores_a: scores of one model, ``[Q, C]`` (queries x candidates), or ``[C]`` for one query.
        scores_b: scores of the other model, the same shape.
        k: the number of top items compared, ``1 <= k <= C``.
        sample_weight: optional non-negative weights per query ``[Q]``.

    Returns:
        A float32 scalar tensor in ``[0, 1]`` (0 for no queries, or weights that sum to 0).

    Raises:
        TypeError: for a ``k`` that is not an integer.
        ValueError: for ``k`` out of range, shapes that differ or are not ``[Q, C]``, NaN/Inf
            scores, or weights that are NaN/Inf, negative, or not one per query (in a
            ``tf.function``, run-time assertions).

    Example:

    >>> from tfsmooth.metrics import topk_churn
    >>> float(topk_churn([[0.9, 0.8, 0.1, 0.0]], [[0.9, 0.0, 0.8, 0.1]], k=2))
    0.5

    References:
        - [Shamir, Lin, Coviello (2020)](https://arxiv.org/abs/2010.09931): churn and PD.
    """
    a = tf.cast(tf.convert_to_tensor(scores_a), tf.float32)
    b = tf.cast(tf.convert_to_tensor(scores_b), tf.float32)
    check_same_shape(a, b, ("scores_a", "scores_b"))
    if a.shape.rank == 1:
        a, b = a[tf.newaxis], b[tf.newaxis]
    if a.shape.rank != 2:
        raise ValueError(
            "`scores_a` and `scores_b` must be [queries, candidates]. "
            f"Received: scores_a.shape={tuple(a.shape)}"
        )
    candidates = a.shape[-1]
    k = check_int("k", k, 1)
    if candidates is not None and k > candidates:
        raise ValueError(f"`k` must be <= the number of candidates ({candidates}). Received: k={k}")
    a, b = check_finite(a, "scores_a"), check_finite(b, "scores_b")
    top_a = tf.math.top_k(a, k=k, sorted=False).indices
    top_b = tf.math.top_k(b, k=k, sorted=False).indices
    shared = _shared_counts(top_a, top_b, tf.shape(a)[1], k, candidates)
    churn = 1.0 - shared / float(k)
    if sample_weight is None:  # 0 for no queries, as prediction_difference
        return tf.math.divide_no_nan(tf.reduce_sum(churn), tf.cast(tf.size(churn), tf.float32))
    weights = check_sample_weight(sample_weight, tf.shape(churn)[0], tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(weights * churn), tf.reduce_sum(weights))
