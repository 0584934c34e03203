"""Sampled softmax with log-Q correction: the classic baseline for large-catalog retrieval losses."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth._keras import register_serializable
from tfsmooth._validation import check_bool, check_int, check_seed, is_integer
from tfsmooth.losses import _utils
from tfsmooth.losses._base import CatalogLoss

__all__ = ["SampledSoftmaxCrossEntropy", "sampled_softmax_cross_entropy"]

SAMPLINGS = ("uniform", "log_uniform")

# Log expected counts are floored here, so an item the proposal never draws (weight 0) that is
# nevertheless a label gets a very large correction rather than an infinite one (which would be NaN).
_MIN_LOG_EXPECTED = -60.0


def _check_sampling(sampling: Any) -> str | np.ndarray:
    if isinstance(sampling, str):
        if sampling not in SAMPLINGS:
            raise ValueError(
                f"`sampling` must be one of {SAMPLINGS} or a 1-D array of non-negative item weights. "
                f"Received: sampling={sampling!r}"
            )
        return sampling
    if tf.is_tensor(sampling) and not tf.executing_eagerly():
        raise TypeError(
            "`sampling` weights must be concrete values (a numpy array or list), not a symbolic "
            f"tensor. Received: sampling={sampling!r}"
        )
    weights = np.asarray(sampling.numpy() if tf.is_tensor(sampling) else sampling, np.float64)
    if weights.ndim != 1 or weights.size == 0:
        raise ValueError(
            "`sampling` given as item weights must be a non-empty 1-D array. "
            f"Received: sampling of shape {weights.shape}"
        )
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(
            "`sampling` weights must be finite, >= 0 and not all 0. "
            f"Received: min={weights.min()!r}, sum={weights.sum()!r}"
        )
    return weights.astype(np.float64)


def _uniforms(shape, seed, dtype=tf.float32):
    if seed is None or is_integer(seed):
        return tf.random.uniform(shape, dtype=dtype, seed=seed)
    return tf.random.stateless_uniform(shape, seed=seed, dtype=dtype, alg="philox")


def draw_candidates(
    sampling: str | np.ndarray, num_items: tf.Tensor, num_sampled: int, seed: Any
) -> tuple[tf.Tensor, Any]:
    """Draws ``num_sampled`` item ids with replacement from the proposal.

    Returns ``(ids [S] int32, log_probability)`` where ``log_probability(ids)`` gives the log
    proposal probability of any ids (sampled ones or labels).
    """
    u = _uniforms([num_sampled], seed, tf.float64)
    n = tf.cast(num_items, tf.float64)
    if isinstance(sampling, str) and sampling == "uniform":
        ids = tf.cast(tf.floor(u * n), tf.int32)

        def log_probability(x):
            return -tf.math.log(n) + tf.zeros(tf.shape(x), tf.float64)

    elif isinstance(sampling, str):  # log_uniform: P(k) = log((k + 2) / (k + 1)) / log(C + 1)
        ids = tf.cast(tf.floor(tf.exp(u * tf.math.log1p(n))), tf.int32) - 1

        def log_probability(x):
            k = tf.cast(x, tf.float64)
            return tf.math.log(tf.math.log1p(1.0 / (k + 1.0)) / tf.math.log1p(n))

    else:
        weights = tf.constant(sampling / sampling.sum(), tf.float64)
        tf.debugging.assert_equal(
            tf.shape(weights, out_type=tf.int32)[0],
            tf.cast(num_items, tf.int32),
            message="`sampling` weights must have one entry per item",
        )
        cdf = tf.math.cumsum(weights)
        ids = tf.searchsorted(cdf, u * cdf[-1], side="right", out_type=tf.int32)

        def log_probability(x):
            return tf.math.log(tf.gather(weights, x))

    ids = tf.clip_by_value(ids, 0, tf.cast(num_items, tf.int32) - 1)
    return ids, log_probability


@tf.function(jit_compile=True)
def _sampled_losses(queries, positives, negatives, positive_log_q, negative_log_q, hits):
    """Softmax cross-entropy of [positive, S sampled negatives] per query, with log-Q correction."""
    dtype = queries.dtype
    positive_logits = tf.reduce_sum(queries * tf.cast(positives, dtype), axis=1)
    positive_logits -= tf.cast(positive_log_q, dtype)
    negative_logits = tf.matmul(queries, tf.cast(negatives, dtype), transpose_b=True)
    negative_logits -= tf.cast(negative_log_q, dtype)[None, :]
    negative_logits = tf.where(hits, tf.constant(-np.inf, dtype), negative_logits)
    logits = tf.concat([positive_logits[:, None], negative_logits], axis=1)
    return tf.reduce_logsumexp(logits, axis=1) - positive_logits


def sampled_softmax_per_query(
    queries, table, labels, valid, num_sampled, sampling, log_q_correction,
    remove_accidental_hits, seed,
):  # fmt: skip
    """Per-query losses ``[N]`` (0 where not valid, NaN where a valid query or an item row it
    reads -- its positive or a sampled negative -- is not finite) of flattened, validated inputs;
    ``table`` is a :class:`~tfsmooth.ops.TableShards` (sharded or not)."""
    dtype = _utils.compute_dtype(queries.dtype)
    queries = tf.where(valid[:, None], tf.cast(queries, dtype), tf.zeros([], dtype))
    if table.sharded:
        num_items = tf.constant(table.num_items, tf.int32)
        static_items = table.num_items
        shape = (table.num_items, table.dim)
    else:
        num_items = tf.shape(table.parts[0][0], out_type=tf.int32)[0]
        static_items = table.parts[0][0].shape[0]
        shape = table.parts[0][0].shape
    if not isinstance(sampling, str) and static_items is not None and sampling.size != static_items:
        raise ValueError(
            "`sampling` weights must have one entry per item. "
            f"Received: {sampling.size} weights for item_embeddings of shape {shape}"
        )
    sampled, log_probability = draw_candidates(sampling, num_items, num_sampled, seed)
    sampled = tf.stop_gradient(sampled)
    if log_q_correction:
        log_s = tf.math.log(tf.constant(float(num_sampled), tf.float64))
        positive_log_q = tf.maximum(log_probability(labels) + log_s, _MIN_LOG_EXPECTED)
        negative_log_q = tf.maximum(log_probability(sampled) + log_s, _MIN_LOG_EXPECTED)
    else:
        positive_log_q = tf.zeros(tf.shape(labels), tf.float64)
        negative_log_q = tf.zeros([num_sampled], tf.float64)
    if remove_accidental_hits:
        hits = tf.equal(labels[:, None], sampled[None, :])
    else:
        hits = tf.zeros([tf.shape(labels)[0], num_sampled], tf.bool)
    # Gathers outside XLA: the table's gradient is a tf.IndexedSlices of the gathered rows (one per
    # shard of a sharded table, each shard gathering its own rows).
    positives = _utils.gather_rows(table, labels)
    negatives = _utils.gather_rows(table, sampled)
    losses = _sampled_losses(queries, positives, negatives, positive_log_q, negative_log_q, hits)
    # Only the rows read are checked: the loss is sparse, and rows it never reads cannot reach it.
    finite = _utils.finite_rows(queries) & _utils.finite_rows(positives)
    finite &= tf.reduce_all(tf.math.is_finite(negatives))
    losses = _utils.poison_nonfinite(losses, valid, finite)
    return tf.where(valid, losses, tf.zeros_like(losses))


def _check_options(num_sampled, sampling, log_q_correction, remove_accidental_hits, seed):
    return (
        check_int("num_sampled", num_sampled, 1),
        _check_sampling(sampling),
        check_bool("log_q_correction", log_q_correction),
        check_bool("remove_accidental_hits", remove_accidental_hits),
        _utils.check_seed(seed),
    )


@register_serializable
def sampled_softmax_cross_entropy(
    queries: Any,
    item_embeddings: Any,
    labels: Any,
    *,
    num_sampled: int = 1024,
    sampling: str | Any = "log_uniform",
    log_q_correction: bool = True,
    remove_accidental_hits: bool = True,
    mask: Any = None,
    seed: Any = None,
) -> tf.Tensor:
    """Sampled softmax: cross-entropy against the positive and ``S`` items drawn from a proposal Q.

    The ``S = num_sampled`` negatives are drawn with replacement from Q and shared by all queries of
    the call. With log-Q correction every logit is shifted by its log expected count, which makes
    the sampled softmax an unbiased-in-the-limit estimate of the full one (Bengio & Senecal; Jean et
    al.; the same convention as ``tf.nn.sampled_softmax_loss``):

    .. math::

        \\ell_i = \\log\\Big(e^{s_{i y_i}} + \\sum_{k=1}^{S} e^{s_{i j_k}}\\Big) - s_{i y_i}, \\qquad
        s_{ij} = x_i^\\top w_j - \\log\\big(S\\, Q(j)\\big)

    Sampled items equal to the query's own positive ("accidental hits") are removed.

    Non-finite values: a valid query, its positive's row or a sampled row that is NaN or infinite
    makes the loss NaN, never a finite loss with NaN gradients. Rows the call never reads (neither a
    label nor drawn) cannot reach the loss nor the gradients, and are not checked: the loss is
    sparse, it does no work proportional to the table.

    Args:
        queries: float ``[..., d]``.
        item_embeddings: float ``[C, d]``, or a sharded table (a ``ShardedVariable``, a list of
            shard variables): each shard gathers its own rows, the table is never concatenated.
        labels: integer ``[...]`` in ``[0, C)`` (floats only with whole values).
        num_sampled: int. Negatives per call, shared by the queries.
        sampling: the proposal Q: ``"uniform"``; ``"log_uniform"`` (Zipfian,
            ``Q(k) = log((k + 2) / (k + 1)) / log(C + 1)``, for ids sorted by decreasing popularity,
            as ``tf.random.log_uniform_candidate_sampler``); or a 1-D array of ``C`` non-negative
            item weights (e.g. interaction counts: the unigram proposal).
        log_q_correction: bool. Subtract ``log(S Q(j))`` from every logit.
        remove_accidental_hits: bool.
        mask: optional ``[...]`` bool or 0/1: which queries count.
        seed: None, an int (op-level seed: fresh draws every call) or a pair of ints (stateless).

    Returns:
        A scalar: the mean loss over the valid queries (0 if none).

    Raises:
        TypeError / ValueError: for bad dtypes, shapes, options or labels, as
            :func:`tfsmooth.losses.catalog_cross_entropy`.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.losses import sampled_softmax_cross_entropy
    >>> loss = sampled_softmax_cross_entropy(
    ...     tf.random.normal([64, 16]), tf.random.normal([5000, 16]),
    ...     tf.random.uniform([64], maxval=5000, dtype=tf.int32), num_sampled=256)

    References:
        - [Jean et al. On Using Very Large Target Vocabulary for Neural Machine Translation (2015)](
          https://arxiv.org/abs/1412.2007)
        - [Yi et al. Sampling-bias-corrected neural modeling for large corpus item recommendations
          (2019)](https://research.google/pubs/pub48840/)
    """
    options = _check_options(num_sampled, sampling, log_q_correction, remove_accidental_hits, seed)
    q, w, y, valid = _utils.prepare(
        queries, item_embeddings, labels, mask, "sampled_softmax_cross_entropy"
    )
    losses = sampled_softmax_per_query(q, w, y, valid, *options)
    return _utils.masked_mean(losses, valid)


@register_serializable
class SampledSoftmaxCrossEntropy(CatalogLoss):
    """Keras loss: sampled softmax with log-Q correction (:func:`sampled_softmax_cross_entropy`).

    .. math::

        \\ell_i = \\log\\Big(e^{s_{i y_i}} + \\sum_{k=1}^{S} e^{s_{i j_k}}\\Big) - s_{i y_i}, \\qquad
        s_{ij} = x_i^\\top w_j - \\log\\big(S\\, Q(j)\\big)

    Args:
        item_embeddings: the item table (an ``Embedding`` layer, a variable, a tensor, a sharded
            table -- a ``ShardedVariable`` or a list of shard variables -- or a callable).
        num_sampled: int.
        sampling: ``"uniform"``, ``"log_uniform"`` or a 1-D array of item weights (kept in the
            config as a list).
        log_q_correction: bool.
        remove_accidental_hits: bool.
        seed: None or an int ``>= 0``.
        reduction: ``"sum_over_batch_size"``, ``"sum"`` or ``"none"``.
        name: the loss name.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> from tfsmooth.losses import SampledSoftmaxCrossEntropy
    >>> counts = np.random.default_rng(0).integers(1, 100, size=5000)
    >>> loss = SampledSoftmaxCrossEntropy(tf.random.normal([5000, 16]), sampling=counts)
    >>> value = loss(tf.constant([1, 2]), tf.random.normal([2, 16]))

    References:
        - [Jean et al. (2015)](https://arxiv.org/abs/1412.2007)
    """

    def __init__(
        self,
        item_embeddings: Any = None,
        *,
        num_sampled: int = 1024,
        sampling: str | Any = "log_uniform",
        log_q_correction: bool = True,
        remove_accidental_hits: bool = True,
        seed: int | None = None,
        reduction: str = "sum_over_batch_size",
        name: str = "sampled_softmax_cross_entropy",
    ):
        super().__init__(item_embeddings, reduction=reduction, name=name)
        seed = check_seed("seed", seed)  # the op-level seed of the draws: None or an int
        (
            self.num_sampled,
            self.sampling,
            self.log_q_correction,
            self.remove_accidental_hits,
            self.seed,
        ) = _check_options(num_sampled, sampling, log_q_correction, remove_accidental_hits, seed)

    def per_query(self, queries, item_embeddings, labels, mask):
        q, w, y, valid = _utils.prepare(
            queries, item_embeddings, labels, mask, "SampledSoftmaxCrossEntropy"
        )
        losses = sampled_softmax_per_query(
            q,
            w,
            y,
            valid,
            self.num_sampled,
            self.sampling,
            self.log_q_correction,
            self.remove_accidental_hits,
            self.seed,
        )
        return losses, valid

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_sampled=self.num_sampled,
            sampling=self.sampling if isinstance(self.sampling, str) else self.sampling.tolist(),
            log_q_correction=self.log_q_correction,
            remove_accidental_hits=self.remove_accidental_hits,
            seed=self.seed,
        )
        return config
