"""Helpers shared by the catalog losses: validation, labels, flattening, dtypes, seeds, NaN rule.

Nothing here is public. The losses take queries ``[..., d]``, an item table ``[C, d]`` and integer
labels ``[...]``; :func:`prepare` checks them (statically where shapes are known, on values where they
are available) and flattens them to ``[N, d]`` / ``[N]``.

Labels are checked three ways, depending on where the loss runs:

- eagerly: the values are at hand, so an out-of-range label raises ``ValueError`` naming it;
- inside a ``tf.function``: a ``tf.debugging`` assertion raises ``InvalidArgumentError`` with the same
  message when the graph runs;
- inside XLA-compiled code (``jit_compile=True``; Keras 3 ``fit`` on a GPU), where TensorFlow drops
  assertions: an out-of-range label is treated as a masked position -- it is left out of the loss and
  gets no gradient. It can never index outside the table nor make the loss NaN.

Float labels (tf-keras ``fit`` hands integer labels over as float32) are accepted when every value is
a whole number; a non-integral one raises the same three ways (:func:`integer_labels`), never
truncated. Queries and item rows that are NaN or infinite make the loss of the queries that read them
NaN (:func:`poison_nonfinite`), so a loss is never finite while its gradients are not.

The item table may be sharded (a ``ShardedVariable``, a list of shard variables): :func:`prepare`
hands it on as a :class:`~tfsmooth.ops.TableShards` and the losses read it shard by shard
(``gather_rows``, per-shard kernels under ``on_device_of``), never concatenating it. Reading a
sharded table partitions the ids by shard (``tf.dynamic_partition``), which XLA cannot compile: a
step that uses one must not be ``jit_compile``-d as a whole (its own kernels still are).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth import _validation
from tfsmooth._validation import is_integer
from tfsmooth.ops.checks import check_queries_and_table, integer_labels
from tfsmooth.ops.chunks import row_block, split_chunks
from tfsmooth.ops.dtypes import compute_dtype
from tfsmooth.ops.shards import TableShards, all_finite, gather_rows, on_device_of, table_shards
from tfsmooth.ops.top_k import running_top_k

# The chunk loops, the running top-k, the compute dtype, the label check and the shard helpers live
# in tfsmooth.ops; the losses use them from here.
__all__ = [
    "TableShards",
    "all_finite",
    "compute_dtype",
    "gather_rows",
    "integer_labels",
    "on_device_of",
    "row_block",
    "running_top_k",
    "split_chunks",
]

# ----------------------------------------------------------------------------------------------------
# Argument validation (the scalar checks live in tfsmooth._validation).


def check_seed(value: Any) -> int | tf.Tensor | None:
    """``None``, an int ``>= 0`` (an op-level seed) or a pair of ints (a stateless seed, ``[2]``)."""
    if value is None or is_integer(value):
        return _validation.check_seed("seed", value)
    if isinstance(value, (tuple, list, np.ndarray, tf.Tensor, tf.Variable)):
        seed = tf.convert_to_tensor(value)
        if seed.dtype.is_integer and seed.shape.rank == 1 and seed.shape[0] == 2:
            return tf.cast(seed, tf.int64)
    raise TypeError(
        "`seed` must be None, an int (an op-level seed: a fresh, reproducible draw at every call) "
        "or a pair of ints (a stateless seed: the same draw for the same pair). "
        f"Received: seed={value!r}"
    )


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
) -> tuple[tf.Tensor, TableShards, tf.Tensor, tf.Tensor]:
    """Validates and flattens the inputs of a catalog loss.

    Returns ``(queries [N, d], table, safe_labels [N] int32, valid [N] bool)``. ``table`` is the item
    table as a :class:`~tfsmooth.ops.TableShards`: an unsharded table is one part, the tensor
    ``tf.convert_to_tensor(item_embeddings)``; a sharded one (a ``ShardedVariable``, a list of shard
    variables) keeps its shard variables, never concatenated. ``valid`` is the mask (all True
    without one) and-ed with the in-range test of the labels; ``safe_labels`` has out-of-range or
    masked labels replaced by 0 so they can be gathered.
    """
    for name, value in (("queries", queries), ("item_embeddings", item_embeddings)):
        if value is None:
            raise TypeError(f"`{caller}` needs floating-point `{name}`. Received: {name}=None")
    queries = tf.convert_to_tensor(queries)
    table = table_shards(item_embeddings)
    if not table.sharded:
        item_embeddings = tf.convert_to_tensor(table.parts[0][0])
    labels = integer_labels(labels)
    for name, dtype in (("queries", queries.dtype), ("item_embeddings", table.dtype)):
        if not dtype.is_floating:
            raise TypeError(
                f"`{caller}` needs floating-point `{name}`. Received: {name}.dtype={dtype.name}"
            )
    if table.sharded:
        queries = _check_queries_for_shards(queries, table)
        static_items = table.num_items
        num_items = tf.constant(table.num_items, tf.int32)
    else:
        queries, item_embeddings = check_queries_and_table(queries, item_embeddings)
        table = TableShards(((item_embeddings, 0),), *table[1:])
        static_items = item_embeddings.shape[0]
        num_items = tf.shape(item_embeddings, out_type=tf.int32)[0]
    if static_items == 0:
        raise ValueError(
            f"`item_embeddings` must hold at least one item. Received: shape={_shape_of(table)}"
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

    dq = queries.shape[-1]
    d = dq if dq is not None else tf.shape(queries)[-1]
    flat_queries = tf.reshape(queries, [-1, d])
    flat_labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    _check_label_values(flat_labels, valid, static_items, num_items)
    in_range = tf.logical_and(flat_labels >= 0, flat_labels < num_items)
    valid = in_range if valid is None else tf.logical_and(valid, in_range)
    safe_labels = tf.where(valid, flat_labels, tf.zeros_like(flat_labels))
    return flat_queries, table, safe_labels, valid


def _check_queries_for_shards(queries: tf.Tensor, table: TableShards) -> tf.Tensor:
    """``check_queries_and_table`` for a sharded table (its shards are 2-D; never concatenated)."""
    rank = queries.shape.rank
    if rank is not None and rank < 2:
        raise ValueError(
            f"`queries` must have shape [..., d] (at least 2-D). Received: queries.shape={queries.shape}"
        )
    dq = queries.shape[-1] if rank is not None else None
    if dq is not None and table.dim is not None and dq != table.dim:
        raise ValueError(
            "`queries` and `item_embeddings` must have the same last dimension d. "
            f"Received: queries.shape={queries.shape}, item_embeddings.shape={_shape_of(table)}"
        )
    return queries


def _shape_of(table: TableShards) -> tf.TensorShape:
    """The static ``[C, d]`` shape of a table, for error messages."""
    if not table.sharded:
        return table.parts[0][0].shape
    return tf.TensorShape([table.num_items, table.dim])


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


def finite_rows(tensor: tf.Tensor) -> tf.Tensor:
    """``[R]`` bool: whether every entry of each row of ``tensor [R, d]`` is finite."""
    return tf.reduce_all(tf.math.is_finite(tensor), axis=1)


def poison_nonfinite(losses: tf.Tensor, valid: tf.Tensor, finite: tf.Tensor) -> tf.Tensor:
    """``losses`` with NaN at the valid queries whose inputs are not all ``finite``.

    The catalog losses' rule for NaN/Inf: a query that counts and reads a non-finite value (its own
    embedding, or an item row the loss reads) has a NaN loss, whatever the arithmetic would have made
    of it (an item row of -inf can give a finite loss with NaN gradients). The NaN is a constant:
    it adds nothing to the gradients, which are those of the arithmetic.
    """
    bad = tf.logical_and(valid, tf.logical_not(finite))
    return tf.where(bad, tf.constant(np.nan, losses.dtype), losses)


def masked_mean(values: tf.Tensor, counted: tf.Tensor) -> tf.Tensor:
    """Mean of ``values`` where ``counted``; 0 (not NaN) when nothing counts."""
    counted_f = tf.cast(counted, values.dtype)
    total = tf.reduce_sum(tf.where(counted, values, tf.zeros_like(values)))
    return total / tf.maximum(tf.reduce_sum(counted_f), 1.0)
