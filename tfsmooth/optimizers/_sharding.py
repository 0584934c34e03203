"""Sharded tables: the shards of one ``ShardedVariable`` are one variable to tfsmooth's optimizers.

Under a ``ParameterServerStrategy`` with a ``variable_partitioner`` (or with
``tf.__internal__.distribute.ShardedVariable`` built by hand) an embedding table is split along
its rows into shards, and Keras hands each shard to the optimizer as a variable of its own.
tfsmooth's optimizers treat the shards of a table as the table:

- the Clippy factor with ``granularity="variable"`` is the table's, ``min(1, 1 / max_s rho_s)``
  over the update-to-bound ratios ``rho_s`` of its shards (``max`` is exact, so this is the
  unsharded factor bit for bit); per-row factors need nothing, as no row spans two shards;
- a non-finite gradient in any shard skips the step of every shard of the table, counted once.

Each shard's part (its ratio, whether its gradient is finite) is computed on the shard's device,
over what the step reads anyway (for a sparse gradient, the looked-up rows): only scalars travel.
The shards are found through the ``_sharded_container`` weak reference that ``ShardedVariable``
sets on each of them; a shard whose ``ShardedVariable`` no longer exists is a variable of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from tfsmooth.ops.shards import on_device_of

__all__ = ["all_true", "is_shard", "on_device_of", "shard_groups", "smallest"]


def sharded_table(variable: Any) -> Any:
    """The ``ShardedVariable`` ``variable`` is a shard of, or ``None``."""
    reference = getattr(variable, "_sharded_container", None)
    return reference() if callable(reference) else None


def is_shard(variable: Any) -> bool:
    """Whether ``variable`` is a shard of a (living) ``ShardedVariable``."""
    return sharded_table(variable) is not None


def shard_groups(variables: Sequence[Any], gradients: Sequence[Any]) -> list[list[int]]:
    """The positions of the shards in ``variables`` that have a gradient, one list per table.

    Tables in the order their first shard appears, shards in the order given; a table with one
    shard updated in this step is a group of one. Variables that are no shard are left out.
    """
    groups: dict[int, list[int]] = {}
    for position, (variable, gradient) in enumerate(zip(variables, gradients)):
        table = sharded_table(variable) if gradient is not None else None
        if table is not None:
            groups.setdefault(id(table), []).append(position)
    return list(groups.values())


def all_true(flags: Sequence[tf.Tensor]) -> tf.Tensor:
    """The AND of boolean scalars."""
    return flags[0] if len(flags) == 1 else tf.reduce_all(tf.stack(flags))


def smallest(values: Sequence[tf.Tensor]) -> tf.Tensor:
    """The minimum of scalars of one dtype (exact, in any order)."""
    return values[0] if len(values) == 1 else tf.reduce_min(tf.stack(values))
