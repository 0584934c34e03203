"""An item table split into row shards, read shard by shard where each shard lives.

Under ``tf.distribute`` parameter-server training a large table is a ``ShardedVariable``: row
shards on different parameter servers. Converting it to a tensor concatenates every shard on the
worker, so the catalog losses never do: they see the table through :func:`table_shards` and

- fetch the rows they need with :func:`gather_rows` (each shard gathers its own rows on its device;
  only the rows travel, and each shard gets a ``tf.IndexedSlices`` gradient with its local rows);
- run whole-table work (a maximum-inner-product search, a chunked log-sum-exp) once per shard
  under :func:`on_device_of`, so it runs where the shard lives and only small results travel;
- check the table with :func:`all_finite`, one reduction per shard;
- find the top rows by inner product with :func:`sharded_top_k`: a running top-k per shard on its
  device, merged by (score, index) as if the table were one.

An unsharded table is one part at offset 0, and every helper then does exactly what it did before
(``tf.gather``, one reduction).
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from tfsmooth._keras import keras, native_variable
from tfsmooth.ops.top_k import running_top_k

__all__ = [
    "TableShards",
    "all_finite",
    "gather_rows",
    "on_device_of",
    "sharded_top_k",
    "table_shards",
    "trainable_shards",
]


class TableShards(NamedTuple):
    """A logical ``[C, d]`` item table as row shards, in row order (what :func:`table_shards` returns).

    Attributes:
        parts: ``((part, first_row), ...)``: each shard (a variable, or for an unsharded table the
            table itself, a tensor or variable) with the global index of its first row.
        num_items: ``C``: a Python int when every shard's row count is static, else an int32
            scalar tensor.
        dim: ``d``, or ``None`` when unknown statically.
        dtype: the table's dtype.
        sharded: whether the table has more than one part (``len(parts) > 1``).

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.ops import table_shards
    >>> table = table_shards([tf.Variable(tf.zeros([3, 2])), tf.Variable(tf.ones([2, 2]))])
    >>> [offset for _, offset in table.parts], table.num_items, table.dim, table.sharded
    ([0, 3], 5, 2, True)
    """

    parts: tuple[tuple[Any, int], ...]
    num_items: Any
    dim: int | None
    dtype: tf.DType
    sharded: bool


def _is_variable(value: Any) -> bool:
    return isinstance(value, tf.Variable)


def _shape_text(shape: Any) -> str:
    return str(tuple(shape.as_list())) if shape.rank is not None else "<unknown>"


def _shard_list(value: Any) -> list | None:
    """The shard variables of a sharded table, or ``None`` for anything else."""
    if getattr(value, "is_sharded_variable", False):
        return list(value.variables)
    if isinstance(value, (list, tuple)) and value:
        shards = [native_variable(v) for v in value]
        if all(_is_variable(v) and v.shape.rank == 2 for v in shards):
            return shards
    return None


def _from_shards(shards: list, name: str) -> TableShards:
    dtypes = {v.dtype for v in shards}
    if len(dtypes) > 1:
        raise ValueError(
            f"The shards of `{name}` must share one dtype. "
            f"Received: {name} with shard dtypes {[v.dtype.name for v in shards]}"
        )
    shapes = [v.shape for v in shards]
    if any(s.rank != 2 for s in shapes):
        raise ValueError(
            f"`{name}` must have shape [num_items, d]: every shard 2-D. "
            f"Received: {name} with shard shapes {[_shape_text(s) for s in shapes]}"
        )
    dims = {s[1] for s in shapes if s[1] is not None}
    rows = [s[0] for s in shapes]
    if len(dims) > 1 or any(r is None for r in rows):
        raise ValueError(
            f"The shards of `{name}` must have static row counts and the same last dimension d. "
            f"Received: {name} with shard shapes {[_shape_text(s) for s in shapes]}"
        )
    offsets = np.concatenate([[0], np.cumsum(rows)]).astype(int).tolist()
    parts = tuple((v, offsets[i]) for i, v in enumerate(shards))
    dim = dims.pop() if dims else None
    return TableShards(parts, offsets[-1], dim, shards[0].dtype, len(parts) > 1)


def _table_shards(item_embeddings: Any, name: str) -> TableShards:
    if isinstance(item_embeddings, TableShards):
        return item_embeddings
    value = item_embeddings
    if value is None:
        raise TypeError(f"`{name}` must be an item table [num_items, d]. Received: {name}=None")
    if isinstance(value, keras.layers.Layer):
        table = getattr(value, "embeddings", None)
        if table is None:
            raise ValueError(
                f"`{name}` must be a built Embedding layer, a variable or a tensor "
                f"[num_items, d]: call the layer once (or `build` it) first. Received: {name}={value!r}"
            )
        value = table
    value = native_variable(value)
    shards = _shard_list(value)
    if shards is not None:
        return _from_shards(shards, name)
    if not _is_variable(value):
        try:
            value = tf.convert_to_tensor(value)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"`{name}` must be an item table [num_items, d] (a variable, a tensor, a sharded "
                f"variable or a list of shard variables). Received: {name}={item_embeddings!r}"
            ) from error
    shape = value.shape
    if shape.rank is not None and shape.rank != 2:
        raise ValueError(f"`{name}` must have shape [num_items, d]. Received: {name}.shape={shape}")
    rows = shape[0] if shape.rank is not None else None
    num_items = rows if rows is not None else tf.shape(value, out_type=tf.int32)[0]
    dim = shape[1] if shape.rank is not None else None
    return TableShards(((value, 0),), num_items, dim, value.dtype, False)


def table_shards(item_embeddings: Any) -> TableShards:
    """The item table ``item_embeddings`` as row shards with their offsets, never concatenated.

    Recognises:

    - a ``ShardedVariable`` (what ``tf.distribute`` parameter-server training creates under a
      ``variable_partitioner``): its shard variables, at the offsets of their row counts (any sizes);
    - a Keras ``Embedding`` layer (either flavour, built): its ``embeddings``, sharded or not;
    - a Keras 3 ``Variable``: the ``tf.Variable`` (or ``ShardedVariable``) it wraps;
    - a non-empty list or tuple of 2-D variables: those shards, in order;
    - anything else (a variable, a tensor, an array): one part at offset 0, converted to a tensor
      unless it is a variable.

    Args:
        item_embeddings: the ``[C, d]`` table in one of the forms above (a :class:`TableShards` is
            returned as is).

    Returns:
        A :class:`TableShards`.

    Raises:
        TypeError: ``item_embeddings`` is ``None`` or not convertible to a tensor.
        ValueError: not 2-D, shards of different dtypes or last dimensions, or an unbuilt layer.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.ops import table_shards
    >>> shards = [tf.Variable(tf.zeros([3, 4])), tf.Variable(tf.zeros([2, 4]))]
    >>> table = table_shards(tf.__internal__.distribute.ShardedVariable(shards))
    >>> [offset for _, offset in table.parts], table.num_items, table.sharded
    ([0, 3], 5, True)
    >>> table_shards(tf.zeros([7, 4])).sharded
    False
    """
    return _table_shards(item_embeddings, "item_embeddings")


def on_device_of(part: Any) -> Any:
    """A context placing ops on the device of ``part`` (a shard); a no-op when it has none.

    Inside a ``tf.function`` scheduled on a worker, ops that read a parameter server's variable run
    on the worker unless placed: work on a whole shard (a top-k scan, a chunked log-sum-exp) goes
    under this context, so it runs where the shard lives and only its result travels.

    Args:
        part: a variable or tensor (a part of :class:`TableShards`); anything without a
            ``device`` (or with an empty one) gives a context that does nothing.

    Returns:
        A context manager: ``tf.device(part.device)`` or a null context.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.ops import on_device_of
    >>> shard = tf.Variable(tf.ones([3, 2]))
    >>> with on_device_of(shard):
    ...     total = tf.reduce_sum(shard)
    >>> float(total)
    6.0
    """
    device = getattr(part, "device", "")
    return tf.device(device) if isinstance(device, str) and device else contextlib.nullcontext()


def _gather(table: TableShards, ids: tf.Tensor) -> tf.Tensor:
    """:func:`gather_rows` without the argument checks (``ids`` integer and in range)."""
    if not table.sharded:
        return tf.gather(table.parts[0][0], ids)
    flat = tf.reshape(ids, [-1])
    starts = [offset for _, offset in table.parts]
    # The shard of each id: how many shard starts (after the first) it has reached.
    owner = tf.zeros_like(flat, tf.int32)
    for start in starts[1:]:
        owner += tf.cast(flat >= start, tf.int32)
    n = len(table.parts)
    positions = tf.dynamic_partition(tf.range(tf.size(flat)), owner, n)
    local = tf.dynamic_partition(flat - tf.gather(tf.constant(starts, flat.dtype), owner), owner, n)
    rows = []
    for (part, _), shard_ids in zip(table.parts, local):
        with on_device_of(part):
            rows.append(tf.gather(part, shard_ids))
    stitched = tf.dynamic_stitch(positions, rows)
    dim = table.dim if table.dim is not None else tf.shape(stitched)[1]
    result = tf.reshape(stitched, tf.concat([tf.shape(ids), [dim]], 0))
    if table.dim is not None:
        result.set_shape(ids.shape.concatenate([table.dim]))
    return result


def gather_rows(table: Any, ids: Any) -> tf.Tensor:
    """Rows ``ids`` of an item table, in ``ids`` order, each shard gathering its own rows on its device.

    For a sharded table the ids are split by shard, each shard gathers its rows (a ``ResourceGather``
    on the shard's device) and the rows are stitched back in ``ids`` order: the table is never
    concatenated, and the gradient of each shard is a ``tf.IndexedSlices`` of its local rows. For an
    unsharded table this is ``tf.gather(table, ids)``. The ids are split with
    ``tf.dynamic_partition``, which XLA cannot compile: with a sharded table, call it outside
    ``jit_compile`` functions (as parameter-server training does).

    Args:
        table: the item table in any form :func:`table_shards` accepts, or a :class:`TableShards`.
        ids: integer row indices of any shape, in ``[0, C)``.

    Returns:
        ``[*ids.shape, d]``: the rows, in the table's dtype.

    Raises:
        TypeError: ``ids`` not integer; ``table`` not a table (see :func:`table_shards`).
        ValueError: eagerly, ``ids`` outside ``[0, C)`` (inside a ``tf.function`` on CPU the gather
            fails with ``InvalidArgumentError``; on a GPU it gives zeros).

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.ops import gather_rows
    >>> shards = [tf.Variable([[0.0], [1.0], [2.0]]), tf.Variable([[3.0], [4.0]])]
    >>> table = tf.__internal__.distribute.ShardedVariable(shards)
    >>> gather_rows(table, [4, 0, 3, 1]).numpy().ravel().tolist()
    [4.0, 0.0, 3.0, 1.0]
    """
    table = _table_shards(table, "table")
    try:
        ids = tf.convert_to_tensor(ids)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`ids` must be integer row indices. Received: ids={ids!r}") from error
    if not ids.dtype.is_integer:
        raise TypeError(f"`ids` must be integer row indices. Received: ids.dtype={ids.dtype.name}")
    if tf.executing_eagerly():
        values = ids.numpy()
        limit = int(table.num_items)
        bad = values[(values < 0) | (values >= limit)]
        if bad.size:
            raise ValueError(
                f"`ids` must be row indices in [0, {limit}). Received: ids containing {int(bad[0])}"
            )
    return _gather(table, ids)


def all_finite(table: Any) -> tf.Tensor:
    """Whether every entry of the item table is finite: one reduction per shard, on its device.

    Args:
        table: the item table in any form :func:`table_shards` accepts, or a :class:`TableShards`.

    Returns:
        A bool scalar tensor.

    Raises:
        TypeError / ValueError: ``table`` not a table (see :func:`table_shards`).

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> from tfsmooth.ops import all_finite
    >>> shards = [tf.Variable([[0.0, 1.0]]), tf.Variable([[np.inf, 2.0]])]
    >>> bool(all_finite(tf.__internal__.distribute.ShardedVariable(shards)))
    False
    """
    table = _table_shards(table, "table")
    if not table.sharded:
        return tf.reduce_all(tf.math.is_finite(table.parts[0][0]))
    checks = []
    for part, _ in table.parts:
        with on_device_of(part):
            checks.append(tf.reduce_all(tf.math.is_finite(part)))
    return tf.reduce_all(tf.stack(checks))


_shard_top_k = tf.function(running_top_k, jit_compile=True)


def sharded_top_k(
    centres: tf.Tensor, table: TableShards, k: Any, chunk: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Top ``k`` rows of a (sharded) table by inner product with each centre, best first.

    Each shard runs :func:`~tfsmooth.ops.top_k.running_top_k` (one XLA kernel) on its own device:
    only the centres travel there and ``[n_centres, min(k, R_s)]`` scores and indices come back.
    The indices are made global and the candidates merged by (score descending, index ascending).
    That is the order a running top-k over the whole table yields (``tf.math.top_k`` puts the
    lower position first among equal scores, and a chunk's rows come after the lower-indexed
    winners carried from earlier chunks), so the rows and their order are those of the unsharded
    table whenever each score is computed alike. NaN scores count as ``-inf``; where fewer than
    ``k`` scores of a shard are finite its free slots hold ``-inf`` and the shard's first index.

    Args:
        centres: float ``[n_centres, d]``.
        table: a :class:`TableShards` (see :func:`table_shards`); its rows are cast to the
            centres' dtype.
        k: int or int32 scalar, ``1 <= k <= C``.
        chunk: rows scored at a time within a shard.

    Returns:
        ``(scores [n_centres, k], indices [n_centres, k] int32)``, by score descending, equal
        scores by index ascending.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.ops.shards import sharded_top_k, table_shards
    >>> shards = [tf.Variable([[1.0], [3.0], [2.0]]), tf.Variable([[3.0], [0.0]])]
    >>> scores, indices = sharded_top_k(tf.constant([[1.0]]), table_shards(shards), 3, 2)
    >>> indices.numpy().tolist(), scores.numpy().tolist()
    ([[1, 3, 2]], [[3.0, 3.0, 2.0]])
    """
    k = tf.convert_to_tensor(k, tf.int32)
    scores, indices = [], []
    for part, offset in table.parts:
        with on_device_of(part):
            rows = tf.stop_gradient(part)
            part_k = tf.minimum(k, tf.shape(rows, out_type=tf.int32)[0])
            values, local = _shard_top_k(centres, rows, part_k, chunk)
        scores.append(values)
        indices.append(local + offset)
    scores, indices = tf.concat(scores, 1), tf.concat(indices, 1)
    # Ascending indices first, then a top-k that keeps the lower position first among equals.
    order = tf.argsort(indices, axis=1, stable=True)
    scores = tf.gather(scores, order, batch_dims=1)
    indices = tf.gather(indices, order, batch_dims=1)
    top_scores, best = tf.math.top_k(scores, k, sorted=True)
    return top_scores, tf.gather(indices, best, batch_dims=1)


def trainable_shards(variables: Any) -> list:
    """The ``tf.Variable``\\ s to differentiate and update: each shard of a sharded table.

    Keras 3 wraps a ``ShardedVariable`` (a table built under ``ParameterServerStrategy`` with a
    ``variable_partitioner``) in one Keras variable, which ``tf.GradientTape`` cannot
    differentiate; a custom training loop takes the gradients of, and applies them to, the shards
    this returns. tf-keras already lists the shards as the model's variables; they pass through.

    Args:
        variables: a list of variables (``model.trainable_variables``), Keras or ``tf.Variable``.

    Returns:
        A list of ``tf.Variable``: each variable's own, or each shard of a sharded one.

    Raises:
        TypeError: ``variables`` is not a list or tuple.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.ops import trainable_shards
    >>> shards = [tf.Variable(tf.zeros([3, 2])), tf.Variable(tf.zeros([2, 2]))]
    >>> table = tf.__internal__.distribute.ShardedVariable(shards)
    >>> [v.shape.as_list() for v in trainable_shards([table, tf.Variable(1.0)])]
    [[3, 2], [2, 2], []]
    """
    if not isinstance(variables, (list, tuple)):
        raise TypeError(
            f"`variables` must be a list of variables. Received: variables={variables!r}"
        )
    shards = []
    for variable in variables:
        native = native_variable(variable)
        if getattr(native, "is_sharded_variable", False):
            shards.extend(native.variables)
        else:
            shards.append(native)
    return shards
