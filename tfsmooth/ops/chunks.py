"""Chunk loops over a long axis with static chunk shapes.

``R`` rows are visited as ``steps`` full chunks of exactly ``size`` rows inside a while loop, then
one tail block of ``tail`` rows (possibly empty). Every slice has a static shape -- XLA needs that --
and no chunk overlaps another, so nothing has to be masked.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["row_block", "split_chunks"]


def split_chunks(rows: tf.Tensor, chunk: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Splits ``rows`` into ``steps`` chunks of ``size <= chunk`` rows plus a ``tail < steps`` rows.

    The rows are split as evenly as chunks of at most ``chunk`` allow, so the tail block (which XLA
    gives a buffer of its own) stays tiny instead of being up to a whole chunk.

    Args:
        rows: int32 scalar tensor, the length of the axis (``>= 0``).
        chunk: the largest chunk, ``>= 1``.

    Returns:
        ``(size, steps, tail)`` int32 scalars with ``steps * size + tail == rows`` (no rows: one
        empty tail block, no chunk).

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.ops.chunks import split_chunks
    >>> [int(v) for v in split_chunks(tf.constant(10), 4)]
    [3, 3, 1]
    """
    some = tf.maximum(rows, 1)
    pieces = (some + chunk - 1) // chunk
    # No rows: size 0 and no chunk (XLA checks the slices of a loop body even when it never runs,
    # so a chunk of 1 row of an empty axis fails to compile).
    size = tf.minimum(some // pieces, rows)
    steps = rows // tf.maximum(size, 1)
    return size, steps, rows - steps * size


def row_block(rows: tf.Tensor, start: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """``rows[start:start + size]`` of a matrix, with explicit sizes.

    A size of -1 would make XLA pad the operand to twice its size to keep a dynamic slice in bounds
    (a full copy of an item table); explicit sizes avoid it.

    Args:
        rows: a ``[R, d]`` tensor.
        start: int32 scalar, the first row.
        size: int32 scalar, how many rows.

    Returns:
        The ``[size, d]`` block.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.ops.chunks import row_block
    >>> row_block(tf.reshape(tf.range(8), [4, 2]), tf.constant(1), tf.constant(2)).numpy()
    array([[2, 3],
           [4, 5]], dtype=int32)
    """
    return tf.slice(rows, tf.stack([start, 0]), tf.stack([size, tf.shape(rows)[1]]))
