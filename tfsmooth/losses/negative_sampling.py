"""Binary cross-entropy against uniformly sampled negatives: SASRec's original loss (private).

Reached by name through the loss registry (``tfsmooth.losses.get("bce", num_negatives=...)``).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfsmooth._keras import register_serializable
from tfsmooth._validation import check_int, check_seed
from tfsmooth.losses import _utils
from tfsmooth.losses._base import CatalogLoss


@register_serializable
class _NegativeSamplingBinaryCrossEntropy(CatalogLoss):
    """SASRec's original loss: -log s(x.w_pos) - sum_k log(1 - s(x.w_neg_k)), negatives uniform.

    Row 0 of the item table is padding (the layout of :func:`tfsmooth.data.build_sequences` and
    SASRec), so negatives are drawn uniformly from rows ``1..C`` without the positive.
    """

    def __init__(
        self,
        item_embeddings: Any = None,
        *,
        num_negatives: int = 1,
        seed: int | None = None,
        **kwargs: Any,
    ):
        kwargs.setdefault("name", "negative_sampling_binary_cross_entropy")
        super().__init__(item_embeddings, **kwargs)
        self.num_negatives = check_int("num_negatives", num_negatives, 1)
        self.seed = check_seed("seed", seed)

    def per_query(self, queries, item_embeddings, labels, mask):
        q, table, y, valid = _utils.prepare(queries, item_embeddings, labels, mask, "bce")
        dtype = _utils.compute_dtype(q.dtype)
        q = tf.where(valid[:, None], tf.cast(q, dtype), tf.zeros([], dtype))
        if table.sharded:
            num_items = tf.constant(table.num_items - 1, tf.int32)
        else:
            num_items = tf.shape(table.parts[0][0])[0] - 1
        offsets = tf.random.uniform(
            [tf.shape(y)[0], self.num_negatives],
            maxval=tf.maximum(num_items - 1, 1),
            dtype=tf.int32,
            seed=self.seed,
        )
        # Items 1..C without the positive: shift the positive by 1..C-1, cyclically.
        negatives = 1 + (tf.maximum(y - 1, 0)[:, None] + 1 + offsets) % tf.maximum(num_items, 1)
        positive = tf.reduce_sum(q * tf.cast(_utils.gather_rows(table, y), dtype), axis=1)
        negative = tf.einsum("nd,nkd->nk", q, tf.cast(_utils.gather_rows(table, negatives), dtype))
        losses = tf.nn.softplus(-positive) + tf.reduce_sum(tf.nn.softplus(negative), axis=1)
        return tf.where(valid, losses, tf.zeros_like(losses)), valid

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(num_negatives=self.num_negatives, seed=self.seed)
        return config
