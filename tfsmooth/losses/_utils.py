"""Helpers shared by the catalog losses: validation, flattening, dtypes, seeds, chunked top-k.

Nothing here is public. The losses take queries ``[..., d]``, an item table ``[C, d]`` and integer
labels ``[...]``; :func:`prepare` checks them (statically where shapes are known, on values where they
are available) and flattens them to ``[N, d]`` / ``[N]``.

Labels are checked three ways, depending on where the loss runs:

- eagerly: the values are at hand, so an out-of-range label raises ``ValueError`` naming it;
- inside a ``tf.function``: a ``tf.debugging`` assertion raises ``InvalidArgumentError`` with the same
  message when the graph runs;
- inside XLA-compiled code (``jit_compile=True``, Keras 3 ``fit``), where TensorFlow drops assertions:
  an out-of-range label is treated as a masked position -- it is left out of the loss and gets no
  gradient. It can never index outside the table nor make the loss NaN.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import tensorflow as tf

_HALF_TYPES = (tf.float16, tf.bfloat16)


# ----------------------------------------------------------------------------------------------------
# Argument validation.


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    """Returns ``value`` as an ``int >= 1`` (or None when allowed); raises naming the argument."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1. Received: {name}={value!r}")
    return int(value)


def check_positive_float(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def check_seed(value: Any) -> int | tf.Tensor | None:
    """``None``, a Python int (an op-level seed) or a pair of ints (a stateless seed, ``[2]``)."""
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (tuple, list, np.ndarray, tf.Tensor, tf.Variable)):
        seed = tf.convert_to_tensor(value)
        if seed.dtype.is_integer and seed.shape.rank == 1 and seed.shape[0] == 2:
            return tf.cast(seed, tf.int64)
    raise TypeError(
        "`seed` must be None, an int (an op-level seed: a fresh, reproducible draw at every call) "
        "or a pair of ints (a stateless seed: the same draw for the same pair). "
        f"Received: seed={value!r}"
    )


def compute_dtype(dtype: tf.DType) -> tf.DType:
    """float16/bfloat16 are computed in float32; float32/float64 in themselves."""
    return tf.float32 if dtype in _HALF_TYPES else dtype


# ----------------------------------------------------------------------------------------------------
# Inputs.


def _static_list(shape: tf.TensorShape) -> list:
    return shape.as_list() if shape.rank is not None else None


def _drop_unit_axis(tensor: tf.Tensor, lead: tf.TensorShape) -> tf.Tensor:
    """``[..., 1]`` -> ``[...]`` when ``lead`` is ``[...]``: Keras passes labels and masks so."""
    rank = tensor.shape.rank
    unit_axis = rank is not None and lead.rank is not None and rank == lead.rank + 1
    return tf.squeeze(tensor, -1) if unit_axis and tensor.shape[-1] == 1 else tensor


def prepare(
    queries: Any,
    item_embeddings: Any,
    labels: Any,
    mask: Any,
    caller: str,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Validates and flattens the inputs of a catalog loss.

    Returns ``(queries [N, d], item_embeddings [C, d], safe_labels [N] int32, valid [N] bool)``.
    ``valid`` is the mask (all True without one) and-ed with the in-range test of the labels;
    ``safe_labels`` has out-of-range or masked labels replaced by 0 so they can be gathered.
    """
    queries = tf.convert_to_tensor(queries)
    item_embeddings = tf.convert_to_tensor(item_embeddings)
    labels = tf.convert_to_tensor(labels)
    for name, tensor in (("queries", queries), ("item_embeddings", item_embeddings)):
        if not tensor.dtype.is_floating:
            raise TypeError(
                f"`{caller}` needs floating-point `{name}`. Received: {name}.dtype={tensor.dtype.name}"
            )
    if not labels.dtype.is_integer:
        raise TypeError(
            f"`labels` must be integer item indices. Received: labels.dtype={labels.dtype.name}"
        )
    if queries.shape.rank is not None and queries.shape.rank < 2:
        raise ValueError(
            f"`queries` must have shape [..., d] (at least 2-D). Received: queries.shape={queries.shape}"
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
    if item_embeddings.shape[0] == 0:
        raise ValueError(
            f"`item_embeddings` must hold at least one item. Received: shape={item_embeddings.shape}"
        )
    lead = queries.shape[:-1]
    labels = _drop_unit_axis(labels, lead)
    if not labels.shape.is_compatible_with(lead):
        raise ValueError(
            "`labels` must have the shape of `queries` without its last axis. "
            f"Received: labels.shape={labels.shape}, queries.shape={queries.shape}"
        )
    valid = None
    if mask is not None:
        mask = _drop_unit_axis(tf.convert_to_tensor(mask), lead)
        if not mask.shape.is_compatible_with(lead):
            raise ValueError(
                "`mask` must have the shape of `labels`. "
                f"Received: mask.shape={mask.shape}, labels.shape={labels.shape}"
            )
        valid = tf.reshape(mask if mask.dtype == tf.bool else tf.not_equal(mask, 0), [-1])

    d = dq if dq is not None else tf.shape(queries)[-1]
    flat_queries = tf.reshape(queries, [-1, d])
    flat_labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    num_items = tf.shape(item_embeddings, out_type=tf.int32)[0]
    _check_label_values(flat_labels, valid, item_embeddings.shape[0], num_items)
    in_range = tf.logical_and(flat_labels >= 0, flat_labels < num_items)
    valid = in_range if valid is None else tf.logical_and(valid, in_range)
    safe_labels = tf.where(valid, flat_labels, tf.zeros_like(flat_labels))
    return flat_queries, item_embeddings, safe_labels, valid


def _check_label_values(labels, valid, static_items, num_items) -> None:
    """Raises for labels outside [0, num_items) at the positions that count (see module docs)."""
    if tf.executing_eagerly():
        values = labels.numpy()
        if valid is not None:
            values = values[valid.numpy()]
        bad = values[(values < 0) | (values >= int(num_items))]
        if bad.size:
            raise ValueError(
                f"`labels` must be item indices in [0, {int(num_items)}). "
                f"Received: labels containing {int(bad[0])}"
            )
        return
    checked = labels if valid is None else tf.where(valid, labels, tf.zeros_like(labels))
    message = f"`labels` must be item indices in [0, num_items={static_items}). Received labels:"
    tf.debugging.assert_non_negative(checked, message=message, summarize=5)
    tf.debugging.assert_less(checked, num_items, message=message, summarize=5)


def masked_mean(values: tf.Tensor, counted: tf.Tensor) -> tf.Tensor:
    """Mean of ``values`` where ``counted``; 0 (not NaN) when nothing counts."""
    counted_f = tf.cast(counted, values.dtype)
    total = tf.reduce_sum(tf.where(counted, values, tf.zeros_like(values)))
    return total / tf.maximum(tf.reduce_sum(counted_f), 1.0)


# ----------------------------------------------------------------------------------------------------
# Chunk loops over a long axis with static chunk shapes.
#
# ``R`` rows are visited as ``R // c`` full chunks of exactly ``c`` rows inside a while loop, then one
# tail block of ``R % c`` rows (possibly empty). Every slice has a static shape -- XLA needs that --
# and no chunk overlaps another, so nothing has to be masked.


def split_chunks(rows: tf.Tensor, chunk: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(size, steps, tail)``: ``steps`` chunks of ``size <= chunk`` rows and ``tail < steps`` rows.

    The rows are split as evenly as chunks of at most ``chunk`` allow, so the tail block (which XLA
    gives a buffer of its own) stays tiny instead of being up to a whole chunk.
    """
    rows = tf.maximum(rows, 1)
    pieces = (rows + chunk - 1) // chunk
    size = rows // pieces
    steps = rows // size
    return size, steps, rows - steps * size


def row_block(rows: tf.Tensor, start: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """``rows[start:start + size]`` with explicit sizes: a size of -1 would make XLA pad the operand
    to twice its size to keep a dynamic slice in bounds (a full copy of an item table)."""
    return tf.slice(rows, tf.stack([start, 0]), tf.stack([size, tf.shape(rows)[1]]))


def running_top_k(
    centres: tf.Tensor,
    rows: tf.Tensor,
    k: tf.Tensor,
    chunk: int,
    row_valid: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Top ``k`` rows by inner product with each centre, scanning ``rows`` chunk by chunk.

    Never holds more than ``[n_centres, k + chunk]`` scores. Invalid rows score ``-inf``. Returns
    ``(values [n_centres, k], indices [n_centres, k] int32)``, in no particular order. Meant to run
    inside an XLA kernel; ``k <= rows`` must hold (callers clip it).
    """
    dtype = centres.dtype
    total = tf.shape(rows, out_type=tf.int32)[0]
    size, steps, tail = split_chunks(total, chunk)
    n_centres = tf.shape(centres)[0]
    minus_inf = tf.constant(-np.inf, dtype)

    def merge(start, length, values, indices):
        block = tf.cast(row_block(rows, start, length), dtype)
        scores = tf.matmul(centres, block, transpose_b=True)
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
