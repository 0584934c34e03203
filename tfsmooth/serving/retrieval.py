"""export_retrieval: a query tower and a candidate table as one exact top-k SavedModel.

A sharded candidate table (a ``ShardedVariable``, a list of shard variables, an ``Embedding`` layer
holding one) is exported shard by shard: the SavedModel keeps one plain variable per shard, and the
served top-k runs over each shard and merges the shards' best candidates by score, so the table is
never concatenated, neither while exporting nor while serving.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth._keras import keras
from tfsmooth._validation import check_int
from tfsmooth.ops.shards import TableShards, table_shards
from tfsmooth.ops.top_k import NO_ITEM, _exact_top_k, _key_constants, _sort_keys, exact_top_k
from tfsmooth.serving._common import (
    _checked,
    _save,
    input_signature_of,
)

__all__ = ["export_retrieval"]


class _RetrievalServer(tf.Module):
    """Query features -> top-k candidate ids and scores; per-request ``k`` and exclusions.

    ``serve(features, k=None, exclude_ids=None)`` is traced for the four combinations, so a Python
    caller of the loaded model may leave either out; the signatures are ``serving_default``
    (features only) and ``top_k`` (features, ``k``, ``exclude_ids``).
    """

    def __init__(self, query_model, candidate_ids, k, max_k, chunk_size, signature, name=None):
        super().__init__(name=name or "tfsmooth_retrieval_server")
        self.query_model = query_model
        # Keras 3 does not expose the variables of layers held in nested lists (SASRec's blocks) to
        # SavedModel tracking; a list of them here does, as Keras's own export does.
        self.model_variables = list(getattr(query_model, "variables", []))
        self.candidate_ids = tf.constant(candidate_ids)
        self.k = k
        self.max_k = max_k
        self.chunk_size = chunk_size
        self._signature = signature
        self.serve = tf.function(self._serve)

    # What a subclass changes: the queries, the table, the exclusions each query brings along.
    def _queries(self, features):
        return self.query_model(features, training=False)

    def _candidates(self):
        return self.candidates

    def _candidate_parts(self):
        """``[(rows, first index), ...]``: the table as row blocks (one block unless sharded)."""
        return [(self._candidates(), 0)]

    def _implicit_exclusions(self, features, batch):
        return None

    def _indices_of(self, exclude_ids):
        """Candidate indices of the requested ids (``-1`` for padding), checked in the graph."""
        raise NotImplementedError

    def _serve(self, features, k=None, exclude_ids=None):
        parts = self._candidate_parts()
        candidates = parts[0][0]
        queries = self._queries(features)
        dtype = tf.float32 if candidates.dtype in (tf.float16, tf.bfloat16) else candidates.dtype
        queries = tf.cast(queries, dtype)
        batch = tf.shape(queries)[0]
        excluded = []
        implicit = self._implicit_exclusions(features, batch)
        if implicit is not None:
            excluded.append(implicit)
        if exclude_ids is not None:
            exclude_ids = _checked(
                exclude_ids,
                tf.equal(tf.shape(exclude_ids)[0], batch),
                [
                    "`exclude_ids` must have one row per query ([batch, M], padded with the "
                    "no-item id). Received rows of exclude_ids, queries:",
                    tf.shape(exclude_ids)[0],
                    batch,
                ],
            )
            excluded.append(self._indices_of(exclude_ids))
        exclude = tf.concat(excluded, axis=1) if excluded else None
        if len(parts) == 1:
            scores, indices = exact_top_k(
                queries, candidates, self.max_k, exclude=exclude, chunk_size=self.chunk_size
            )
        else:
            scores, indices = self._sharded_top_k(queries, parts, exclude)
        if k is None:
            scores, indices = scores[:, : self.k], indices[:, : self.k]
        else:
            k = tf.cast(k, tf.int32)
            k = _checked(
                k,
                tf.logical_and(k >= 1, k <= self.max_k),
                [f"`k` must be an integer in [1, max_k={self.max_k}]. Received: k=", k],
            )
            scores, indices = scores[:, :k], indices[:, :k]
        dtype = self.candidate_ids.dtype
        no_item = tf.fill(tf.shape(indices), tf.constant(_no_item_id(dtype), dtype))
        item_ids = tf.where(
            indices == NO_ITEM, no_item, tf.gather(self.candidate_ids, tf.maximum(indices, 0))
        )
        return {"item_ids": item_ids, "scores": scores}

    def _sharded_top_k(self, queries, parts, exclude):
        """:func:`exact_top_k` over row blocks: the best ``max_k`` of each block, then of those.

        Each block keeps its best ``min(max_k, R_s)`` candidates with its own exclusions (shifted
        to the block's rows; the others fall outside it and are ignored), so the merged best
        ``max_k`` are those of the whole table. Free slots (no candidate left) sort below every
        candidate, NaN scores below every number, as in :func:`exact_top_k`.
        """
        if exclude is None:
            exclude = tf.zeros(tf.stack([tf.shape(queries)[0], 0]), tf.int32)
        exclude = tf.cast(exclude, tf.int32)
        int_type, _, lowest = _key_constants(queries.dtype)
        lowest = tf.constant(lowest, int_type)  # a free slot: below every score, NaN included
        keys, indices, scores = [], [], []
        for rows, offset in parts:
            part_k = min(self.max_k, int(rows.shape[0]))
            chunk = min(self.chunk_size, int(rows.shape[0]))
            part_scores, local = _exact_top_k(
                queries, tf.convert_to_tensor(rows), tf.constant(part_k), exclude - offset, chunk
            )
            free = tf.equal(local, NO_ITEM)
            keys.append(tf.where(free, lowest, _sort_keys(part_scores)))
            indices.append(tf.where(free, NO_ITEM, local + offset))
            scores.append(part_scores)
        keys, indices, scores = (tf.concat(x, axis=1) for x in (keys, indices, scores))
        _, best = tf.math.top_k(keys, self.max_k, sorted=True)
        return tf.gather(scores, best, batch_dims=1), tf.gather(indices, best, batch_dims=1)

    def trace(self) -> dict:
        """Traces ``serve`` for every combination of inputs; returns the signatures to save."""
        features = self._signature
        k = tf.TensorSpec([], tf.int32, name="k")
        exclude = tf.TensorSpec([None, None], self.candidate_ids.dtype, name="exclude_ids")
        default = self.serve.get_concrete_function(features)
        self.serve.get_concrete_function(features, k=k)
        self.serve.get_concrete_function(features, exclude_ids=exclude)
        top_k = self.serve.get_concrete_function(features, k=k, exclude_ids=exclude)
        return {"serving_default": default, "top_k": top_k}


class _TableServer(_RetrievalServer):
    """A query tower plus its own copy of the candidate table (:func:`export_retrieval`).

    ``candidates`` is one array, or a list of arrays (the row blocks of a sharded table): then the
    server keeps one variable per block and serves the top-k block by block.
    """

    def __init__(self, query_model, candidates, candidate_ids, k, max_k, chunk_size, signature):
        super().__init__(query_model, candidate_ids, k, max_k, chunk_size, signature)
        if isinstance(candidates, list):
            self.candidate_shards = [
                tf.Variable(block, trainable=False, name=f"candidates_{i}")
                for i, block in enumerate(candidates)
            ]
            self.shard_offsets = tuple(np.cumsum([0] + [len(b) for b in candidates[:-1]]).tolist())
            self.num_candidates = sum(len(block) for block in candidates)
        else:
            self.candidates = tf.Variable(candidates, trainable=False, name="candidates")
            self.num_candidates = int(candidates.shape[0])
        self.default_ids = bool(np.array_equal(candidate_ids, np.arange(self.num_candidates)))
        if not self.default_ids:
            self.id_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    self.candidate_ids, tf.range(self.num_candidates, dtype=tf.int64)
                ),
                default_value=-2,
            )

    def _candidate_parts(self):
        if hasattr(self, "candidate_shards"):
            return list(zip(self.candidate_shards, self.shard_offsets))
        return super()._candidate_parts()

    def _indices_of(self, exclude_ids):
        no_item = _no_item_id(exclude_ids.dtype)
        no_item_text = "the empty string" if no_item == "" else str(no_item)
        padding = tf.equal(exclude_ids, no_item)
        if self.default_ids:
            ids = tf.cast(exclude_ids, tf.int64)
            known = tf.logical_and(ids >= 0, ids < self.num_candidates)
            indices = ids
            what = f"ids in [0, {self.num_candidates})"
        else:
            indices = self.id_table.lookup(exclude_ids)
            known = indices >= 0
            what = "ids of the exported candidates"
        bad = tf.logical_not(tf.logical_or(known, padding))
        return _checked(
            tf.where(known, tf.cast(indices, tf.int32), NO_ITEM),
            tf.logical_not(tf.reduce_any(bad)),
            [
                f"`exclude_ids` must hold {what}, or {no_item_text} for no item. "
                "Received: exclude_ids containing",
                tf.boolean_mask(exclude_ids, bad),
            ],
            summarize=5,
        )


def _no_item_id(dtype: tf.DType) -> Any:
    """The id a free slot gets and padding of ``exclude_ids``: -1, or ``""`` for string ids."""
    return "" if dtype == tf.string else NO_ITEM


def _sharded_candidates(candidates: Any) -> TableShards | None:
    """The shards of a sharded candidate table, or ``None`` (an array, a tensor, a variable...)."""
    if isinstance(candidates, (tf.Tensor, np.ndarray, np.generic)):
        return None
    try:
        table = table_shards(candidates)
    except (TypeError, ValueError):
        return None  # left to _candidate_table's checks and errors
    return table if table.sharded else None


def _checked_table(table: np.ndarray) -> np.ndarray:
    if table.ndim != 2 or not np.issubdtype(table.dtype, np.floating):
        raise ValueError(
            "`candidates` must be a float matrix [num_candidates, d] (or an Embedding layer). "
            f"Received: shape={table.shape}, dtype={table.dtype}"
        )
    if not np.all(np.isfinite(table)):
        raise ValueError("`candidates` contains NaN or Inf values.")
    return table


def _candidate_table(candidates: Any) -> np.ndarray | list[np.ndarray]:
    """The candidate table as one array, or a sharded one as its shards' arrays (row order)."""
    sharded = _sharded_candidates(candidates)
    if sharded is not None:
        if tf.distribute.has_strategy():
            raise ValueError(
                "`candidates` is a sharded table and export_retrieval was called inside a "
                "tf.distribute strategy scope, which would place (and shard) the exported "
                "variables again, and a SavedModel holding sharded variables does not load: call "
                "export_retrieval outside `strategy.scope()`. Received: candidates with "
                f"{len(sharded.parts)} shards under {type(tf.distribute.get_strategy()).__name__}"
            )
        # Shard by shard: never the whole table in one array.
        return [_checked_table(np.asarray(part)) for part, _ in sharded.parts]
    if isinstance(candidates, keras.layers.Embedding):
        candidates = candidates.embeddings
    return _checked_table(np.asarray(candidates))


def _candidate_id_array(candidate_ids: Any, num_candidates: int) -> np.ndarray:
    if candidate_ids is None:
        return np.arange(num_candidates, dtype=np.int64)
    ids = np.asarray(candidate_ids)
    if ids.shape != (num_candidates,):
        raise ValueError(
            "`candidate_ids` must have one id per candidate. "
            f"Received: candidate_ids.shape={ids.shape}, num_candidates={num_candidates}"
        )
    if ids.dtype.kind in "OUS":
        ids = ids.astype(str).astype(object)
        no_item = ""
    elif ids.dtype.kind in "iu":
        ids = ids.astype(np.int64) if ids.dtype.kind == "u" else ids
        no_item = NO_ITEM
    else:
        raise TypeError(
            "`candidate_ids` must be integers or strings. "
            f"Received: candidate_ids.dtype={ids.dtype}"
        )
    if np.any(ids == no_item):
        raise ValueError(
            f"`candidate_ids` must not contain {no_item!r}: it means 'no item' in `exclude_ids` and "
            f"in the results. Received: candidate_ids containing {no_item!r}"
        )
    values, counts = np.unique(ids, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(
            "`candidate_ids` must be unique. "
            f"Received: candidate_ids repeating {values[counts > 1][0].tolist()!r}"
        )
    return ids


def _check_k(
    k: Any, max_k: Any, num_candidates: int, what: str = "num_candidates"
) -> tuple[int, int]:
    k = check_int("k", k, 1)
    max_k = check_int("max_k", max_k, 1, allow_none=True)
    if max_k is None:
        max_k = k
    for name, value in (("k", k), ("max_k", max_k)):
        if value > num_candidates:
            raise ValueError(
                f"`{name}` must be <= {what}={num_candidates}. Received: {name}={value}"
            )
    if k > max_k:
        raise ValueError(f"`k` must be <= max_k={max_k}. Received: k={k}")
    return k, max_k


def _check_feature_names(signature: Any) -> None:
    names = {spec.name for spec in tf.nest.flatten(signature) if spec.name}
    if isinstance(signature, dict):
        names |= set(signature)
    taken = sorted(names & {"k", "exclude_ids"})
    if taken:
        raise ValueError(
            "Query features may not be named `k` or `exclude_ids`: the top_k signature takes "
            f"inputs of these names. Received: features named {taken}"
        )


def export_retrieval(
    query_model: Any,
    candidates: Any,
    path: str | os.PathLike,
    *,
    candidate_ids: Any = None,
    k: int = 10,
    max_k: int | None = None,
    chunk_size: int = 65536,
    input_signature: Any = None,
) -> str:
    """Saves a retrieval model -- query tower plus candidate table -- with top-k signatures.

    The served model computes query embeddings ``q = query_model(features)`` and returns, for each
    query, the candidates with the largest inner product ``q . c``, best first:
    ``{"item_ids": [batch, k], "scores": [batch, k]}``. Scores are computed over chunks of
    ``chunk_size`` candidates with a running top-k (one XLA kernel), so the catalog may be far larger
    than a ``[batch, catalog]`` matrix would allow. Results are exact.

    Two signatures (TF Serving needs every input of a signature):

    - ``serving_default``: the query features only; the top ``k`` (fixed at export), nothing excluded.
    - ``top_k``: the query features, ``k`` (int32 scalar, ``1 <= k <= max_k``) and ``exclude_ids``
      (``[batch, M]`` of the candidate ids' dtype: ids each query must not get back, e.g. the items
      its user has seen, padded with ``-1`` -- ``""`` for string ids; ``M`` may be 0).

    ``tf.saved_model.load(path).serve(features, k=None, exclude_ids=None)`` takes both as optional
    tensor arguments. Where fewer than ``k`` candidates remain after the exclusions, the free slots
    come last with id ``-1`` (``""``) and score ``-inf``. An excluded id is never returned. A NaN
    score (a query with NaN or Inf values) ranks below every number. A bad request -- ``k`` outside
    ``[1, max_k]``, an unknown id in ``exclude_ids``, rows of ``exclude_ids`` that do not match the
    queries -- fails with ``InvalidArgumentError`` naming the input and the value received.

    A sharded ``candidates`` table (a ``ShardedVariable``, as parameter-server training creates, a
    list of shard variables, or an ``Embedding`` layer holding one) is read shard by shard and
    exported as one plain variable per shard, so neither the export nor the served model ever
    holds the whole table in one piece. The served model takes the best ``max_k`` candidates of
    each shard (its exclusions applied) and merges them by score: the results are those of the
    same table exported unsharded, up to float rounding of the scores (a score's rounding may
    depend on the shape of the block it is computed in), and among candidates with equal scores
    which comes first is arbitrary in both. Export after training, outside the strategy's
    ``scope()``.

    Args:
        query_model: Keras model (or layer) mapping query features to embeddings ``[batch, d]``.
        candidates: candidate embeddings ``[num_candidates, d]``: an array, tensor, variable, a
            Keras ``Embedding`` layer (e.g. the item table trained with a catalog loss), or a
            sharded table (see above).
        path: directory to write.
        candidate_ids: unique ids returned for the candidates (ints or strings, not ``-1`` nor
            ``""``), default ``0..C-1``.
        k: how many candidates ``serving_default`` returns, ``1 <= k <= max_k``.
        max_k: the largest ``k`` a request may ask for (default ``k``), ``<= num_candidates``.
        chunk_size: candidates scored at a time.
        input_signature: the query features as ``tf.TensorSpec`` s; read from
            ``query_model.inputs`` when omitted. No feature may be named ``k`` or ``exclude_ids``.

    Returns:
        ``path`` as a string.

    Raises:
        TypeError: ``k``, ``max_k`` or ``chunk_size`` not an integer, ids neither ints nor strings.
        ValueError: for a bad table, ids of the wrong length, repeated or reserved, ``k``/``max_k``/
            ``chunk_size`` out of range, a feature named ``k`` or ``exclude_ids``; a sharded
            ``candidates`` inside a ``tf.distribute`` strategy scope.

    Example:

    >>> import numpy as np, tempfile, tensorflow as tf
    >>> from tfsmooth.serving import export_retrieval
    >>> users = tf.keras.Input((), dtype="int32", name="user_id")
    >>> tower = tf.keras.Model(users, tf.keras.layers.Embedding(100, 8)(users))
    >>> items = np.random.default_rng(0).normal(size=(1000, 8)).astype("float32")
    >>> path = export_retrieval(tower, items, tempfile.mkdtemp() + "/retrieval", k=5, max_k=50)
    >>> served = tf.saved_model.load(path)
    >>> served.signatures["serving_default"](user_id=tf.constant([3]))["item_ids"].shape
    TensorShape([1, 5])
    >>> seen = tf.constant([[17, 4, -1], [250, -1, -1]], tf.int64)  # padded with -1
    >>> top = served.signatures["top_k"](user_id=tf.constant([3, 9]), k=tf.constant(20),
    ...                                  exclude_ids=seen)
    >>> top["item_ids"].shape, bool(np.isin(top["item_ids"][0], [17, 4]).any())
    (TensorShape([2, 20]), False)
    """
    table = _candidate_table(candidates)
    num_candidates = (
        sum(len(block) for block in table) if isinstance(table, list) else table.shape[0]
    )
    ids = _candidate_id_array(candidate_ids, num_candidates)
    k, max_k = _check_k(k, max_k, num_candidates)
    chunk = check_int("chunk_size", chunk_size, 1)
    signature = input_signature if input_signature is not None else input_signature_of(query_model)
    _check_feature_names(signature)
    server = _TableServer(query_model, table, ids, k, max_k, min(chunk, num_candidates), signature)
    return _save(server, path, server.trace())
