"""Numerical building blocks shared across tfsmooth: chunk loops, chunked top-k, argument checks.

- :func:`exact_top_k`: the ``k`` best candidates per query, best first, with per-query exclusions
  and a defined place for NaN scores (the retrieval server's kernel).
- :func:`compute_dtype`: the dtype kernels compute in (half precision is widened to float32).
- :func:`table_shards`, :func:`gather_rows`, :func:`all_finite`, :func:`on_device_of`, :func:`trainable_shards`: an item
  table split into row shards (a ``ShardedVariable``, a list of shard variables) read shard by
  shard where each shard lives, never concatenated (:class:`TableShards`).

Building blocks for kernels, imported from their modules (static shapes; their callers check the
arguments): ``tfsmooth.ops.chunks.split_chunks`` and ``row_block`` visit a long axis (an item
table) in static-shape chunks, the way XLA needs them; ``tfsmooth.ops.top_k.running_top_k`` keeps
the top rows by inner product one chunk at a time (the catalog losses' selection step).

Argument checks shared by everything that scores queries against an item table (the catalog
losses, the ranking metrics, SASRec, CatalogRetrieval), imported from their module:
``tfsmooth.ops.checks.check_queries_and_table`` (ranks and matching ``d``) and ``integer_labels``
(integer labels; whole-valued floats accepted, never truncated).
"""

from tfsmooth.ops.dtypes import compute_dtype
from tfsmooth.ops.shards import (
    TableShards,
    all_finite,
    gather_rows,
    on_device_of,
    table_shards,
    trainable_shards,
)
from tfsmooth.ops.top_k import NO_ITEM, exact_top_k

__all__ = [
    "NO_ITEM",
    "TableShards",
    "all_finite",
    "compute_dtype",
    "exact_top_k",
    "gather_rows",
    "on_device_of",
    "table_shards",
    "trainable_shards",
]
