"""Scalable Cross-Entropy (SCE): cross-entropy over buckets of hard negatives found by random projections."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth._keras import register_serializable
from tfsmooth._validation import check_bool, check_int, check_seed
from tfsmooth.losses import _utils
from tfsmooth.losses._base import CatalogLoss
from tfsmooth.ops.shards import TableShards, sharded_top_k

__all__ = ["ScalableCrossEntropy", "scalable_cross_entropy"]

#: Items scored against the bucket centres per step of the running top-k: the [n_buckets, chunk]
#: projection is the selection's working set, whatever the catalog size.
SELECTION_CHUNK = 8192

_LOWEST = np.finfo(np.float32).min


# ----------------------------------------------------------------------------------------------------
# Selection (no gradient): bucket centres, top queries and top items per bucket.


def _bucket_counts(n_valid, n_rows, n_buckets, bucket_size_x):
    """Static caps and dynamic active counts of buckets and of queries per bucket.

    The defaults (None) follow the paper, ``2 sqrt(valid queries)``. Shapes must not depend on data
    (XLA), so the cap comes from the number of rows and the data-dependent count masks the surplus:
    the top ``cap`` queries of which only the first ``2 sqrt(valid)`` count are exactly the top
    ``2 sqrt(valid)``; surplus buckets, drawn i.i.d. like the others, are switched off.
    """
    rows_f = tf.cast(n_rows, tf.float32)
    default_cap = tf.maximum(tf.cast(tf.floor(2.0 * tf.sqrt(rows_f)), tf.int32), 1)
    default_active = tf.maximum(
        tf.cast(tf.floor(2.0 * tf.sqrt(tf.cast(n_valid, tf.float32))), tf.int32), 1
    )
    if n_buckets is None:
        buckets_cap, buckets_active = default_cap, default_active
    else:
        buckets_cap = buckets_active = tf.constant(n_buckets, tf.int32)
    if bucket_size_x is None:
        x_cap, x_active = default_cap, default_active
    else:
        x_cap = x_active = tf.constant(bucket_size_x, tf.int32)
    x_cap = tf.minimum(x_cap, n_rows)  # documented clipping: no more queries than exist
    return buckets_cap, buckets_active, x_cap, x_active


def _bucket_centres(queries, valid, n_buckets, mix_x, seed):
    """Random Gaussian centres [n_b, d], or random mixes of the valid queries when ``mix_x``."""
    dtype = queries.dtype
    rows, d = tf.shape(queries)[0], tf.shape(queries)[1]
    shape = tf.stack([rows, n_buckets] if mix_x else [n_buckets, d])
    # Drawn in float32 whatever the inputs, so a seed pair means the same centres for every dtype.
    if seed is None or isinstance(seed, int):
        draw = tf.random.normal(shape, seed=seed)
    else:
        draw = tf.random.stateless_normal(shape, seed=seed, alg="philox")
    draw = tf.cast(draw, dtype)
    if not mix_x:
        return draw
    kept = tf.where(valid[:, None], queries, tf.zeros([], dtype))
    return tf.matmul(draw, kept, transpose_a=True)


def _top_queries(centres, queries, valid, x_cap, chunk):
    x_values, x_index = _utils.running_top_k(centres, queries, x_cap, chunk, row_valid=valid)
    x_values, order = tf.math.top_k(x_values, x_cap, sorted=True)
    return tf.gather(x_index, order, batch_dims=1), x_values > -np.inf


@tf.function(jit_compile=True)
def _select(centres, queries, valid, items, x_cap, y_size, chunk):
    """Top ``x_cap`` valid queries (best first) and top ``y_size`` items of every bucket."""
    x_index, x_counts = _top_queries(centres, queries, valid, x_cap, chunk)
    _, y_index = _utils.running_top_k(centres, items, y_size, chunk)
    return x_index, x_counts, y_index


@tf.function(jit_compile=True)
def _select_queries(centres, queries, valid, x_cap, chunk):
    """The query half of :func:`_select` (a sharded table's items are selected shard by shard)."""
    return _top_queries(centres, queries, valid, x_cap, chunk)


def select_buckets(queries, table, valid, n_buckets, bucket_size_x, bucket_size_y, mix_x, seed):
    """Returns ``(x_index [n_b, b_x], x_counts [n_b, b_x] bool, y_index [n_b, b_y])``, no gradient.

    ``table`` is a :class:`~tfsmooth.ops.TableShards`. ``x_counts`` is False for slots that hold
    no valid query (fewer valid queries than ``bucket_size_x``) and for the surplus of the default
    sizes (see :func:`_bucket_counts`).
    """
    queries = tf.stop_gradient(queries)
    n_rows = tf.shape(queries, out_type=tf.int32)[0]
    n_valid = tf.reduce_sum(tf.cast(valid, tf.int32))
    buckets_cap, buckets_active, x_cap, x_active = _bucket_counts(
        n_valid, n_rows, n_buckets, bucket_size_x
    )
    centres = _bucket_centres(queries, valid, buckets_cap, mix_x, seed)
    if table.sharded:
        y_size = tf.constant(min(bucket_size_y, table.num_items), tf.int32)
        x_index, x_counts = _select_queries(centres, queries, valid, x_cap, SELECTION_CHUNK)
        # Shard by shard on each shard's device, merged as over the whole table.
        _, y_index = sharded_top_k(centres, table, y_size, SELECTION_CHUNK)
    else:
        items = tf.stop_gradient(table.parts[0][0])
        y_size = tf.minimum(
            tf.constant(bucket_size_y, tf.int32), tf.shape(items, out_type=tf.int32)[0]
        )
        x_index, x_counts, y_index = _select(
            centres, queries, valid, items, x_cap, y_size, SELECTION_CHUNK
        )
    if bucket_size_x is None:
        x_counts = tf.logical_and(x_counts, (tf.range(x_cap) < x_active)[None, :])
    if n_buckets is None:
        x_counts = tf.logical_and(x_counts, (tf.range(buckets_cap) < buckets_active)[:, None])
    return x_index, x_counts, y_index


# ----------------------------------------------------------------------------------------------------
# The differentiable part: cross-entropy inside the buckets, a few buckets at a time.
#
# The chosen rows [n_b, b_y, d] are gathered once, outside XLA (ops.gather_rows: shard by shard for
# a sharded table); their gradient through the gather is the table's tf.IndexedSlices (one per
# shard). Forward and backward are XLA loops over groups of BUCKET_CHUNK buckets; each gathers its
# queries, slices its items, computes their logits and drops them, so the [n_b, b_x, b_y] logits
# never exist at once. The backward recomputes the logits.

#: Buckets per step of the bucket loops.
BUCKET_CHUNK = 16


def _bucket_logits(queries, y_rows, labels, x_index, y_index, start, length, dtype):
    """Logits of buckets [start, start + length): ([g, b_x, b_y] with -inf at own positives, parts)."""
    xi = tf.slice(x_index, tf.stack([start, 0]), tf.stack([length, tf.shape(x_index)[1]]))
    yi = tf.slice(y_index, tf.stack([start, 0]), tf.stack([length, tf.shape(y_index)[1]]))
    xb = tf.gather(queries, xi)
    size = tf.shape(y_rows)
    yb = tf.slice(y_rows, tf.stack([start, 0, 0]), tf.stack([length, size[1], size[2]]))
    logits = tf.matmul(xb, yb, transpose_b=True)
    own_positive = tf.equal(tf.gather(labels, xi)[:, :, None], yi[:, None, :])
    return tf.where(own_positive, tf.constant(-np.inf, dtype), logits), xi, xb, yb


@tf.function(jit_compile=True)
def _buckets_forward(queries, y_rows, positive_logits, labels, x_index, y_index, chunk):
    """Per (bucket, query) log-sum-exp over [bucket items without the positive, the positive]."""
    dtype = queries.dtype
    size, steps, tail = _utils.split_chunks(tf.shape(x_index, out_type=tf.int32)[0], chunk)

    def log_sum_exp(start, length):
        logits, xi, _, _ = _bucket_logits(
            queries, y_rows, labels, x_index, y_index, start, length, dtype
        )
        positives = tf.gather(positive_logits, xi)
        top = tf.maximum(tf.reduce_max(logits, axis=2), positives)
        total = tf.reduce_sum(tf.exp(logits - top[:, :, None]), axis=2) + tf.exp(positives - top)
        return top + tf.math.log(total)

    parts = tf.TensorArray(dtype, size=steps, element_shape=tf.TensorShape([None, None]))
    _, parts = tf.while_loop(
        lambda i, _: i < steps,
        lambda i, parts: (i + 1, parts.write(i, log_sum_exp(i * size, size))),
        (tf.constant(0), parts),
    )
    head = tf.reshape(parts.stack(), [-1, tf.shape(x_index)[1]])
    return tf.concat([head, log_sum_exp(steps * size, tail)], axis=0)


@tf.function(jit_compile=True)
def _buckets_backward(
    queries, y_rows, positive_logits, labels, x_index, y_index, log_sum_exp, upstream, chunk
):
    """Gradients of sum(upstream * (lse - positive)) for queries, chosen rows and positives."""
    dtype = queries.dtype
    n_b = tf.shape(x_index, out_type=tf.int32)[0]
    size, steps, tail = _utils.split_chunks(n_b, chunk)
    upstream = tf.cast(upstream, dtype)

    def gradients(start, length, grad_queries, grad_items, grad_positives):
        logits, xi, xb, yb = _bucket_logits(
            queries, y_rows, labels, x_index, y_index, start, length, dtype
        )
        rows = (start + tf.range(length))[:, None]
        lse = tf.gather_nd(log_sum_exp, rows)
        up = tf.gather_nd(upstream, rows)
        g = tf.exp(logits - lse[:, :, None]) * up[:, :, None]  # softmax * upstream; 0 at -inf
        positive_share = tf.exp(tf.gather(positive_logits, xi) - lse)
        xi_rows = xi[:, :, None]
        grad_queries = tf.tensor_scatter_nd_add(grad_queries, xi_rows, tf.matmul(g, yb))
        grad_items = tf.tensor_scatter_nd_add(grad_items, rows, tf.matmul(g, xb, transpose_a=True))
        grad_positives = tf.tensor_scatter_nd_add(
            grad_positives, xi_rows, (positive_share - 1.0) * up
        )
        return grad_queries, grad_items, grad_positives

    def body(i, *grads):
        return (i + 1, *gradients(i * size, size, *grads))

    init = (
        tf.zeros_like(queries),
        tf.zeros(tf.stack([n_b, tf.shape(y_index)[1], tf.shape(queries)[1]]), dtype),
        tf.zeros_like(positive_logits),
    )
    _, *grads = tf.while_loop(lambda i, *_: i < steps, body, (tf.constant(0), *init))
    return gradients(steps * size, tail, *grads)


def _bucket_losses(queries, y_rows, positive_logits, labels, x_index, y_index):
    """Losses [n_b, b_x] with gradients to queries, the chosen rows [n_b, b_y, d] and positives."""

    @tf.custom_gradient
    def op(q, rows, positives):
        q, rows = tf.stop_gradient(q), tf.stop_gradient(rows)
        positives = tf.stop_gradient(positives)
        lse = _buckets_forward(q, rows, positives, labels, x_index, y_index, BUCKET_CHUNK)

        def grad(upstream):
            return _buckets_backward(
                q, rows, positives, labels, x_index, y_index, lse, upstream, BUCKET_CHUNK
            )

        return lse - tf.gather(positives, x_index), grad

    return op(queries, y_rows, positive_logits)


def scalable_cross_entropy_per_query(
    queries: tf.Tensor,
    table: TableShards,
    labels: tf.Tensor,
    valid: tf.Tensor,
    n_buckets: int | None,
    bucket_size_x: int | None,
    bucket_size_y: int,
    mix_x: bool,
    seed: Any,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-query losses ``[N]`` and which queries count (valid and chosen by a bucket).

    ``table`` is the item table as a :class:`~tfsmooth.ops.TableShards` (sharded or not). A valid
    query that is not finite, or every valid query when the item table holds a non-finite value
    (the selection reads all of it), counts with a NaN loss, chosen or not.
    """
    dtype = _utils.compute_dtype(queries.dtype)
    queries = tf.where(valid[:, None], tf.cast(queries, dtype), tf.zeros([], dtype))
    finite = tf.logical_and(_utils.finite_rows(queries), _utils.all_finite(table))
    x_index, x_counts, y_index = select_buckets(
        queries, table, valid, n_buckets, bucket_size_x, bucket_size_y, mix_x, seed
    )
    # The positive logits and the chosen rows, with gradient: the gathers give the table (each
    # shard) an IndexedSlices gradient; they are the only rows of the table the loss reads.
    positives = tf.cast(_utils.gather_rows(table, labels), dtype)
    positive_logits = tf.reduce_sum(queries * positives, axis=1)
    y_rows = tf.cast(_utils.gather_rows(table, tf.reshape(y_index, [-1])), dtype)
    y_rows = tf.reshape(y_rows, tf.concat([tf.shape(y_index), tf.shape(queries)[1:]], 0))
    losses = _bucket_losses(queries, y_rows, positive_logits, labels, x_index, y_index)
    # A query chosen by several buckets takes its largest loss (its hardest bucket).
    flat_index = tf.reshape(x_index, [-1])
    flat_counts = tf.reshape(x_counts, [-1])
    flat_losses = tf.where(flat_counts, tf.reshape(losses, [-1]), tf.constant(_LOWEST, dtype))
    n = tf.shape(queries)[0]
    per_query = tf.math.unsorted_segment_max(flat_losses, flat_index, n)
    chosen = tf.math.unsorted_segment_max(tf.cast(flat_counts, tf.int32), flat_index, n) > 0
    counted = tf.logical_and(tf.logical_or(chosen, tf.logical_not(finite)), valid)
    per_query = _utils.poison_nonfinite(per_query, valid, finite)
    return tf.where(counted, per_query, tf.zeros_like(per_query)), counted


def _check_options(n_buckets, bucket_size_x, bucket_size_y, mix_x, seed):
    return (
        check_int("n_buckets", n_buckets, 1, allow_none=True),
        check_int("bucket_size_x", bucket_size_x, 1, allow_none=True),
        check_int("bucket_size_y", bucket_size_y, 1),
        check_bool("mix_x", mix_x),
        _utils.check_seed(seed),
    )


@register_serializable
def scalable_cross_entropy(
    queries: Any,
    item_embeddings: Any,
    labels: Any,
    *,
    n_buckets: int | None = None,
    bucket_size_x: int | None = None,
    bucket_size_y: int = 256,
    mix_x: bool = False,
    mask: Any = None,
    seed: Any = None,
) -> tf.Tensor:
    """Scalable Cross-Entropy: softmax cross-entropy restricted to buckets of likely hard negatives.

    Full cross-entropy needs all ``N x C`` logits. SCE (Mezentsev et al., 2024) keeps only the
    logits that matter most -- the large ones -- found by a cheap maximum-inner-product search:

    1. Without gradient: draw ``n_b`` bucket centres :math:`\\omega_b` (Gaussian vectors in
       :math:`\\mathbb{R}^d`, or with ``mix_x`` random Gaussian mixes of the queries,
       :math:`\\Omega^\\top X`); bucket :math:`b` takes the ``bucket_size_x`` valid queries and the
       ``bucket_size_y`` items with the largest inner products with :math:`\\omega_b`. The
       ``[n_b, C]`` centre-item scores are scanned in chunks of items with a running top-k, so the
       selection never holds more than ``[n_b, bucket_size_y + 8192]`` scores.
    2. With gradient, for each query :math:`i` of bucket :math:`b` with items :math:`Y_b`:

       .. math::

           \\ell_{b,i} = \\log\\Big(e^{x_i^\\top w_{y_i}} + \\sum_{j \\in Y_b,\\, j \\ne y_i}
               e^{x_i^\\top w_j}\\Big) - x_i^\\top w_{y_i}

       (the positive is masked out of the bucket's items and its own logit appended).
    3. A query chosen by several buckets takes :math:`\\max_b \\ell_{b,i}`; queries no bucket chose
       and masked queries are dropped; the result is the mean over the rest.

    Memory is ``n_b x bucket_size_x x (bucket_size_y + 1)`` logits instead of ``N x C``. Gradients
    reach the gathered queries, the positive logits and the gathered items -- the item table's
    gradient is a ``tf.IndexedSlices`` of the rows used, so huge tables get sparse updates. With
    ``n_buckets=1, bucket_size_x=N, bucket_size_y=C`` it is exactly the full cross-entropy.

    Defaults follow the authors: ``n_buckets = bucket_size_x = floor(2 sqrt(valid queries))``
    (shapes are sized from the number of rows ``N`` and the surplus is masked, so XLA sees static
    shapes). Sizes larger than what exists are clipped: ``bucket_size_x`` to ``N`` and
    ``bucket_size_y`` to ``C`` (the latter then sees the whole catalog). Half-precision inputs are
    computed with ``float32`` logits and softmax. An empty batch gives 0 (and zero gradients).

    Non-finite values: a valid query that is NaN or infinite counts with a NaN loss whether or not
    a bucket chose it, and a non-finite entry anywhere in the item table (the selection reads all
    of it) makes every loss NaN -- never a finite loss with NaN gradients. A NaN score is never
    selected above a finite one.

    Under ``tf.distribute``, each replica selects its buckets from its own queries: the summed
    replica gradients are those of the mean of the per-replica losses, not of SCE on the global
    batch (a different estimator).

    Args:
        queries: float ``[..., d]``: query (e.g. sequence) embeddings.
        item_embeddings: float ``[C, d]``: the item table, or a sharded one (a
            ``ShardedVariable``, a list of shard variables), never concatenated: the selection
            runs a top-k per shard on the shard's device, merged by (score, index) as over one
            table, and only the chosen rows and the positives are gathered (each shard's gradient
            is a ``tf.IndexedSlices`` of its local rows). The result is the unsharded one up to
            rounding: XLA may round a centre-item score differently in a block of another row
            count, so items whose scores are within an ulp may be ordered (or, at the cut,
            chosen) differently.
        labels: integer ``[...]`` (or ``[..., 1]``): the positive items, in ``[0, C)`` (floats only
            with whole values).
        n_buckets: int or None. Number of buckets; None: ``floor(2 sqrt(valid queries))``.
        bucket_size_x: int or None. Queries per bucket; None: ``floor(2 sqrt(valid queries))``.
        bucket_size_y: int. Items per bucket (the paper uses 64 to 4096).
        mix_x: bool. Centres are random mixes of the queries instead of Gaussian vectors.
        mask: optional ``[...]`` bool or 0/1: which queries count (e.g. not padding).
        seed: None, an int, or a pair of ints. None or an int: the centres are drawn by
            ``tf.random.normal`` (an int is its op-level seed) -- fresh centres at every call,
            reproducible under ``tf.random.set_seed``/``keras.utils.set_random_seed``. A pair
            ``(a, b)``: the centres are exactly
            ``tf.random.stateless_normal([n_buckets, d], seed, alg="philox")`` in float32
            (``[N, n_buckets]`` mixing weights with ``mix_x``; with the default sizes
            ``n_buckets = floor(2 sqrt(N))`` and the first ``floor(2 sqrt(valid))`` are used), the
            same for the same pair, in and out of XLA -- pass e.g. ``(seed, step)`` for
            reproducible, changing buckets.

    Returns:
        A scalar: the mean SCE over the counted queries (0 if none), ``float32`` for half inputs.

    Raises:
        TypeError: for non-float queries/table, non-numeric labels, non-integer sizes, a bad ``seed``.
        ValueError: for mismatched shapes, sizes ``< 1``, a negative seed, non-integral float
            labels or labels outside ``[0, C)`` at valid positions (eagerly; an ``InvalidArgumentError`` inside ``tf.function``; left out of the
            loss inside XLA-compiled code).

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.losses import scalable_cross_entropy
    >>> queries = tf.random.normal([4096, 64])                  # e.g. batch x sequence length
    >>> items = tf.Variable(tf.random.normal([1_000_000, 64]))  # a million items
    >>> labels = tf.random.uniform([4096], maxval=1_000_000, dtype=tf.int32)
    >>> with tf.GradientTape() as tape:
    ...     loss = scalable_cross_entropy(queries, items, labels, bucket_size_y=256)
    >>> grad = tape.gradient(loss, items)  # tf.IndexedSlices: only the rows SCE touched

    References:
        - [Mezentsev, Gusak, Oseledets, Frolov. Scalable Cross-Entropy Loss for Sequential
          Recommendations with Large Item Catalogs. RecSys 2024](https://arxiv.org/abs/2409.18721)
        - [The authors' code](https://github.com/AIRI-Institute/Scalable-SASRec)
    """
    options = _check_options(n_buckets, bucket_size_x, bucket_size_y, mix_x, seed)
    q, w, y, valid = _utils.prepare(
        queries, item_embeddings, labels, mask, "scalable_cross_entropy"
    )
    losses, counted = scalable_cross_entropy_per_query(q, w, y, valid, *options)
    return _utils.masked_mean(losses, counted)


@register_serializable
class ScalableCrossEntropy(CatalogLoss):
    """Keras loss: Scalable Cross-Entropy (:func:`scalable_cross_entropy`) against a bound item table.

    ``y_pred`` is the queries ``[..., d]``, ``y_true`` the item indices ``[...]``. Every call draws
    fresh bucket centres (reproducibly under ``keras.utils.set_random_seed`` / a given ``seed``).

    .. math::

        \\ell_i = \\max_{b \\ni i} \\Big[\\log\\Big(e^{x_i^\\top w_{y_i}} + \\sum_{j \\in Y_b \\setminus
            \\{y_i\\}} e^{x_i^\\top w_j}\\Big) - x_i^\\top w_{y_i}\\Big]

    Args:
        item_embeddings: the item table: an ``Embedding`` layer, a variable, a tensor, a sharded
            table (a ``ShardedVariable`` or a list of shard variables, never concatenated) or a
            callable returning ``[C, d]``. Not part of the config (bind it again after loading).
        n_buckets: int or None (``floor(2 sqrt(valid queries))``).
        bucket_size_x: int or None (``floor(2 sqrt(valid queries))``).
        bucket_size_y: int.
        mix_x: bool.
        seed: None or an int ``>= 0`` (op-level seed of the centre draws).
        reduction: ``"sum_over_batch_size"`` (weighted mean over counted queries), ``"sum"`` or
            ``"none"`` (per-query losses, 0 for queries no bucket chose).
        name: the loss name.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.losses import ScalableCrossEntropy
    >>> items = tf.keras.layers.Embedding(1_000_000, 64)
    >>> items.build((None,))
    >>> loss = ScalableCrossEntropy(items, bucket_size_y=512)
    >>> value = loss(tf.constant([[3, 9]]), tf.random.normal([1, 2, 64]))

    References:
        - [Mezentsev et al. RecSys 2024](https://arxiv.org/abs/2409.18721)
    """

    def __init__(
        self,
        item_embeddings: Any = None,
        *,
        n_buckets: int | None = None,
        bucket_size_x: int | None = None,
        bucket_size_y: int = 256,
        mix_x: bool = False,
        seed: int | None = None,
        reduction: str = "sum_over_batch_size",
        name: str = "scalable_cross_entropy",
    ):
        super().__init__(item_embeddings, reduction=reduction, name=name)
        seed = check_seed("seed", seed)  # the op-level seed of the centre draws: None or an int
        (
            self.n_buckets,
            self.bucket_size_x,
            self.bucket_size_y,
            self.mix_x,
            self.seed,
        ) = _check_options(n_buckets, bucket_size_x, bucket_size_y, mix_x, seed)

    def per_query(self, queries, item_embeddings, labels, mask):
        q, w, y, valid = _utils.prepare(
            queries, item_embeddings, labels, mask, "ScalableCrossEntropy"
        )
        return scalable_cross_entropy_per_query(
            q,
            w,
            y,
            valid,
            self.n_buckets,
            self.bucket_size_x,
            self.bucket_size_y,
            self.mix_x,
            self.seed,
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            n_buckets=self.n_buckets,
            bucket_size_x=self.bucket_size_x,
            bucket_size_y=self.bucket_size_y,
            mix_x=self.mix_x,
            seed=self.seed,
        )
        return config
