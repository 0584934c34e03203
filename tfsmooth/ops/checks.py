"""Argument checks shared by the catalog losses, the ranking metrics, SASRec and CatalogRetrieval.

Everything that scores queries ``[..., d]`` against an item table ``[C, d]`` with integer labels
checks them here, so every caller raises the same error, with the same message, for the same fault:

- :func:`check_queries_and_table`: the ranks of the queries and of the table, and that their last
  dimension ``d`` agrees (statically, where the shapes are known).
- :func:`integer_labels`: labels as integers; whole-valued floats (tf-keras ``fit`` hands integer
  labels over as float32) are accepted, a non-integral one is never truncated.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfsmooth._validation import check_int

__all__ = ["check_queries_and_table", "integer_labels"]


def check_queries_and_table(
    queries: Any,
    item_embeddings: Any,
    *,
    query_rank: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Checks that ``queries [..., d]`` can be scored against the item table ``item_embeddings [C, d]``.

    Only what the static shapes tell is checked (a dimension unknown at trace time passes); the
    dtypes and what ``None`` means are the caller's business.

    Args:
        queries: the queries, a tensor (or anything ``tf.convert_to_tensor`` accepts) ``[..., d]``.
        item_embeddings: the item table ``[C, d]``.
        query_rank: ``None``: ``queries`` may have any rank ``>= 2`` (``[..., d]``); an int ``>= 2``:
            exactly that rank (``2``: ``[B, d]``).

    Returns:
        ``(queries, item_embeddings)`` as tensors.

    Raises:
        ValueError: ``queries`` of the wrong rank, ``item_embeddings`` not 2-D, or a last dimension
            ``d`` that differs between the two (the message names both shapes).
        TypeError: ``query_rank`` not ``None`` nor an integer.

    Example:

    >>> import numpy as np
    >>> from tfsmooth.ops.checks import check_queries_and_table
    >>> queries, table = check_queries_and_table(np.ones((2, 5, 4)), np.ones((10, 4)))
    >>> queries.shape.as_list(), table.shape.as_list()
    ([2, 5, 4], [10, 4])
    >>> check_queries_and_table(np.ones((2, 3)), np.ones((10, 4)), query_rank=2)
    Traceback (most recent call last):
    ...
    ValueError: `queries` and `item_embeddings` must have the same last dimension d. Received: \
queries.shape=(2, 3), item_embeddings.shape=(10, 4)
    """
    query_rank = check_int("query_rank", query_rank, 2, allow_none=True)
    queries = tf.convert_to_tensor(queries)
    item_embeddings = tf.convert_to_tensor(item_embeddings)
    rank = queries.shape.rank
    if query_rank is None and rank is not None and rank < 2:
        raise ValueError(
            f"`queries` must have shape [..., d] (at least 2-D). Received: queries.shape={queries.shape}"
        )
    if query_rank is not None and rank is not None and rank != query_rank:
        expected = "[B, d]" if query_rank == 2 else f"[..., d] with rank {query_rank}"
        raise ValueError(
            f"`queries` must have shape {expected}. Received: queries.shape={queries.shape}"
        )
    if item_embeddings.shape.rank is not None and item_embeddings.shape.rank != 2:
        raise ValueError(
            "`item_embeddings` must have shape [num_items, d]. "
            f"Received: item_embeddings.shape={item_embeddings.shape}"
        )
    dq, dw = queries.shape[-1], item_embeddings.shape[-1]
    if dq is not None and dw is not None and dq != dw:
        raise ValueError(
            "`queries` and `item_embeddings` must have the same last dimension d. "
            f"Received: queries.shape={queries.shape}, item_embeddings.shape={item_embeddings.shape}"
        )
    return queries, item_embeddings


def integer_labels(labels: Any, name: str = "labels") -> tf.Tensor:
    """``labels`` as an integer tensor; floating labels only if every value is a whole number.

    tf-keras ``fit`` hands integer labels over as float32, so floats cannot be refused outright;
    truncating 2.7 to 2 would be a silent error. A non-integral (or non-finite) float label raises
    ``ValueError`` naming ``name`` eagerly, fails a ``tf.debugging`` assertion with the same message
    inside a ``tf.function``, and inside XLA (which drops assertions) becomes ``-1``, an
    out-of-range label (the catalog losses leave it out of the loss).

    Args:
        labels: integer item indices, or floats holding whole numbers.
        name: the argument's name in error messages (``"labels"``, ``"y_true"``, ``"y"``).

    Returns:
        Integer labels as given (same dtype), or whole-valued float labels as ``int64``.

    Raises:
        TypeError: ``labels`` is ``None``, not convertible to a tensor, or neither integer nor
            floating.
        ValueError: eagerly, a float label that is not a whole finite number.

    Example:

    >>> from tfsmooth.ops.checks import integer_labels
    >>> integer_labels([3.0, 0.0, 7.0]).numpy().tolist()
    [3, 0, 7]
    >>> integer_labels([2.5], "y_true")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `y_true` must be integer item indices; ... Received: y_true containing ...2.5...
    """
    if labels is None:
        raise TypeError(f"`{name}` must be integer item indices. Received: {name}=None")
    try:
        labels = tf.convert_to_tensor(labels)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{name}` must be integer item indices. Received: {name}={labels!r}"
        ) from error
    if labels.dtype.is_integer:
        return labels
    if not labels.dtype.is_floating:
        raise TypeError(
            f"`{name}` must be integer item indices. Received: {name}.dtype={labels.dtype.name}"
        )
    whole = tf.logical_and(tf.math.is_finite(labels), tf.equal(labels, tf.math.floor(labels)))
    message = (
        f"`{name}` must be integer item indices; float {name} are accepted only with whole values "
        f"(as Keras hands them over), never truncated. Received: {name} containing"
    )
    if tf.executing_eagerly():
        bad = labels.numpy()[~whole.numpy()]
        if bad.size:
            raise ValueError(f"{message} {bad.ravel()[0]!r}")
    else:
        # Everything downstream waits for the check, so no gather of a bad label can fail first.
        check = tf.debugging.Assert(tf.reduce_all(whole), [message, labels], summarize=5)
        with tf.control_dependencies([check]):
            labels = tf.identity(labels)
    safe = tf.where(whole, labels, tf.constant(-1, labels.dtype))
    return tf.cast(safe, tf.int64)
