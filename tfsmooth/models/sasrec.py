"""SASRec: causal self-attention over item sequences, trained with any catalog loss."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth import losses as catalog_losses
from tfsmooth._keras import (
    compute_loss_tracker,
    deserialize_compile_config,
    keras,
    register_serializable,
    replica_count,
)
from tfsmooth._validation import check_bool, check_float, check_int
from tfsmooth.metrics.ranking import catalog_ranking_metrics
from tfsmooth.ops.checks import integer_labels

__all__ = ["LOSSES", "SASRec"]

#: Loss names SASRec accepts (``loss=`` may also be a tfsmooth catalog loss instance): the names
#: of the shared registry, :data:`tfsmooth.losses.LOSSES` (see :func:`tfsmooth.losses.get`).
LOSSES = catalog_losses.LOSSES


def _make_loss(loss: Any, num_negatives: int) -> keras.losses.Loss:
    """``loss`` resolved by the shared registry (a catalog loss, see :func:`tfsmooth.losses.get`);
    ``"bce"`` draws ``num_negatives`` negatives."""
    options = {"num_negatives": num_negatives} if isinstance(loss, str) and loss == "bce" else {}
    return catalog_losses.get(loss, **options)


@register_serializable
class SASRec(keras.Model):
    """SASRec: a causal Transformer over item sequences whose item table is also the output layer.

    Inputs are item-index sequences ``[B, L]`` (items ``1..num_items``, ``0`` = padding, left-padded
    so the most recent item is last, as :func:`tfsmooth.data.build_sequences` makes them). Each
    position attends to itself and the positions before it; the output ``[B, L, d]`` at position
    ``t`` is the query for the item at ``t + 1``, scored against the catalog by inner product with
    the same item table the inputs are embedded with (Kang & McAuley 2018):

    .. math::

        h^{(0)}_t = \\sqrt{d}\\, E_{s_t} + P_t, \\qquad
        h^{(b)} = \\mathrm{FFN}(\\mathrm{LN}(\\tilde h + \\mathrm{Attn}_{causal}(\\tilde h, h^{(b-1)}))),
        \\ \\tilde h = \\mathrm{LN}(h^{(b-1)}), \\qquad
        \\mathrm{score}(t, j) = \\mathrm{LN}(h^{(B)}_t)^\\top E_j

    (the authors' pre-norm layout; the feed-forward block has its own residual, padding positions
    are zeroed after every block and never attended to).

    Training: ``fit(inputs, labels)`` with ``labels [B, L]`` the next item at each position (0 =
    none). The loss is SASRec's own, not ``compile``'s, resolved by :func:`tfsmooth.losses.get`:
    ``"catalog"`` (full softmax cross-entropy), ``"scalable"`` (SCE), ``"sampled"`` (sampled
    softmax with log-Q, uniform proposal), ``"sampled_log_uniform"`` (log-uniform proposal: only
    for items numbered by decreasing frequency, which :func:`tfsmooth.data.build_sequences` does
    not do), ``"bce"`` (one or more uniform negatives, the original SASRec loss) or any tfsmooth
    catalog loss instance (e.g.
    ``ScalableCrossEntropy(bucket_size_y=512)`` or ``CatalogCrossEntropy(chunk_size=8192)``).

    Args:
        num_items: int. Catalog size ``C``; the item table has ``C + 1`` rows (row 0 is padding).
        max_length: int. Longest input sequence (number of position embeddings).
        embedding_dim: int. ``d``, divisible by ``num_heads``.
        num_blocks: int. Transformer blocks.
        num_heads: int. Attention heads.
        dropout_rate: float in ``[0, 1)``.
        loss: a name from :data:`LOSSES` or a tfsmooth catalog loss (kept in the config).
        num_negatives: int. Negatives per position for ``loss="bce"``.
        **kwargs: ``keras.Model`` arguments (``name``, ...).

    Example:

    >>> from tfsmooth.data import synthetic_ratings, build_sequences
    >>> from tfsmooth.models import SASRec
    >>> splits = build_sequences(synthetic_ratings(n_users=200, n_items=300, n_ratings=6000),
    ...                          max_length=50)
    >>> model = SASRec(splits.num_items, max_length=50, loss="scalable")
    >>> model.compile(optimizer="adam")
    >>> _ = model.fit(splits.train_inputs, splits.train_labels, batch_size=64, epochs=1, verbose=0)
    >>> metrics = model.evaluate_ranking(splits.valid_inputs, splits.valid_labels, k=10)

    References:
        - [Kang, McAuley. Self-Attentive Sequential Recommendation (2018)](
          https://arxiv.org/abs/1808.09781)
        - [Mezentsev et al. Scalable Cross-Entropy Loss for Sequential Recommendations with Large
          Item Catalogs (2024)](https://arxiv.org/abs/2409.18721)
    """

    def __init__(
        self,
        num_items: int,
        *,
        max_length: int = 200,
        embedding_dim: int = 64,
        num_blocks: int = 2,
        num_heads: int = 1,
        dropout_rate: float = 0.2,
        loss: Any = "scalable",
        num_negatives: int = 1,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.num_items = check_int("num_items", num_items, 1)
        self.max_length = check_int("max_length", max_length, 1)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, 1)
        self.num_blocks = check_int("num_blocks", num_blocks, 0)
        self.num_heads = check_int("num_heads", num_heads, 1)
        self.num_negatives = check_int("num_negatives", num_negatives, 1)
        if self.embedding_dim % self.num_heads:
            raise ValueError(
                "`embedding_dim` must be divisible by `num_heads`. "
                f"Received: embedding_dim={embedding_dim}, num_heads={num_heads}"
            )
        self.dropout_rate = check_float("dropout_rate", dropout_rate, 0.0, 1.0, max_inclusive=False)
        self.retrieval_loss = _make_loss(loss, self.num_negatives)
        self._loss_spec = loss if isinstance(loss, str) else None

        d = self.embedding_dim
        self.item_embeddings = self.add_weight(
            name="item_embeddings",
            shape=(self.num_items + 1, d),
            initializer=keras.initializers.GlorotUniform(),
        )
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(self.max_length, d),
            initializer=keras.initializers.GlorotUniform(),
        )
        rate = self.dropout_rate
        self.embedding_dropout = keras.layers.Dropout(rate)
        self.attention_norms = [
            keras.layers.LayerNormalization(epsilon=1e-8) for _ in range(num_blocks)
        ]
        self.attentions = [
            keras.layers.MultiHeadAttention(num_heads, key_dim=d // num_heads, dropout=rate)
            for _ in range(num_blocks)
        ]
        self.feed_forward_norms = [
            keras.layers.LayerNormalization(epsilon=1e-8) for _ in range(num_blocks)
        ]
        self.feed_forward = [
            [
                keras.layers.Dense(d, activation="relu"),
                keras.layers.Dropout(rate),
                keras.layers.Dense(d),
                keras.layers.Dropout(rate),
            ]
            for _ in range(num_blocks)
        ]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-8)
        # tf-keras tracks only compiled losses; Keras 3 tracks what compute_loss returns (None).
        self.loss_tracker = compute_loss_tracker()

    # ------------------------------------------------------------------------------------------
    # Forward pass.

    @property
    def input_dtype(self):
        """Item indices: Keras 3 converts inputs to this and exports serving signatures with it."""
        return "int32"

    def call(self, inputs, training=None):
        """Item sequences ``[B, L]`` (``L <= max_length``) -> hidden states ``[B, L, d]``.

        Raises:
            ValueError: for inputs that are not ``[B, L]`` or longer than ``max_length`` (an
                ``InvalidArgumentError`` inside a ``tf.function`` when ``L`` is not static).
        """
        ids = tf.cast(inputs, tf.int32)
        if ids.shape.rank is not None and ids.shape.rank != 2:
            raise ValueError(
                f"`inputs` must be item sequences [batch, length]. Received: inputs.shape={ids.shape}"
            )
        if ids.shape[-1] is not None and ids.shape[-1] > self.max_length:
            raise ValueError(
                f"`inputs` must be at most max_length={self.max_length} items long. "
                f"Received: inputs.shape={ids.shape}"
            )
        mask = ids > 0
        mask_f = tf.cast(mask, self.compute_dtype)[:, :, None]
        length = tf.shape(ids)[1]
        if ids.shape[-1] is None:
            tf.debugging.assert_less_equal(
                length,
                self.max_length,
                message=f"`inputs` must be at most max_length={self.max_length} items long",
            )
        table = tf.cast(self.item_embeddings, self.compute_dtype)
        x = tf.gather(table, tf.maximum(ids, 0)) * math.sqrt(self.embedding_dim)
        # The last position always gets the last position embedding (left padding).
        x += tf.cast(self.position_embeddings, self.compute_dtype)[self.max_length - length :]
        x = self.embedding_dropout(x, training=training) * mask_f
        causal = tf.linalg.band_part(tf.ones(tf.stack([length, length]), tf.bool), -1, 0)
        attention_mask = tf.logical_and(causal[None, :, :], mask[:, None, :])
        for norm, attention, ff_norm, (dense_1, drop_1, dense_2, drop_2) in zip(
            self.attention_norms, self.attentions, self.feed_forward_norms, self.feed_forward
        ):
            query = norm(x)
            x = query + attention(query, x, attention_mask=attention_mask, training=training)
            x = ff_norm(x)
            x = x + drop_2(dense_2(drop_1(dense_1(x), training=training)), training=training)
            x = x * mask_f
        return self.final_norm(x) * mask_f

    # ------------------------------------------------------------------------------------------
    # Training.

    def compile(self, optimizer="adam", loss=None, **kwargs):
        """As ``keras.Model.compile``; the loss is SASRec's own (the ``loss`` constructor argument)."""
        if loss is not None:
            raise ValueError(
                "SASRec trains with its own catalog loss: give it to the constructor, "
                f"`SASRec(..., loss=...)`, not to `compile`. Received: loss={loss!r}"
            )
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Re-compiles a loaded model (Keras skips models whose ``compile`` is overridden)."""
        self.compile(**deserialize_compile_config(config))
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and self.built and hasattr(optimizer, "build"):
            optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The catalog loss of the hidden states against the next items ``y [B, L]`` (0 = none)."""
        labels = tf.cast(integer_labels(y, "y"), tf.int32)
        loss = self.retrieval_loss.unscaled(
            labels,
            y_pred,
            sample_weight,
            item_embeddings=self.item_embeddings,
            mask=labels > 0,
        )
        if self.loss_tracker is not None:
            self.loss_tracker.update_state(loss)
        # fit sums the replicas' gradients: each returns its mean over the number of replicas.
        replicas = replica_count()
        if replicas > 1:
            loss = loss * (1.0 / replicas)
        if self.losses:
            loss += tf.add_n([tf.cast(extra, loss.dtype) for extra in self.losses]) / replicas
        return loss

    # ------------------------------------------------------------------------------------------
    # Scoring and evaluation.

    def last_hidden(self, inputs, training=False) -> tf.Tensor:
        """The query of the next item after each sequence: the hidden state of its last position."""
        return self(inputs, training=training)[:, -1, :]

    def recommend(self, inputs, k: int = 10, exclude_history: bool = True):
        """Top ``k`` items after each sequence: ``(item indices [B, k] in 1..C, scores [B, k])``.

        NaN scores count as ``-inf`` (never above a finite score); excluded items score ``-inf``.

        Raises:
            ValueError: for ``k`` outside ``[1, num_items]`` or inputs longer than ``max_length``.
        """
        k = check_int("k", k, 1, self.num_items)
        exclude_history = check_bool("exclude_history", exclude_history)
        query = self.last_hidden(inputs)
        scores = tf.matmul(query, tf.cast(self.item_embeddings, query.dtype), transpose_b=True)
        scores = tf.where(tf.math.is_nan(scores), tf.constant(-np.inf, scores.dtype), scores)
        blocked = tf.one_hot(0, self.num_items + 1, on_value=True, off_value=False)[None, :]
        if exclude_history:
            history = tf.cast(inputs, tf.int32)
            seen = tf.reduce_any(
                tf.equal(history[:, :, None], tf.range(self.num_items + 1)[None, None, :]), axis=1
            )
            blocked = tf.logical_or(blocked, seen)
        scores = tf.where(blocked, tf.constant(-np.inf, scores.dtype), scores)
        top = tf.math.top_k(scores, k)
        return top.indices, top.values

    def evaluate_ranking(
        self,
        inputs,
        labels,
        *,
        k: int = 10,
        exclude_history: bool = True,
        batch_size: int = 256,
    ) -> dict[str, Any]:
        """HR@k and NDCG@k of the next item against the full catalog (leave-last-out evaluation).

        Args:
            inputs: int ``[U, L]`` histories (e.g. ``SequenceSplits.test_inputs``).
            labels: int ``[U]`` the held-out next items (``1..C``).
            k: the cut-off.
            exclude_history: do not rank the items of the input history (the authors' protocol).
            batch_size: users per forward pass.

        Returns:
            ``{"hit_rate": mean, "ndcg": mean, "per_user": {"hit_rate": [U], "ndcg": [U]}}``. A
            user whose next item scores NaN (e.g. after the item table went NaN) is a miss
            (:func:`tfsmooth.metrics.ranking.catalog_ranking_metrics`).

        Raises:
            ValueError: for empty or mismatched inputs, non-integral or out-of-range labels
                (outside ``1..C``), ``k < 1``, ``batch_size < 1`` or inputs longer than
                ``max_length``.
            TypeError: for non-integer ``k``/``batch_size`` or non-numeric labels.
        """
        k = check_int("k", k, 1)
        batch_size = check_int("batch_size", batch_size, 1)
        exclude_history = check_bool("exclude_history", exclude_history)
        inputs = np.asarray(inputs)
        labels = np.asarray(labels)
        if inputs.ndim != 2 or len(inputs) == 0:
            raise ValueError(
                "`inputs` must be a non-empty batch of sequences [users, length]. "
                f"Received: inputs.shape={inputs.shape}"
            )
        if labels.shape != (len(inputs),):
            raise ValueError(
                "`labels` must hold one next item per sequence. "
                f"Received: labels.shape={labels.shape}, inputs.shape={inputs.shape}"
            )
        labels = integer_labels(labels, "labels").numpy()
        outside = labels[(labels < 1) | (labels > self.num_items)]
        if outside.size:
            raise ValueError(
                f"`labels` must be items in [1, num_items={self.num_items}]. "
                f"Received: labels containing {int(outside[0])}"
            )
        items = tf.convert_to_tensor(self.item_embeddings)[1:]  # rows of items 1..C
        step = self._ranking_step(k, exclude_history)
        parts: dict[str, list] = {"hit_rate": [], "ndcg": []}
        for start in range(0, len(inputs), batch_size):
            batch = tf.constant(inputs[start : start + batch_size], tf.int32)
            target = tf.constant(labels[start : start + batch_size] - 1, tf.int32)
            result = step(batch, target, items)
            for key in parts:
                parts[key].append(result[key].numpy())
        per_user = {key: np.concatenate(values) for key, values in parts.items()}
        return {
            "hit_rate": float(per_user["hit_rate"].mean()),
            "ndcg": float(per_user["ndcg"].mean()),
            "per_user": per_user,
        }

    def _ranking_step(self, k: int, exclude_history: bool):
        cache = self.__dict__.setdefault("_ranking_steps", {})
        key = (k, exclude_history)
        if key not in cache:

            @tf.function(reduce_retracing=True)
            def step(batch, target, items):
                exclude = batch - 1 if exclude_history else None  # padding becomes -1: ignored
                return catalog_ranking_metrics(
                    self.last_hidden(batch), items, target, k=k, exclude=exclude
                )

            cache[key] = step
        return cache[key]

    # ------------------------------------------------------------------------------------------
    # Configuration.

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_items": self.num_items,
            "max_length": self.max_length,
            "embedding_dim": self.embedding_dim,
            "num_blocks": self.num_blocks,
            "num_heads": self.num_heads,
            "dropout_rate": self.dropout_rate,
            "loss": self._loss_spec
            if self._loss_spec is not None
            else keras.utils.serialize_keras_object(self.retrieval_loss),
            "num_negatives": self.num_negatives,
        }

    @classmethod
    def from_config(cls, config: dict) -> SASRec:
        return cls(**config)
