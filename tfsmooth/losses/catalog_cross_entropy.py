"""Exact softmax cross-entropy over a whole item catalog, optionally without materialising the logits."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth._keras import register_serializable
from tfsmooth._validation import check_float, check_int
from tfsmooth.losses import _utils
from tfsmooth.losses._base import CatalogLoss
from tfsmooth.ops.shards import TableShards

__all__ = ["CatalogCrossEntropy", "catalog_cross_entropy"]


# ----------------------------------------------------------------------------------------------------
# Kernels. Each is one XLA program: a loop over item chunks of a static size plus a small tail block,
# none overlapping (`tfsmooth.ops.split_chunks`), so at most [N, chunk] logits exist at any time.


def _running_max_and_sum(scaled_queries, items, chunk):
    """Online log-sum-exp of ``scaled_queries @ items.T`` per query: ``(running max, running sum)``."""
    dtype = scaled_queries.dtype
    size, steps, tail = _utils.split_chunks(tf.shape(items, out_type=tf.int32)[0], chunk)
    n = tf.shape(scaled_queries)[0]

    def update(start, length, running_max, running_sum):
        block = tf.cast(_utils.row_block(items, start, length), dtype)
        logits = tf.matmul(scaled_queries, block, transpose_b=True)
        new_max = tf.maximum(running_max, tf.reduce_max(logits, axis=1))
        # min(., 0): XLA may round the logits of the max and of the exp differently; with large
        # logits (a small temperature) one ulp is enough for exp to overflow and the loss to be NaN.
        shifted = tf.minimum(logits - new_max[:, None], 0.0)
        running_sum = running_sum * tf.exp(running_max - new_max) + tf.reduce_sum(
            tf.exp(shifted), axis=1
        )
        return new_max, running_sum

    _, running_max, running_sum = tf.while_loop(
        lambda i, *_: i < steps,
        lambda i, m, s: (i + 1, *update(i * size, size, m, s)),
        (tf.constant(0), tf.fill([n], tf.constant(-np.inf, dtype)), tf.zeros([n], dtype)),
    )
    return update(steps * size, tail, running_max, running_sum)


@tf.function(jit_compile=True)
def _chunked_forward(queries, items, labels, chunk, inv_temperature):
    """Per-query loss and log-sum-exp by an online (running max, running sum) log-sum-exp."""
    dtype = queries.dtype
    # Scaled once: the logits of the running max and of the exp are then one matmul's output.
    scaled_queries = queries * inv_temperature
    running_max, running_sum = _running_max_and_sum(scaled_queries, items, chunk)
    log_sum_exp = running_max + tf.math.log(running_sum)
    positives = tf.cast(tf.gather(items, labels), dtype)
    positive_logits = tf.reduce_sum(scaled_queries * positives, axis=1)
    return log_sum_exp - positive_logits, log_sum_exp


def _gradient_loop(queries, items, chunk, inv_temperature, coefficients):
    """Recomputes each chunk of logits and accumulates ``dQ = G W``, ``dW = G^T Q``.

    ``coefficients(logits, rows)`` gives ``G`` for a chunk's logits ``[N, length]`` and global
    ``rows`` ``[length]`` of the chunk.
    """
    dtype = queries.dtype
    size, steps, tail = _utils.split_chunks(tf.shape(items, out_type=tf.int32)[0], chunk)
    scaled_queries = queries * inv_temperature

    def gradients(start, length):
        block = tf.cast(_utils.row_block(items, start, length), dtype)
        logits = tf.matmul(scaled_queries, block, transpose_b=True)
        g = coefficients(logits, start + tf.range(length))
        return tf.matmul(g, block), tf.matmul(g, queries, transpose_a=True)

    def body(i, grad_queries, grad_items):
        start = i * size
        grad_q, grad_block = gradients(start, size)
        rows = (start + tf.range(size))[:, None]
        return i + 1, grad_queries + grad_q, tf.tensor_scatter_nd_add(grad_items, rows, grad_block)

    _, grad_queries, grad_items = tf.while_loop(
        lambda i, *_: i < steps,
        body,
        (tf.constant(0), tf.zeros_like(queries), tf.zeros(tf.shape(items), dtype)),
    )
    grad_tail_queries, grad_tail = gradients(steps * size, tail)
    rows = (steps * size + tf.range(tail))[:, None]
    grad_items = tf.tensor_scatter_nd_add(grad_items, rows, grad_tail)
    return grad_queries + grad_tail_queries, tf.cast(grad_items, items.dtype)


@tf.function(jit_compile=True)
def _chunked_backward(queries, items, labels, log_sum_exp, upstream, chunk, inv_temperature):
    """Recomputes each chunk of logits: G = (softmax - onehot) * upstream / T; dQ = G W, dW = G^T Q."""
    dtype = queries.dtype
    scale = (tf.cast(upstream, dtype) * inv_temperature)[:, None]

    def coefficients(logits, rows):
        one_hot = tf.equal(labels[:, None], rows[None, :])
        softmax = tf.exp(tf.minimum(logits - log_sum_exp[:, None], 0.0))  # <= 1, as above
        return (softmax - tf.cast(one_hot, dtype)) * scale

    return _gradient_loop(queries, items, chunk, inv_temperature, coefficients)


def _chunked_losses(queries, items, labels, chunk, inv_temperature):
    @tf.custom_gradient
    def op(q, w):
        # stop_gradient: the kernels are opaque to any tape, so TensorFlow does not instrument their
        # loops for autodiff (which XLA could not compile and which would keep every chunk alive).
        q, w = tf.stop_gradient(q), tf.stop_gradient(w)
        losses, log_sum_exp = _chunked_forward(q, w, labels, chunk, inv_temperature)

        def grad(upstream):
            return _chunked_backward(
                q, w, labels, log_sum_exp, tf.stop_gradient(upstream), chunk, inv_temperature
            )

        return losses, grad

    return op(queries, items)


# A sharded table: each shard's log-sum-exp and positive logits, and their gradients, are computed on
# the shard's device by a custom gradient of its own (created under the shard's device, so that
# everything reading the whole shard is placed there), and merged on the caller's device.


@tf.function(jit_compile=True)
def _shard_forward(queries, items, labels, chunk, inv_temperature):
    """One shard's log-sum-exp ``[N]`` and positive logits ``[N]`` (0 where the label is elsewhere)."""
    dtype = queries.dtype
    scaled_queries = queries * inv_temperature
    running_max, running_sum = _running_max_and_sum(scaled_queries, items, chunk)
    here = tf.logical_and(labels >= 0, labels < tf.shape(items, out_type=labels.dtype)[0])
    positives = tf.cast(tf.gather(items, tf.where(here, labels, 0)), dtype)
    positive_logits = tf.reduce_sum(scaled_queries * positives, axis=1)
    log_sum_exp = running_max + tf.math.log(running_sum)
    return log_sum_exp, tf.where(here, positive_logits, tf.zeros([], dtype))


@tf.function(jit_compile=True)
def _shard_backward(
    queries, items, labels, log_sum_exp, upstream_lse, upstream_positive, chunk, inv_temperature
):
    """G = (softmax_shard * upstream_lse + onehot * upstream_positive) / T; dQ = G W, dW = G^T Q."""
    dtype = queries.dtype
    scale_lse = (tf.cast(upstream_lse, dtype) * inv_temperature)[:, None]
    scale_positive = (tf.cast(upstream_positive, dtype) * inv_temperature)[:, None]

    def coefficients(logits, rows):
        one_hot = tf.equal(labels[:, None], rows[None, :])
        softmax = tf.exp(tf.minimum(logits - log_sum_exp[:, None], 0.0))
        return softmax * scale_lse + tf.cast(one_hot, dtype) * scale_positive

    return _gradient_loop(queries, items, chunk, inv_temperature, coefficients)


def _shard_losses(queries, part, labels, chunk, inv_temperature):
    """``(log-sum-exp, positive logits)`` of one shard, with gradients, all on its device."""

    @tf.custom_gradient
    def op(q, w):
        q, w = tf.stop_gradient(q), tf.stop_gradient(w)
        log_sum_exp, positive_logits = _shard_forward(q, w, labels, chunk, inv_temperature)

        def grad(upstream_lse, upstream_positive):
            # The tape calls this outside the forward's device scope: placed again.
            with _utils.on_device_of(part):
                return _shard_backward(
                    q,
                    w,
                    labels,
                    log_sum_exp,
                    tf.stop_gradient(upstream_lse),
                    tf.stop_gradient(upstream_positive),
                    chunk,
                    inv_temperature,
                )

        return (log_sum_exp, positive_logits), grad

    with _utils.on_device_of(part):
        return op(queries, tf.convert_to_tensor(part))


def _sharded_chunked_losses(queries, table, labels, chunk, inv_temperature):
    """:func:`_chunked_losses` over a sharded table, never concatenated.

    Each shard computes its log-sum-exp ``lse_s`` and its positive logits on its device (``[N]``
    each travel back), merged as ``lse = M + log sum_s exp(lse_s - M)`` with ``M = max_s lse_s``;
    backward, each shard recomputes its chunks on its device and keeps its dense gradient there
    (``softmax = exp(logits - lse_s) * exp(lse_s - lse)``); the query gradients are summed.
    """
    log_sum_exps, positive_logits = [], []
    for part, offset in table.parts:
        size = chunk or tf.compat.dimension_value(part.shape[0]) or 1
        lse, positive = _shard_losses(queries, part, labels - offset, size, inv_temperature)
        log_sum_exps.append(lse)
        positive_logits.append(positive)
    stacked = tf.stack(log_sum_exps)
    top = tf.stop_gradient(tf.reduce_max(stacked, axis=0))
    log_sum_exp = top + tf.math.log(tf.reduce_sum(tf.exp(stacked - top), axis=0))
    return log_sum_exp - tf.add_n(positive_logits)


def catalog_cross_entropy_per_query(
    queries: tf.Tensor,
    table: TableShards,
    labels: tf.Tensor,
    valid: tf.Tensor,
    chunk_size: int | None,
    temperature: float,
) -> tf.Tensor:
    """Per-query losses ``[N]`` (0 where not valid, NaN where a valid query reads a non-finite
    value: its own embedding or any item row) of flattened, validated inputs; ``table`` is a
    :class:`~tfsmooth.ops.TableShards` (sharded: chunked shard by shard, whatever ``chunk_size``)."""
    dtype = _utils.compute_dtype(queries.dtype)
    # Rows that do not count are zeroed, so nothing they hold (padding, garbage) can reach the loss.
    queries = tf.where(valid[:, None], tf.cast(queries, dtype), tf.zeros([], dtype))
    # Every query reads every item: one non-finite row makes every loss NaN. One pass over the
    # table, next to the [N, C, d] work of the loss itself.
    finite = tf.logical_and(_utils.finite_rows(queries), _utils.all_finite(table))
    inv_temperature = 1.0 / temperature
    item_embeddings = table.parts[0][0]
    if table.sharded:
        losses = _sharded_chunked_losses(queries, table, labels, chunk_size, inv_temperature)
    elif chunk_size is None:
        logits = tf.matmul(queries, tf.cast(item_embeddings, dtype), transpose_b=True)
        if temperature != 1.0:
            logits = logits * inv_temperature
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    else:
        losses = _chunked_losses(queries, item_embeddings, labels, chunk_size, inv_temperature)
    losses = _utils.poison_nonfinite(losses, valid, finite)
    return tf.where(valid, losses, tf.zeros_like(losses))


def _check_options(chunk_size: Any, temperature: Any) -> tuple[int | None, float]:
    return (
        check_int("chunk_size", chunk_size, 1, allow_none=True),
        check_float("temperature", temperature, 0.0, min_inclusive=False, float32=True),
    )


@register_serializable
def catalog_cross_entropy(
    queries: Any,
    item_embeddings: Any,
    labels: Any,
    *,
    chunk_size: int | None = None,
    mask: Any = None,
    temperature: float = 1.0,
) -> tf.Tensor:
    """Exact softmax cross-entropy of each query against the whole item catalog, averaged.

    .. math::

        \\mathcal{L} = \\frac{1}{|V|} \\sum_{i \\in V} \\Big(
            \\log \\sum_{j=1}^{C} e^{x_i^\\top w_j / T} - x_i^\\top w_{y_i} / T \\Big)

    over the valid queries :math:`V` (``mask``), with queries :math:`x_i`, item table :math:`W`
    (``[C, d]``), labels :math:`y_i` and temperature :math:`T`.

    Without ``chunk_size`` the ``[N, C]`` logits are materialised, as
    ``tf.nn.sparse_softmax_cross_entropy_with_logits`` does. With ``chunk_size`` they never are (the
    idea of Cut Cross-Entropy): the forward pass runs an online log-sum-exp over item chunks and keeps
    only one log-sum-exp per query; the backward pass recomputes each chunk of logits and accumulates
    ``(softmax - onehot) / T`` times the items (query gradient) and times the queries (item gradient).
    Both are single XLA programs whose working set is ``[N, chunk_size]``; the price is one extra
    ``[N, C]`` matrix product (the recomputation). Loss and gradients equal the materialised ones up to
    floating-point rounding. The item gradient is dense, as it must be: every item is in every softmax.

    Half-precision inputs (``float16``, ``bfloat16``) are computed with ``float32`` logits and softmax;
    gradients come back in the inputs' dtypes.

    Non-finite values: a valid query that is NaN or infinite has a NaN loss, and a non-finite entry
    anywhere in the item table (every query reads every item) makes every loss NaN -- never a finite
    loss with NaN gradients. Masked queries are never read. Logits that overflow float32 (a tiny
    temperature) give an infinite or NaN loss, never a finite wrong one.

    Args:
        queries: float ``[..., d]``: query (e.g. sequence) embeddings.
        item_embeddings: float ``[C, d]``: the item table (a tensor or variable), or a sharded one
            (a ``ShardedVariable``, a list of shard variables): each shard's log-sum-exp and
            gradient are computed on the shard's device and merged, never concatenating the
            table; each shard gets its own dense gradient.
        labels: integer ``[...]`` (or ``[..., 1]``): the positive item of each query, in ``[0, C)``.
            Floats are accepted only with whole values (Keras hands labels over as float32).
        chunk_size: int or None. Items per chunk; ``None`` materialises all logits (a sharded
            table: one chunk per shard). Values above ``C`` are clipped to ``C``.
        mask: optional ``[...]``, bool or 0/1: which queries count (e.g. not padding).
        temperature: float ``> 0``, representable in float32. Logits are divided by it.

    Returns:
        A scalar: the mean loss over the valid queries (0 if there are none), in the compute dtype
        (``float32`` for half-precision inputs).

    Raises:
        TypeError: for non-float queries/table, non-numeric or ``None`` labels, a bad ``chunk_size``
            or ``temperature`` type.
        ValueError: for mismatched shapes, ``chunk_size < 1``, ``temperature <= 0`` or not
            representable in float32, non-integral float labels or labels outside ``[0, C)`` at
            valid positions (eagerly; inside ``tf.function`` the same message comes as an
            ``InvalidArgumentError``; in XLA-compiled code such labels are left out of the loss).

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.losses import catalog_cross_entropy
    >>> queries = tf.random.normal([512, 32])
    >>> items = tf.Variable(tf.random.normal([100_000, 32]))
    >>> labels = tf.random.uniform([512], maxval=100_000, dtype=tf.int32)
    >>> with tf.GradientTape() as tape:
    ...     loss = catalog_cross_entropy(queries, items, labels, chunk_size=8192)
    >>> grad = tape.gradient(loss, items)  # dense [100000, 32]; no [512, 100000] matrix was built

    References:
        - [Wijmans et al. Cut Your Losses in Large-Vocabulary Language Models (2024)](
          https://arxiv.org/abs/2411.09009)
        - [Mezentsev et al. Scalable Cross-Entropy Loss for Sequential Recommendations with Large
          Item Catalogs (2024)](https://arxiv.org/abs/2409.18721) (full CE is the reference there)
    """
    chunk_size, temperature = _check_options(chunk_size, temperature)
    q, w, y, valid = _utils.prepare(queries, item_embeddings, labels, mask, "catalog_cross_entropy")
    losses = catalog_cross_entropy_per_query(q, w, y, valid, chunk_size, temperature)
    return _utils.masked_mean(losses, valid)


@register_serializable
class CatalogCrossEntropy(CatalogLoss):
    """Keras loss: exact softmax cross-entropy against the whole catalog (:func:`catalog_cross_entropy`).

    ``y_pred`` is the queries ``[..., d]`` and ``y_true`` the item indices ``[...]``; the item table
    is bound here (``item_embeddings=``) or passed per call. ``sample_weight`` weights queries (0
    removes one); the default reduction is the weighted mean over the queries that count.

    .. math::

        \\ell_i = \\log \\sum_{j=1}^{C} e^{x_i^\\top w_j / T} - x_i^\\top w_{y_i} / T

    Args:
        item_embeddings: the item table: an ``Embedding`` layer, a variable, a tensor, a sharded
            table (a ``ShardedVariable`` or a list of shard variables, never concatenated) or a
            callable returning ``[C, d]``. Not part of the config (bind it again after loading).
        chunk_size: int or None. Items per chunk; ``None`` materialises the ``[N, C]`` logits.
        temperature: float ``> 0``.
        reduction: ``"sum_over_batch_size"`` (weighted mean), ``"sum"`` or ``"none"``.
        name: the loss name.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.losses import CatalogCrossEntropy
    >>> items = tf.keras.layers.Embedding(50_000, 32)
    >>> items.build((None,))
    >>> loss = CatalogCrossEntropy(items, chunk_size=4096)
    >>> value = loss(tf.constant([3, 7]), tf.random.normal([2, 32]))

    References:
        - [Wijmans et al. (2024)](https://arxiv.org/abs/2411.09009)
    """

    def __init__(
        self,
        item_embeddings: Any = None,
        *,
        chunk_size: int | None = None,
        temperature: float = 1.0,
        reduction: str = "sum_over_batch_size",
        name: str = "catalog_cross_entropy",
    ):
        super().__init__(item_embeddings, reduction=reduction, name=name)
        self.chunk_size, self.temperature = _check_options(chunk_size, temperature)

    def per_query(self, queries, item_embeddings, labels, mask):
        q, w, y, valid = _utils.prepare(
            queries, item_embeddings, labels, mask, "CatalogCrossEntropy"
        )
        losses = catalog_cross_entropy_per_query(q, w, y, valid, self.chunk_size, self.temperature)
        return losses, valid

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(chunk_size=self.chunk_size, temperature=self.temperature)
        return config
