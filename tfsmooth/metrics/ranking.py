"""Ranking quality against the whole item catalog: the rank of the true item, HR@k and NDCG@k.

NaN scores (a NaN query, a NaN item row) rank last, never first: a NaN score counts as ``-inf``, so
it is never ahead of a finite one, and a query whose own true item scores NaN gets rank ``C`` (after
every item, a rank no scored item can have) and is a miss (HR 0, NDCG 0) whatever ``k``.

A sharded item table (a ``ShardedVariable`` as parameter-server training creates, a list of shard
variables, or an ``Embedding`` layer holding one) is ranked shard by shard, never concatenated: the
true items' rows are gathered from their shards (:func:`tfsmooth.ops.gather_rows`), each shard
counts the items ahead of the true item on its own device (only ``[B]`` counts travel), and the
counts are summed, exactly (integers). The ranks are those of the concatenated table, except that
an item scoring within float rounding of the true item may fall on either side, as with another
``chunk_size``: a score's rounding may depend on the shape of the block it is computed in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth._keras import keras, register_serializable
from tfsmooth._validation import check_int
from tfsmooth.ops.checks import check_queries_and_table, integer_labels
from tfsmooth.ops.chunks import row_block, split_chunks
from tfsmooth.ops.shards import TableShards, gather_rows, on_device_of, table_shards

__all__ = ["catalog_rank", "catalog_ranking_metrics", "hit_rate_and_ndcg"]


def _without_nan(scores: tf.Tensor) -> tf.Tensor:
    """NaN scores as ``-inf``: ranked after every other score, ties included."""
    return tf.where(tf.math.is_nan(scores), tf.constant(-np.inf, scores.dtype), scores)


@tf.function(jit_compile=True)
def _count_ahead(queries, items, labels, target_scores, chunk):
    """Number of items other than the label scoring >= the label's score, chunk by chunk."""
    size, steps, tail = split_chunks(tf.shape(items, out_type=tf.int32)[0], chunk)

    def count(start, length):
        block = tf.cast(row_block(items, start, length), tf.float32)
        scores = _without_nan(tf.matmul(queries, block, transpose_b=True))
        other = tf.not_equal((start + tf.range(length))[None, :], labels[:, None])
        ahead = tf.logical_and(scores >= target_scores[:, None], other)
        return tf.reduce_sum(tf.cast(ahead, tf.int32), axis=1)

    _, counts = tf.while_loop(
        lambda i, _: i < steps,
        lambda i, c: (i + 1, c + count(i * size, size)),
        (tf.constant(0), tf.zeros(tf.shape(labels), tf.int32)),
    )
    return counts + count(steps * size, tail)


def _item_table(item_embeddings: Any) -> Any:
    """The table to score against: the shards of a sharded table (see
    :func:`tfsmooth.ops.table_shards`), the variable of a built unsharded ``Embedding`` layer,
    anything else as it is.

    Tensors, arrays and anything else :func:`~tfsmooth.ops.table_shards` refuses are left to the
    usual (unsharded) path and its checks, so their results and errors do not change; a Keras
    layer it refuses (unbuilt, or not an ``Embedding``) raises its ``ValueError``.
    """
    if item_embeddings is None or isinstance(item_embeddings, (tf.Tensor, np.ndarray, np.generic)):
        return item_embeddings
    layer = isinstance(item_embeddings, keras.layers.Layer)
    try:
        table = table_shards(item_embeddings)
    except (TypeError, ValueError):
        if layer:
            raise
        return item_embeddings
    if table.sharded:
        return table
    return table.parts[0][0] if layer else item_embeddings


def _sharded_table(item_embeddings: Any) -> TableShards | None:
    """The shards of a sharded item table (see :func:`_item_table`), else ``None``."""
    table = _item_table(item_embeddings)
    return table if isinstance(table, TableShards) else None


def _num_items(items: Any) -> Any:
    """``C`` of a table: static for a sharded one, an int32 scalar tensor otherwise."""
    if isinstance(items, TableShards):
        return items.num_items
    return tf.shape(items, out_type=tf.int32)[0]


def _excluded_ahead(queries, items, labels, target_scores, exclude):
    """How many distinct excluded items (not the label, in range) score >= the label's score."""
    exclude = tf.cast(tf.convert_to_tensor(exclude), tf.int32)
    num_items = _num_items(items)
    ordered = tf.sort(exclude, axis=1)
    repeated = tf.concat(
        [tf.zeros_like(ordered[:, :1], tf.bool), tf.equal(ordered[:, 1:], ordered[:, :-1])], axis=1
    )
    usable = (ordered >= 0) & (ordered < num_items) & ~repeated & (ordered != labels[:, None])
    safe = tf.where(usable, ordered, tf.zeros_like(ordered))
    rows = gather_rows(items, safe) if isinstance(items, TableShards) else tf.gather(items, safe)
    scores = tf.einsum("bd,bmd->bm", queries, tf.cast(rows, tf.float32))
    scores = _without_nan(scores)
    return tf.reduce_sum(tf.cast(usable & (scores >= target_scores[:, None]), tf.int32), axis=1)


def _check_sharded_queries(queries: tf.Tensor, table: TableShards) -> tf.Tensor:
    """:func:`check_queries_and_table` for a sharded table (its shape read off the shards)."""
    if queries.shape.rank is not None and queries.shape.rank != 2:
        raise ValueError(
            f"`queries` must have shape [B, d]. Received: queries.shape={queries.shape}"
        )
    if queries.shape[-1] is not None and table.dim is not None and queries.shape[-1] != table.dim:
        raise ValueError(
            "`queries` and `item_embeddings` must have the same last dimension d. Received: "
            f"queries.shape={queries.shape}, item_embeddings.shape=({table.num_items}, {table.dim})"
        )
    return queries


def _validated(queries, item_embeddings, labels, chunk_size):
    chunk_size = check_int("chunk_size", chunk_size, 1)
    for name, value in (("queries", queries), ("item_embeddings", item_embeddings)):
        if value is None:
            raise TypeError(f"`{name}` must be a float tensor. Received: {name}=None")
    table = _item_table(item_embeddings)
    queries = tf.cast(tf.convert_to_tensor(queries), tf.float32)
    if isinstance(table, TableShards):
        queries, item_embeddings = _check_sharded_queries(queries, table), table
    else:
        queries, item_embeddings = check_queries_and_table(queries, table, query_rank=2)
    labels = tf.cast(integer_labels(labels, "labels"), tf.int32)
    if labels.shape.rank is not None and labels.shape.rank == 2 and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, -1)
    if not labels.shape.is_compatible_with(queries.shape[:1]):
        raise ValueError(
            "`labels` must have shape [B], one per query. "
            f"Received: labels.shape={labels.shape}, queries.shape={queries.shape}"
        )
    num_items = _num_items(item_embeddings)
    if tf.executing_eagerly():
        values = labels.numpy()
        bad = values[(values < 0) | (values >= int(num_items))]
        if bad.size:
            raise ValueError(
                f"`labels` must be item indices in [0, {int(num_items)}). "
                f"Received: labels containing {int(bad[0])}"
            )
    else:
        message = "`labels` must be item indices in [0, num_items)"
        checks = [
            tf.debugging.assert_non_negative(labels, message=message),
            tf.debugging.assert_less(labels, num_items, message=message),
        ]
        with tf.control_dependencies(checks):  # before any gather of a label
            labels = tf.identity(labels)
    return queries, item_embeddings, labels, chunk_size


def _sharded_count_ahead(queries, table, labels, targets, chunk_size):
    """:func:`_count_ahead` shard by shard, each on its shard's device; the counts summed (exact)."""
    counts = []
    for part, offset in table.parts:
        with on_device_of(part):
            # Read where the shard lives (``read_value`` keeps the device scope, a conversion
            # does not), counted there: only [B] counts travel.
            rows = (
                part.read_value() if isinstance(part, tf.Variable) else tf.convert_to_tensor(part)
            )
            # Shard-local labels: a label outside this shard matches none of its rows.
            counts.append(_count_ahead(queries, rows, labels - offset, targets, chunk_size))
    return tf.add_n(counts)


def _ranks(queries, item_embeddings, labels, exclude, chunk_size):
    """Ranks ``[B]`` int32 of validated inputs; ``C`` where the true item scores NaN."""
    num_items = _num_items(item_embeddings)
    if isinstance(item_embeddings, TableShards):
        rows = gather_rows(item_embeddings, labels)
    else:
        rows = tf.gather(item_embeddings, labels)
    targets = tf.reduce_sum(queries * tf.cast(rows, tf.float32), 1)
    target_is_nan = tf.math.is_nan(targets)
    targets = _without_nan(targets)
    if isinstance(item_embeddings, TableShards):
        ranks = _sharded_count_ahead(queries, item_embeddings, labels, targets, chunk_size)
    else:
        ranks = _count_ahead(queries, item_embeddings, labels, targets, chunk_size)
    if exclude is not None:
        ranks -= _excluded_ahead(queries, item_embeddings, labels, targets, exclude)
    return tf.where(target_is_nan, num_items, ranks)


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

        \\mathrm{rank}_i = \\big|\\{\\, j \\ne y_i,\\ j \\notin E_i : s_{ij} \\ge s_{i y_i} \\,\\}\\big|,
        \\qquad s_{ij} = x_i^\\top w_j \\ (-\\infty \\text{ if NaN})

    Ties count against the true item (a model that scores everything alike ranks it last, not
    first). A NaN score counts as ``-inf``: a NaN item never ranks above a finite one, and a true
    item that scores NaN (a NaN query or a NaN row) gets rank ``C``, after every item. Items are scored ``chunk_size`` at a
    time in one XLA loop, so at most ``[B, chunk_size]`` scores exist, whatever the catalog size.

    Args:
        queries: float ``[B, d]``.
        item_embeddings: float ``[C, d]``, a built ``Embedding`` layer, or a sharded table (a
            ``ShardedVariable``, a list of shard variables, an ``Embedding`` layer holding one),
            ranked shard by shard on each shard's device without concatenating it.
        labels: integer ``[B]`` in ``[0, C)``: the true items (floats only with whole values).
        exclude: optional integer ``[B, M]``: items not to rank for each query (e.g. the items of
            its history, as the usual "filter seen items" protocol does). Entries outside ``[0, C)``
            (padding), repeats and the true item itself are ignored.
        chunk_size: int ``>= 1``. Items scored per step.

    Returns:
        int32 ``[B]``: in ``[0, C - 1]``, or ``C`` where the true item scores NaN.

    Raises:
        TypeError: for ``None`` inputs, non-integer labels or a non-integer ``chunk_size``.
        ValueError: for mismatched shapes, non-integral float labels, labels outside ``[0, C)``
            (eagerly; an ``InvalidArgumentError`` inside a ``tf.function``) or ``chunk_size < 1``.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.metrics.ranking import catalog_rank
    >>> catalog_rank(tf.constant([[1.0, 0.0]]), tf.constant([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0]]),
    ...              tf.constant([2])).numpy()
    array([1], dtype=int32)
    >>> shards = [tf.Variable([[0.0, 1.0]]), tf.Variable([[2.0, 0.0], [1.0, 0.0]])]  # the same table
    >>> table = tf.__internal__.distribute.ShardedVariable(shards)
    >>> catalog_rank(tf.constant([[1.0, 0.0]]), table, tf.constant([2])).numpy()
    array([1], dtype=int32)
    """
    queries, item_embeddings, labels, chunk_size = _validated(
        queries, item_embeddings, labels, chunk_size
    )
    return _ranks(queries, item_embeddings, labels, exclude, chunk_size)


@register_serializable
def hit_rate_and_ndcg(ranks: Any, k: int, num_items: Any = None) -> tuple[tf.Tensor, tf.Tensor]:
    """HR@k and NDCG@k ``[B]`` float32 of the 0-based ranks ``[B]`` of :func:`catalog_rank`.

    .. math::

        \\mathrm{HR@}k_i = [r_i < k], \\qquad \\mathrm{NDCG@}k_i = \\frac{[r_i < k]}{\\log_2(r_i + 2)}

    With ``num_items`` (``C``), a rank ``>= C`` -- :func:`catalog_rank`'s rank of a true item that
    scores NaN -- is a miss whatever ``k``.

    Args:
        ranks: integer ``[B]``.
        k: int ``>= 1``. The cut-off.
        num_items: optional int or scalar tensor ``C``.

    Returns:
        ``(hit_rate, ndcg)``, float32 ``[B]`` each.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.metrics.ranking import hit_rate_and_ndcg
    >>> hit, ndcg = hit_rate_and_ndcg(tf.constant([0, 1, 5]), k=2)
    >>> hit.numpy().tolist(), [round(float(value), 3) for value in ndcg]
    ([1.0, 1.0, 0.0], [1.0, 0.631, 0.0])
    """
    k = check_int("k", k, 1)
    ranks = tf.convert_to_tensor(ranks)
    hit = ranks < k
    if num_items is not None:
        hit = tf.logical_and(hit, ranks < tf.cast(num_items, ranks.dtype))
    rank_f = tf.cast(ranks, tf.float32)
    ndcg = tf.where(hit, 1.0 / (tf.math.log(rank_f + 2.0) / tf.math.log(2.0)), 0.0)
    return tf.cast(hit, tf.float32), ndcg


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
    McAuley 2018; Mezentsev et al. 2024). A query whose true item scores NaN (a NaN query or item
    row) is a miss, HR and NDCG 0, whatever ``k``; NaN scores of other items never rank above it.

    Args:
        queries: float ``[B, d]``.
        item_embeddings: float ``[C, d]``, or a sharded table (see :func:`catalog_rank`).
        labels: integer ``[B]``.
        k: int ``>= 1``. The cut-off.
        exclude: optional ``[B, M]`` items not to rank (see :func:`catalog_rank`).
        chunk_size: int. Items scored per step.

    Returns:
        A dict of float32 ``[B]`` tensors: ``"hit_rate"``, ``"ndcg"``, and int32 ``"rank"``.

    Raises:
        TypeError / ValueError: as :func:`catalog_rank`, and for ``k`` not an integer ``>= 1``.

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
    k = check_int("k", k, 1)
    queries, item_embeddings, labels, chunk_size = _validated(
        queries, item_embeddings, labels, chunk_size
    )
    ranks = _ranks(queries, item_embeddings, labels, exclude, chunk_size)
    hit, ndcg = hit_rate_and_ndcg(ranks, k, _num_items(item_embeddings))
    return {"hit_rate": hit, "ndcg": ndcg, "rank": ranks}
