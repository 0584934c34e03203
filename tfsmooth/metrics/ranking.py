"""Ranking quality against the whole item catalog: the rank of the true item, HR@k and NDCG@k."""

from __future__ import annotations

import numbers
from typing import Any

import tensorflow as tf

from tfsmooth._keras import register_serializable

__all__ = ["catalog_rank", "catalog_ranking_metrics"]


def _split(rows, chunk):
    rows = tf.maximum(rows, 1)
    pieces = (rows + chunk - 1) // chunk
    size = rows // pieces
    steps = rows // size
    return size, steps, rows - steps * size


@tf.function(jit_compile=True)
def _count_ahead(queries, items, labels, target_scores, chunk):
    """Number of items other than the label scoring >= the label's score, chunk by chunk."""
    size, steps, tail = _split(tf.shape(items, out_type=tf.int32)[0], chunk)
    d = tf.shape(items)[1]

    def count(start, length):
        block = tf.cast(tf.slice(items, tf.stack([start, 0]), tf.stack([length, d])), tf.float32)
        scores = tf.matmul(queries, block, transpose_b=True)
        other = tf.not_equal((start + tf.range(length))[None, :], labels[:, None])
        ahead = tf.logical_and(scores >= target_scores[:, None], other)
        return tf.reduce_sum(tf.cast(ahead, tf.int32), axis=1)

    _, counts = tf.while_loop(
        lambda i, _: i < steps,
        lambda i, c: (i + 1, c + count(i * size, size)),
        (tf.constant(0), tf.zeros(tf.shape(labels), tf.int32)),
    )
    return counts + count(steps * size, tail)


def _excluded_ahead(queries, items, labels, target_scores, exclude):
    """How many distinct excluded items (not the label, in range) score >= the label's score."""
    exclude = tf.cast(tf.convert_to_tensor(exclude), tf.int32)
    num_items = tf.shape(items, out_type=tf.int32)[0]
    ordered = tf.sort(exclude, axis=1)
    repeated = tf.concat(
        [tf.zeros_like(ordered[:, :1], tf.bool), tf.equal(ordered[:, 1:], ordered[:, :-1])], axis=1
    )
    usable = (ordered >= 0) & (ordered < num_items) & ~repeated & (ordered != labels[:, None])
    safe = tf.where(usable, ordered, tf.zeros_like(ordered))
    scores = tf.einsum("bd,bmd->bm", queries, tf.cast(tf.gather(items, safe), tf.float32))
    return tf.reduce_sum(tf.cast(usable & (scores >= target_scores[:, None]), tf.int32), axis=1)


@register_serializable
def catalog_rank(
    queries: Any,
    item_embeddings: Any,
    labels: Any,
    *,
    exclude: Any = None,
    chunk_size: int = 8192,
) -> tf.Tensor:
    """0-based rank of each query's true item among all items, by inner-product score.

    .. math::

        \\mathrm{rank}_i = \\big|\\{\\, j \\ne y_i,\\ j \\notin E_i : x_i^\\top w_j \\ge x_i^\\top w_{y_i} \\,\\}\\big|

    Ties count against the true item (a model that scores everything alike ranks it last, not
    first). Items are scored ``chunk_size`` at a time in one XLA loop, so at most
    ``[B, chunk_size]`` scores exist, whatever the catalog size.

    Args:
        queries: float ``[B, d]``.
        item_embeddings: float ``[C, d]``.
        labels: integer ``[B]`` in ``[0, C)``: the true items.
        exclude: optional integer ``[B, M]``: items not to rank for each query (e.g. the items of
            its history, as the usual "filter seen items" protocol does). Entries outside ``[0, C)``
            (padding), repeats and the true item itself are ignored.
        chunk_size: int. Items scored per step.

    Returns:
        int32 ``[B]``.

    Raises:
        ValueError: for labels outside ``[0, C)`` (eagerly) or a bad ``chunk_size``.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.metrics.ranking import catalog_rank
    >>> catalog_rank(tf.constant([[1.0, 0.0]]), tf.constant([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0]]),
    ...              tf.constant([2])).numpy()
    array([1], dtype=int32)
    """
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, numbers.Integral)
        or chunk_size < 1
    ):
        raise ValueError(
            f"`chunk_size` must be an integer >= 1. Received: chunk_size={chunk_size!r}"
        )
    queries = tf.cast(tf.convert_to_tensor(queries), tf.float32)
    item_embeddings = tf.convert_to_tensor(item_embeddings)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    num_items = tf.shape(item_embeddings, out_type=tf.int32)[0]
    if tf.executing_eagerly():
        bad = labels.numpy()[(labels.numpy() < 0) | (labels.numpy() >= int(num_items))]
        if bad.size:
            raise ValueError(
                f"`labels` must be item indices in [0, {int(num_items)}). "
                f"Received: labels containing {int(bad[0])}"
            )
    else:
        message = "`labels` must be item indices in [0, num_items)"
        tf.debugging.assert_non_negative(labels, message=message)
        tf.debugging.assert_less(labels, num_items, message=message)
    targets = tf.reduce_sum(queries * tf.cast(tf.gather(item_embeddings, labels), tf.float32), 1)
    ranks = _count_ahead(queries, item_embeddings, labels, targets, int(chunk_size))
    if exclude is not None:
        ranks -= _excluded_ahead(queries, item_embeddings, labels, targets, exclude)
    return ranks


@register_serializable
def catalog_ranking_metrics(
    queries: Any,
    item_embeddings: Any,
    labels: Any,
    *,
    k: int = 10,
    exclude: Any = None,
    chunk_size: int = 8192,
) -> dict[str, tf.Tensor]:
    """Hit rate (HR@k) and NDCG@k of each query against the whole catalog.

    With one relevant item per query at 0-based rank :math:`r_i` (:func:`catalog_rank`):

    .. math::

        \\mathrm{HR@}k_i = [r_i < k], \\qquad
        \\mathrm{NDCG@}k_i = \\frac{[r_i < k]}{\\log_2(r_i + 2)}

    Averaging over queries gives the usual HR@k and NDCG@k of leave-one-out evaluation (Kang &
    McAuley 2018; Mezentsev et al. 2024).

    Args:
        queries: float ``[B, d]``.
        item_embeddings: float ``[C, d]``.
        labels: integer ``[B]``.
        k: int ``>= 1``. The cut-off.
        exclude: optional ``[B, M]`` items not to rank (see :func:`catalog_rank`).
        chunk_size: int. Items scored per step.

    Returns:
        A dict of float32 ``[B]`` tensors: ``"hit_rate"``, ``"ndcg"``, and int32 ``"rank"``.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.metrics.ranking import catalog_ranking_metrics
    >>> m = catalog_ranking_metrics(tf.random.normal([8, 4]), tf.random.normal([100, 4]),
    ...                             tf.range(8), k=10)
    >>> hr10, ndcg10 = float(tf.reduce_mean(m["hit_rate"])), float(tf.reduce_mean(m["ndcg"]))

    References:
        - [Kang, McAuley. Self-Attentive Sequential Recommendation (2018)](
          https://arxiv.org/abs/1808.09781)
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"`k` must be an integer >= 1. Received: k={k!r}")
    ranks = catalog_rank(queries, item_embeddings, labels, exclude=exclude, chunk_size=chunk_size)
    hit = ranks < k
    rank_f = tf.cast(ranks, tf.float32)
    ndcg = tf.where(hit, 1.0 / (tf.math.log(rank_f + 2.0) / tf.math.log(2.0)), 0.0)
    return {"hit_rate": tf.cast(hit, tf.float32), "ndcg": ndcg, "rank": ranks}
