"""export_sasrec: a SASRec model as a next-item top-k SavedModel."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth._validation import check_bool, check_int
from tfsmooth.ops.top_k import NO_ITEM
from tfsmooth.serving._common import _checked, _save
from tfsmooth.serving.retrieval import _check_k, _RetrievalServer

__all__ = ["export_sasrec"]


class _SASRecServer(_RetrievalServer):
    """A SASRec model: its last hidden state is the query, its item table the candidates."""

    def __init__(self, model, k, max_k, chunk_size, exclude_history):
        signature = tf.TensorSpec([None, None], tf.int32, name="history")
        ids = np.arange(model.num_items + 1, dtype=np.int32)  # row j is item j (0 = padding)
        super().__init__(model, ids, k, max_k, chunk_size, signature, "tfsmooth_sasrec_server")
        self.exclude_history = exclude_history
        self.num_items = model.num_items
        self.max_length = model.max_length

    def _candidates(self):
        return tf.convert_to_tensor(self.query_model.item_embeddings)

    def _queries(self, history):
        length = tf.shape(history)[1]
        history = _checked(
            history,
            length <= self.max_length,
            [
                f"`history` must be at most max_length={self.max_length} long. Received: length=",
                length,
            ],
        )
        out_of_range = tf.logical_or(history < 0, history > self.num_items)
        history = _checked(
            history,
            tf.logical_not(tf.reduce_any(out_of_range)),
            [
                f"`history` must hold item ids in [1, {self.num_items}] (0 = padding). "
                "Received: history containing",
                tf.boolean_mask(history, out_of_range),
            ],
            summarize=5,
        )
        return self.query_model.last_hidden(history)

    def _implicit_exclusions(self, history, batch):
        padding_row = tf.zeros(tf.stack([batch, 1]), tf.int32)  # row 0 is never an item
        if not self.exclude_history:
            return padding_row
        return tf.concat([padding_row, tf.cast(history, tf.int32)], axis=1)

    def _indices_of(self, exclude_ids):
        ids = tf.cast(exclude_ids, tf.int64)
        bad = tf.logical_or(ids < NO_ITEM, ids > self.num_items)
        return _checked(
            tf.where(ids > 0, tf.cast(ids, tf.int32), NO_ITEM),
            tf.logical_not(tf.reduce_any(bad)),
            [
                f"`exclude_ids` must hold item ids in [1, {self.num_items}], or 0 or -1 for no "
                "item. Received: exclude_ids containing",
                tf.boolean_mask(exclude_ids, bad),
            ],
            summarize=5,
        )


def export_sasrec(
    model: Any,
    path: str | os.PathLike,
    *,
    k: int = 10,
    max_k: int | None = None,
    exclude_history: bool = True,
    chunk_size: int = 65536,
) -> str:
    """Saves a :class:`~tfsmooth.models.SASRec` as a next-item top-k SavedModel.

    The served model takes ``history``, int32 item sequences ``[batch, L]`` (``L <= max_length``,
    left-padded with 0, as the model is trained on) and returns the next items after each sequence,
    best first: ``{"item_ids": [batch, k] int32 in 1..C, "scores": [batch, k]}`` -- what
    :meth:`SASRec.recommend` returns, computed chunk by chunk over the model's own item table.
    With ``exclude_history`` (the default, as ``recommend``) the items of a history are never
    recommended to it. Signatures and the optional inputs are those of :func:`export_retrieval`:
    ``serving_default`` (``history``), ``top_k`` (``history``, ``k``, ``exclude_ids``: more item ids
    per sequence not to recommend, int32, padded with ``-1`` or ``0``) and
    ``serve(history, k=None, exclude_ids=None)``. Where fewer than ``k`` items remain, the free slots
    hold id ``-1`` and score ``-inf``. A history longer than ``max_length`` or holding ids outside
    ``[0, C]`` fails with ``InvalidArgumentError`` naming ``history``.

    Args:
        model: a built, trained ``SASRec``.
        path: directory to write.
        k: how many items ``serving_default`` returns, ``1 <= k <= max_k``.
        max_k: the largest ``k`` a request may ask for (default ``k``), ``<= num_items``.
        exclude_history: leave out the items of each input sequence.
        chunk_size: items scored at a time.

    Returns:
        ``path`` as a string.

    Raises:
        TypeError: ``model`` is not a SASRec; ``k``, ``max_k``, ``chunk_size`` not integers;
            ``exclude_history`` not a bool.
        ValueError: ``k``/``max_k``/``chunk_size`` out of range.

    Example:

    >>> import numpy as np, tempfile, tensorflow as tf
    >>> from tfsmooth.models import SASRec
    >>> from tfsmooth.serving import export_sasrec
    >>> model = SASRec(50, max_length=8, embedding_dim=8)
    >>> history = np.array([[0, 0, 3, 7, 9], [1, 2, 3, 4, 5]], "int32")
    >>> _ = model(history)
    >>> served = tf.saved_model.load(export_sasrec(model, tempfile.mkdtemp() + "/next", k=4))
    >>> top = served.signatures["serving_default"](history=tf.constant(history))
    >>> top["item_ids"].shape, bool(np.isin(top["item_ids"][1], [1, 2, 3, 4, 5]).any())
    (TensorShape([2, 4]), False)
    """
    from tfsmooth.models.sasrec import SASRec

    if not isinstance(model, SASRec):
        raise TypeError(
            f"`model` must be a tfsmooth.models.SASRec. Received: model={type(model).__name__}"
        )
    if not model.built:
        raise ValueError("`model` must be built: call it on a batch of sequences first.")
    k, max_k = _check_k(k, max_k, model.num_items, "num_items")
    chunk = check_int("chunk_size", chunk_size, 1)
    server = _SASRecServer(
        model,
        k,
        max_k,
        min(chunk, model.num_items + 1),
        check_bool("exclude_history", exclude_history),
    )
    return _save(server, path, server.trace())
