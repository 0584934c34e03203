"""The Keras shell shared by the catalog losses (private).

A catalog loss needs three things Keras' ``Loss(y_true, y_pred, sample_weight)`` does not carry: the
item table, which queries count, and a mean over the queries that count (Scalable Cross-Entropy drops
the queries no bucket chose). :class:`CatalogLoss` adds them and keeps both Keras flavours' conventions:

- ``y_pred`` is the queries ``[..., d]``, ``y_true`` the integer labels ``[...]`` (``[..., 1]`` too).
- The item table is bound at construction (``item_embeddings=``: an ``Embedding`` layer, a variable,
  a tensor, a sharded table -- a ``ShardedVariable`` or a list of shard variables, read shard by
  shard and never concatenated -- or a zero-argument callable returning ``[C, d]``) or passed per
  call. It is state, not
  configuration: ``get_config`` holds the hyper-parameters only, like a layer's config holds no weights.
- ``sample_weight`` weights the queries; a weight of 0 removes a query altogether (as ``mask`` does).
- ``reduction="sum_over_batch_size"`` is the weighted mean over the queries that count
  (``sum(w l) / sum(w)``), ``"sum"`` the weighted sum, ``"none"`` the per-query losses (0 where a
  query does not count) in the shape of the labels. Under a ``tf.distribute`` strategy a Keras 3 mean
  is divided by the number of replicas, as every Keras 3 loss does; tf-keras leaves that to the caller
  (its ``compile`` machinery), as every tf-keras loss does (``_keras.scale_for_replicas``).
  :meth:`CatalogLoss.unscaled` is the mean without that division, for models that scale themselves.
- ``y_true`` may be floating (tf-keras ``fit`` hands labels over as float32) when its values are
  whole numbers; a non-integral label raises a ``ValueError`` naming ``y_true``, never truncated.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfsmooth._keras import keras, native_variable, scale_for_replicas
from tfsmooth._validation import check_choice
from tfsmooth.ops.checks import integer_labels

REDUCTIONS = ("sum_over_batch_size", "sum", "none")


def resolve_item_embeddings(item_embeddings: Any) -> Any:
    """The ``[C, d]`` table from an ``Embedding`` layer, a variable, a tensor or a callable.

    Returned as it is (a layer gives its ``embeddings``, a Keras 3 variable the ``tf.Variable``
    it wraps, a callable what it returns), never converted: a sharded table (a ``ShardedVariable``,
    a list of shard variables) stays in shards, and ``_utils.prepare`` converts an unsharded one.
    """
    if item_embeddings is None:
        raise ValueError(
            "The loss has no item table: pass `item_embeddings=` (an Embedding layer, a variable, a "
            "tensor or a callable returning [num_items, d]) to the constructor or to the call. "
            "Received: item_embeddings=None"
        )
    if isinstance(item_embeddings, keras.layers.Layer):
        if getattr(item_embeddings, "embeddings", None) is not None:
            return native_variable(item_embeddings.embeddings)
        if isinstance(item_embeddings, keras.layers.Embedding):
            raise ValueError(
                f"The Embedding layer {item_embeddings.name!r} given as `item_embeddings` is not "
                "built yet: call it once (or `build` it) before computing the loss."
            )
        raise TypeError(
            "A layer given as `item_embeddings` must be an Embedding layer; for a layer that "
            "computes the table from item features pass a callable, e.g. "
            f"`lambda: item_tower(item_features)`. Received: item_embeddings={item_embeddings!r}"
        )
    if isinstance(item_embeddings, (tf.Tensor, tf.Variable)) or hasattr(item_embeddings, "shape"):
        return native_variable(item_embeddings)
    if isinstance(item_embeddings, (list, tuple)) and item_embeddings:
        return item_embeddings  # shard variables (anything else fails in _utils.prepare)
    if callable(item_embeddings):
        return native_variable(item_embeddings())
    raise TypeError(
        "`item_embeddings` must be an Embedding layer, a variable, a tensor or a callable returning "
        f"one. Received: item_embeddings={item_embeddings!r}"
    )


def _weights_like(sample_weight: Any, labels: tf.Tensor) -> tf.Tensor:
    weights = tf.convert_to_tensor(sample_weight)
    if not weights.dtype.is_floating:
        weights = tf.cast(weights, tf.float32)
    rank = labels.shape.rank
    shape_error = ValueError(
        "`sample_weight` must broadcast against the labels (one weight per query, or a scalar). "
        f"Received: sample_weight.shape={weights.shape}, labels.shape={labels.shape}"
    )
    if weights.shape.rank is not None and rank is not None:
        if weights.shape.rank == rank + 1 and weights.shape[-1] == 1:
            weights = tf.squeeze(weights, -1)
        if weights.shape.rank > rank:
            raise shape_error
        for _ in range(rank - weights.shape.rank):
            weights = tf.expand_dims(weights, -1)
        try:
            fits = tf.broadcast_static_shape(weights.shape, labels.shape).is_compatible_with(
                labels.shape
            )
        except ValueError:
            fits = False
        if not fits:
            raise shape_error
    return tf.broadcast_to(weights, tf.shape(labels))


class CatalogLoss(keras.losses.Loss):
    """Base of the Keras catalog losses: binds the item table, reduces over the counted queries."""

    def __init__(
        self,
        item_embeddings: Any = None,
        *,
        reduction: str = "sum_over_batch_size",
        name: str | None = None,
    ):
        check_choice("reduction", reduction, REDUCTIONS)
        super().__init__(name=name, reduction=reduction)
        self.item_embeddings = item_embeddings

    # Subclasses return (per-query losses [N], counted [N] bool) for flattened inputs.
    def per_query(self, queries, item_embeddings, labels, mask):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(
        self,
        y_true: Any,
        y_pred: Any,
        sample_weight: Any = None,
        *,
        item_embeddings: Any = None,
        mask: Any = None,
    ) -> tf.Tensor:
        """:meth:`unscaled` (same arguments), scaled for replicas like the flavour's own losses.

        The one difference: a ``"sum_over_batch_size"`` mean goes through
        ``_keras.scale_for_replicas`` (under a ``tf.distribute`` strategy Keras 3 divides it by the
        number of replicas; tf-keras leaves that to ``compile``).
        """
        loss = self.unscaled(
            y_true, y_pred, sample_weight, item_embeddings=item_embeddings, mask=mask
        )
        if self.reduction == "sum_over_batch_size":
            loss = scale_for_replicas(loss)
        return loss

    def unscaled(
        self,
        y_true: Any,
        y_pred: Any,
        sample_weight: Any = None,
        *,
        item_embeddings: Any = None,
        mask: Any = None,
    ) -> tf.Tensor:
        """The loss of queries ``y_pred [..., d]`` for labels ``y_true [...]``, reduced as configured.

        A mean is never divided by the number of replicas, in either flavour: this is for models
        that compute their own loss (``compute_loss``) and scale it themselves.

        Args:
            y_true: integer item indices ``[...]`` (or ``[..., 1]``).
            y_pred: the queries ``[..., d]``.
            sample_weight: optional weights broadcastable to the labels; 0 removes a query.
            item_embeddings: the item table for this call, overriding the bound one.
            mask: optional boolean mask of the labels' shape; False removes a query.

        Returns:
            The reduced loss (a scalar), or for ``reduction="none"`` the per-query losses in the
            labels' shape (0 where a query does not count).
        """
        labels, weighted, weights = self._weighted_losses(
            y_true, y_pred, sample_weight, item_embeddings, mask
        )
        if self.reduction == "none":
            return tf.reshape(weighted, tf.shape(labels))
        total = tf.reduce_sum(weighted)
        if self.reduction == "sum":
            return total
        return tf.math.divide_no_nan(total, tf.reduce_sum(weights))

    def call(self, y_true, y_pred):
        """Per-query losses in the labels' shape (0 where a query does not count)."""
        labels, weighted, _ = self._weighted_losses(y_true, y_pred, None, None, None)
        return tf.reshape(weighted, tf.shape(labels))

    def _weighted_losses(self, y_true, y_pred, sample_weight, item_embeddings, mask):
        table = resolve_item_embeddings(
            item_embeddings if item_embeddings is not None else self.item_embeddings
        )
        labels = integer_labels(y_true, "y_true")
        if y_pred is None:
            raise TypeError("`y_pred` must be the queries [..., d]. Received: y_pred=None")
        queries = tf.convert_to_tensor(y_pred)
        if (
            labels.shape.rank is not None
            and queries.shape.rank is not None
            and labels.shape.rank == queries.shape.rank
            and labels.shape[-1] == 1
        ):
            labels = tf.squeeze(labels, -1)
        weights = None
        keep = mask
        if sample_weight is not None:
            weights = _weights_like(sample_weight, labels)
            nonzero = tf.not_equal(weights, 0)
            keep = nonzero if keep is None else tf.logical_and(tf.cast(keep, tf.bool), nonzero)
        losses, counted = self.per_query(queries, table, labels, keep)
        flat_weights = (
            tf.cast(counted, losses.dtype)
            if weights is None
            else tf.where(counted, tf.cast(tf.reshape(weights, [-1]), losses.dtype), 0.0)
        )
        return labels, losses * flat_weights, flat_weights

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}
