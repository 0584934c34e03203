"""Top-k by inner product over a catalog, one chunk of rows at a time.

- :func:`running_top_k`: the catalog losses' selection step (unordered, invalid rows at ``-inf``).
- :func:`exact_top_k`: what a retrieval server returns: the ``k`` best candidates per query, best
  first, without the candidates each query excludes, NaN scores ranked last.

Neither ever holds more than ``[queries, k + chunk]`` scores, so the catalog may be far larger than a
``[queries, catalog]`` score matrix would allow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth._validation import check_int
from tfsmooth.ops.chunks import row_block, split_chunks

__all__ = ["NO_ITEM", "exact_top_k", "running_top_k"]

#: The index :func:`exact_top_k` returns (with score ``-inf``) where fewer than ``k`` candidates
#: remain after the exclusions; also the padding value of ``exclude``.
NO_ITEM = -1


def running_top_k(
    centres: tf.Tensor,
    rows: tf.Tensor,
    k: tf.Tensor,
    chunk: int,
    row_valid: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Top ``k`` rows by inner product with each centre, scanning ``rows`` chunk by chunk.

    Never holds more than ``[n_centres, k + chunk]`` scores. Invalid rows score ``-inf``, and so do
    NaN scores: a NaN never ranks above a finite score (``tf.math.top_k`` alone would let it). Meant
    to run inside an XLA kernel; ``k <= rows`` must hold (callers clip it).

    Args:
        centres: float ``[n_centres, d]``.
        rows: ``[R, d]``, cast to the dtype of ``centres``.
        k: int32 scalar, ``1 <= k <= R``.
        chunk: rows scored at a time.
        row_valid: optional bool ``[R]``: rows that may be selected.

    Returns:
        ``(values [n_centres, k], indices [n_centres, k] int32)``, in no particular order.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.ops.top_k import running_top_k
    >>> values, indices = running_top_k(tf.constant([[1.0, 0.0]]),
    ...                                 tf.constant([[3.0, 0.0], [1.0, 0.0], [2.0, 0.0]]),
    ...                                 tf.constant(2), 2)
    >>> sorted(indices.numpy()[0].tolist())
    [0, 2]
    """
    dtype = centres.dtype
    total = tf.shape(rows, out_type=tf.int32)[0]
    size, steps, tail = split_chunks(total, chunk)
    n_centres = tf.shape(centres)[0]
    minus_inf = tf.constant(-np.inf, dtype)

    def merge(start, length, values, indices):
        block = tf.cast(row_block(rows, start, length), dtype)
        scores = tf.matmul(centres, block, transpose_b=True)
        scores = tf.where(tf.math.is_nan(scores), minus_inf, scores)
        if row_valid is not None:
            keep = tf.slice(row_valid, tf.reshape(start, [1]), tf.reshape(length, [1]))
            scores = tf.where(keep[None, :], scores, minus_inf)
        top_values, where = tf.math.top_k(tf.concat([values, scores], 1), k, sorted=False)
        # Positions < k are the running winners, the others are rows start + (position - k).
        carried = tf.gather(indices, tf.minimum(where, k - 1), batch_dims=1)
        return top_values, tf.where(where < k, carried, start + where - k)

    def body(i, values, indices):
        return (i + 1, *merge(i * size, size, values, indices))

    init_values = tf.fill(tf.stack([n_centres, k]), minus_inf)
    init_indices = tf.zeros(tf.stack([n_centres, k]), tf.int32)
    _, values, indices = tf.while_loop(
        lambda i, *_: i < steps,
        body,
        (tf.constant(0), init_values, init_indices),
        shape_invariants=(
            tf.TensorShape([]),
            tf.TensorShape([None, None]),
            tf.TensorShape([None, None]),
        ),
    )
    return merge(steps * size, tail, values, indices)


# ----------------------------------------------------------------------------------------------------
# Exact top-k with exclusions.
#
# Scores are ranked through integer keys that order every float, NaN included: the bits of a float
# read as a signed integer increase with the value for positive floats and decrease for negative
# ones, so flipping the magnitude bits of the negative ones gives a monotone key. NaN gets the key
# just above the smallest integer (below -inf) and a free slot the smallest one, so a free slot never
# beats a real candidate, and a NaN score never beats a number.


def _key_constants(dtype: tf.DType) -> tuple[tf.DType, int, int]:
    if dtype == tf.float64:
        return tf.int64, 0x7FFF_FFFF_FFFF_FFFF, -(2**63)
    return tf.int32, 0x7FFF_FFFF, -(2**31)


def _sort_keys(scores: tf.Tensor) -> tf.Tensor:
    int_type, flip, lowest = _key_constants(scores.dtype)
    bits = tf.bitcast(scores, int_type)
    keys = tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, tf.constant(flip, int_type)), bits)
    return tf.where(tf.math.is_nan(scores), tf.constant(lowest + 1, int_type), keys)


def _scores_of(keys: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    int_type, flip, lowest = _key_constants(dtype)
    bits = tf.where(keys < 0, tf.bitwise.bitwise_xor(keys, tf.constant(flip, int_type)), keys)
    scores = tf.bitcast(bits, dtype)
    scores = tf.where(keys == lowest + 1, tf.constant(np.nan, dtype), scores)
    return tf.where(keys == lowest, tf.constant(-np.inf, dtype), scores)


@tf.function(jit_compile=True)
def _exact_top_k(queries, candidates, k, exclude, chunk):
    """The XLA kernel of :func:`exact_top_k` (arguments already checked; ``k`` and ``chunk`` static)."""
    dtype = queries.dtype
    int_type, _, lowest = _key_constants(dtype)
    total = tf.shape(candidates, out_type=tf.int32)[0]
    # At most M candidates are excluded, so the best k that remain are among the best k + M.
    fetch = tf.minimum(k + tf.shape(exclude, out_type=tf.int32)[1], total)
    size, steps, tail = split_chunks(total, chunk)
    n_queries = tf.shape(queries)[0]

    def merge(start, length, keys, indices):
        block = tf.cast(row_block(candidates, start, length), dtype)
        chunk_keys = _sort_keys(tf.matmul(queries, block, transpose_b=True))
        top_keys, where = tf.math.top_k(tf.concat([keys, chunk_keys], 1), fetch, sorted=False)
        carried = tf.gather(indices, tf.minimum(where, fetch - 1), batch_dims=1)
        return top_keys, tf.where(where < fetch, carried, start + where - fetch)

    def body(i, keys, indices):
        return (i + 1, *merge(i * size, size, keys, indices))

    init_keys = tf.fill(tf.stack([n_queries, fetch]), tf.constant(lowest, int_type))
    init_indices = tf.fill(tf.stack([n_queries, fetch]), NO_ITEM)
    _, keys, indices = tf.while_loop(
        lambda i, *_: i < steps,
        body,
        (tf.constant(0), init_keys, init_indices),
        shape_invariants=(
            tf.TensorShape([]),
            tf.TensorShape([None, None]),
            tf.TensorShape([None, None]),
        ),
    )
    keys, indices = merge(steps * size, tail, keys, indices)
    exclude = tf.cast(exclude, tf.int32)
    counted = (exclude >= 0) & (exclude < total)
    hit = tf.equal(indices[:, :, None], exclude[:, None, :]) & counted[:, None, :]
    free = tf.constant(lowest, int_type)
    keys = tf.where(tf.reduce_any(hit, axis=2), free, keys)
    top_keys, order = tf.math.top_k(keys, k, sorted=True)
    top_indices = tf.where(top_keys == free, NO_ITEM, tf.gather(indices, order, batch_dims=1))
    return _scores_of(top_keys, dtype), top_indices


def exact_top_k(
    queries: Any,
    candidates: Any,
    k: int,
    *,
    exclude: Any = None,
    chunk_size: int = 65536,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The ``k`` candidates with the largest inner product per query, best first, exclusions left out.

    .. math::

        \\mathrm{top}_k(q_i) = \\operatorname{arg\\,top\\text{-}k}_{\\,j \\notin E_i}\\ q_i^\\top c_j

    Candidates are scored ``chunk_size`` at a time with a running top-``(k + M)`` in one XLA kernel
    (``M`` = columns of ``exclude``: at most ``M`` of the best ``k + M`` can be excluded), so no
    ``[queries, candidates]`` score matrix is ever held. The result is exact.

    - A NaN score ranks below every number, ``-inf`` included (a NaN never comes first).
    - Where fewer than ``k`` candidates remain, the free slots hold index :data:`NO_ITEM` (-1) and
      score ``-inf``, after every real candidate.
    - Ties between equal scores are broken arbitrarily.

    Args:
        queries: float ``[B, d]``.
        candidates: float ``[C, d]``. Computed in the dtype of ``queries`` (float16 and bfloat16 in
            float32).
        k: int. How many to return, ``1 <= k <= C``.
        exclude: optional integer ``[B, M]``: candidate indices each query must not get back.
            Entries outside ``[0, C)`` -- :data:`NO_ITEM` as padding -- and repeats are ignored.
        chunk_size: int ``>= 1``. Candidates scored at a time.

    Returns:
        ``(scores [B, k], indices [B, k] int32)``, best first.

    Raises:
        TypeError: ``k`` or ``chunk_size`` not an integer; non-float queries or candidates.
        ValueError: ``k`` out of ``[1, C]``, ``chunk_size < 1``, mismatched shapes.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.ops import exact_top_k
    >>> items = tf.constant([[3.0], [1.0], [2.0], [4.0]])
    >>> scores, indices = exact_top_k(tf.constant([[1.0]]), items, 3, exclude=[[3, -1]])
    >>> indices.numpy().tolist(), scores.numpy().tolist()
    ([[0, 2, 1]], [[3.0, 2.0, 1.0]])
    >>> exact_top_k(tf.constant([[1.0]]), items, 3, exclude=[[0, 1]])[1].numpy().tolist()
    [[3, 2, -1]]
    """
    queries = tf.convert_to_tensor(queries)
    candidates = tf.convert_to_tensor(candidates)
    for name, tensor in (("queries", queries), ("candidates", candidates)):
        if not tensor.dtype.is_floating:
            raise TypeError(
                f"`{name}` must be floating-point. Received: {name}.dtype={tensor.dtype.name}"
            )
    if queries.shape.rank != 2 or candidates.shape.rank != 2:
        raise ValueError(
            "`queries` must be [B, d] and `candidates` [C, d]. "
            f"Received: queries.shape={queries.shape}, candidates.shape={candidates.shape}"
        )
    if not queries.shape[1:].is_compatible_with(candidates.shape[1:]):
        raise ValueError(
            "`queries` and `candidates` must have the same last dimension d. "
            f"Received: queries.shape={queries.shape}, candidates.shape={candidates.shape}"
        )
    num_candidates = candidates.shape[0]
    k = check_int("k", k, 1, num_candidates)
    chunk = check_int("chunk_size", chunk_size, 1)
    if exclude is None:
        exclude = tf.zeros(tf.stack([tf.shape(queries)[0], 0]), tf.int32)
    exclude = tf.convert_to_tensor(exclude)
    if not exclude.dtype.is_integer or exclude.shape.rank != 2:
        raise ValueError(
            "`exclude` must be integer candidate indices [B, M]. "
            f"Received: exclude.shape={exclude.shape}, exclude.dtype={exclude.dtype.name}"
        )
    if not exclude.shape[:1].is_compatible_with(queries.shape[:1]):
        raise ValueError(
            "`exclude` must have one row per query. "
            f"Received: exclude.shape={exclude.shape}, queries.shape={queries.shape}"
        )
    tf.debugging.assert_equal(
        tf.shape(exclude)[0],
        tf.shape(queries)[0],
        message="`exclude` must have one row per query. Received rows of exclude, queries:",
    )
    dtype = tf.float32 if queries.dtype in (tf.float16, tf.bfloat16) else queries.dtype
    return _exact_top_k(
        tf.cast(queries, dtype),
        candidates,
        tf.constant(k),
        tf.cast(exclude, tf.int32),
        min(chunk, num_candidates or chunk),
    )
