"""Export trained models as SavedModels that serve with plain TensorFlow (no tfsmooth import).

- :func:`export_retrieval`: a query tower plus a candidate table become one SavedModel whose
  ``serving_default`` signature takes query features and returns the top-k candidate ids and
  scores. The scores are computed chunk by chunk over the catalog with a running top-k, so a
  million-item catalog never materialises a ``[batch, catalog]`` score matrix.
- :func:`export_model`: any Keras model (e.g. a ranking model with SmeLU) as a SavedModel with a
  ``serving_default`` signature, the same way under Keras 3 and tf-keras.

Everything a served model computes is stored in the SavedModel as TensorFlow graphs (SmeLU's XLA
kernels included), so the serving process needs TensorFlow only.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth._keras import keras
from tfsmooth.losses._utils import running_top_k

__all__ = ["export_model", "export_retrieval", "input_signature_of"]


def input_signature_of(model: Any) -> Any:
    """The input structure of a built Keras model as ``tf.TensorSpec`` s (batch dimension free).

    Args:
        model: a functional or sequential Keras model (one with ``model.inputs``).

    Returns:
        A ``tf.TensorSpec``, or a dict/list of them mirroring the model's inputs, named after them.

    Raises:
        ValueError: if the model has no symbolic inputs (a subclassed model): pass
            ``input_signature`` explicitly instead.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.models import build_ranking_model
    >>> from tfsmooth.serving import input_signature_of
    >>> users = tf.keras.Input((), dtype="int32", name="user_id")
    >>> input_signature_of(tf.keras.Model(users, tf.keras.layers.Embedding(10, 4)(users)))
    TensorSpec(shape=(None,), dtype=tf.int32, name='user_id')
    >>> signature = input_signature_of(build_ranking_model(10, 20, 3, hidden_units=(4,)))
    >>> signature["genres"]
    TensorSpec(shape=(None, 3), dtype=tf.float32, name='genres')
    """
    inputs = None
    if getattr(model, "inputs", None):
        try:
            inputs = model.input  # the structure (a dict for named inputs)
        except AttributeError:  # a Keras 3 Sequential model has .inputs only
            inputs = model.inputs[0] if len(model.inputs) == 1 else list(model.inputs)
    if inputs is None:
        raise ValueError(
            "Cannot read the inputs of a subclassed or unbuilt model. Pass `input_signature`, "
            "e.g. input_signature={'user_id': tf.TensorSpec([None], tf.int32, name='user_id')}. "
            f"Received: model={type(model).__name__}"
        )

    def spec(tensor, name=None):
        shape = [None, *list(tensor.shape)[1:]]
        return tf.TensorSpec(shape, tf.as_dtype(tensor.dtype), name=name or _tensor_name(tensor))

    if isinstance(inputs, dict):
        return {key: spec(value, key) for key, value in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return [spec(value) for value in inputs]
    return spec(inputs)


def _tensor_name(tensor) -> str:
    name = getattr(tensor, "name", None) or "inputs"
    return name.split(":")[0].split("/")[0]


def _as_list_signature(signature: Any) -> list:
    """tf.function input_signature: one positional argument holding the whole structure."""
    return [signature]


class _Server(tf.Module):
    """The tf.Module that is saved: it holds the model and, for retrieval, the candidates."""

    def __init__(self, model, signature):
        super().__init__(name="tfsmooth_server")
        self.model = model
        self.serve = tf.function(self._serve, input_signature=_as_list_signature(signature))

    def _serve(self, features):
        outputs = self.model(features, training=False)
        if isinstance(outputs, dict):
            return dict(outputs)
        if isinstance(outputs, (list, tuple)):
            return {f"output_{i}": value for i, value in enumerate(outputs)}
        return {"output": outputs}


class _RetrievalServer(tf.Module):
    def __init__(self, query_model, candidates, candidate_ids, k, chunk_size, signature):
        super().__init__(name="tfsmooth_retrieval_server")
        self.query_model = query_model
        self.candidates = tf.Variable(candidates, trainable=False, name="candidates")
        self.candidate_ids = tf.Variable(candidate_ids, trainable=False, name="candidate_ids")
        self.k = k
        self.chunk_size = chunk_size
        self.serve = tf.function(self._serve, input_signature=_as_list_signature(signature))

    def _serve(self, features):
        queries = tf.cast(self.query_model(features, training=False), self.candidates.dtype)
        scores, indices = _top_k(queries, self.candidates, self.k, self.chunk_size)
        return {"item_ids": tf.gather(self.candidate_ids, indices), "scores": scores}


@tf.function(jit_compile=True)
def _top_k(queries, candidates, k, chunk_size):
    values, indices = running_top_k(queries, candidates, tf.constant(k), chunk_size)
    order = tf.argsort(values, axis=1, direction="DESCENDING", stable=True)
    return tf.gather(values, order, batch_dims=1), tf.gather(indices, order, batch_dims=1)


def _save(module: tf.Module, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    concrete = module.serve.get_concrete_function()
    tf.saved_model.save(module, path, signatures={"serving_default": concrete})
    return path


def export_model(model: Any, path: str | os.PathLike, *, input_signature: Any = None) -> str:
    """Saves a Keras model as a SavedModel that plain TensorFlow can serve.

    The SavedModel has a ``serving_default`` signature (for TF Serving) and a ``serve`` function
    (``tf.saved_model.load(path).serve(features)``); both return a dict of outputs (``"output"`` for
    a single-output model). It works the same under Keras 3 and tf-keras.

    Args:
        model: a Keras model.
        path: directory to write.
        input_signature: the model's input structure as ``tf.TensorSpec`` s; read from
            ``model.inputs`` when omitted (required for subclassed models).

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: when the input signature cannot be inferred.

    Example:

    >>> import tensorflow as tf, tempfile
    >>> from tfsmooth.activations import smelu
    >>> from tfsmooth.serving import export_model
    >>> model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1, smelu)])
    >>> path = export_model(model, tempfile.mkdtemp() + "/ranker")
    >>> served = tf.saved_model.load(path)
    >>> served.serve(tf.zeros((2, 4)))["output"].shape
    TensorShape([2, 1])
    """
    signature = input_signature if input_signature is not None else input_signature_of(model)
    return _save(_Server(model, signature), path)


def _candidate_table(candidates: Any) -> np.ndarray:
    if isinstance(candidates, keras.layers.Embedding):
        candidates = candidates.embeddings
    table = np.asarray(candidates)
    if table.ndim != 2 or not np.issubdtype(table.dtype, np.floating):
        raise ValueError(
            "`candidates` must be a float matrix [num_candidates, d] (or an Embedding layer). "
            f"Received: shape={table.shape}, dtype={table.dtype}"
        )
    if not np.all(np.isfinite(table)):
        raise ValueError("`candidates` contains NaN or Inf values.")
    return table


def export_retrieval(
    query_model: Any,
    candidates: Any,
    path: str | os.PathLike,
    *,
    candidate_ids: Any = None,
    k: int = 10,
    chunk_size: int = 65536,
    input_signature: Any = None,
) -> str:
    """Saves a retrieval model -- query tower plus candidate table -- with a top-k signature.

    The served function computes query embeddings ``q = query_model(features)`` and returns, for each
    query, the ``k`` candidates with the largest inner product ``q . c``:
    ``{"item_ids": [batch, k], "scores": [batch, k]}``, best first. Scores are computed over chunks of
    ``chunk_size`` candidates with a running top-k (one XLA kernel), so the catalog may be far larger
    than a ``[batch, catalog]`` matrix would allow.

    Args:
        query_model: Keras model (or layer) mapping query features to embeddings ``[batch, d]``.
        candidates: candidate embeddings ``[num_candidates, d]``: an array, tensor, variable, or a
            Keras ``Embedding`` layer (e.g. the item table trained with a catalog loss).
        path: directory to write.
        candidate_ids: ids returned for the candidates (ints or strings), default ``0..C-1``.
        k: how many candidates to return, ``1 <= k <= num_candidates``.
        chunk_size: candidates scored at a time.
        input_signature: the query features as ``tf.TensorSpec`` s; read from
            ``query_model.inputs`` when omitted.

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: for a bad table, ids of the wrong length, or ``k``/``chunk_size`` out of range.

    Example:

    >>> import numpy as np, tempfile, tensorflow as tf
    >>> from tfsmooth.serving import export_retrieval
    >>> users = tf.keras.Input((), dtype="int32", name="user_id")
    >>> tower = tf.keras.Model(users, tf.keras.layers.Embedding(100, 8)(users))
    >>> items = np.random.default_rng(0).normal(size=(1000, 8)).astype("float32")
    >>> path = export_retrieval(tower, items, tempfile.mkdtemp() + "/retrieval", k=5)
    >>> served = tf.saved_model.load(path)
    >>> top = served.signatures["serving_default"](user_id=tf.constant([3]))
    >>> top["item_ids"].shape
    TensorShape([1, 5])
    """
    table = _candidate_table(candidates)
    if candidate_ids is None:
        ids = np.arange(table.shape[0], dtype=np.int64)
    else:
        ids = np.asarray(candidate_ids)
        if ids.shape != (table.shape[0],):
            raise ValueError(
                "`candidate_ids` must have one id per candidate. "
                f"Received: candidate_ids.shape={ids.shape}, num_candidates={table.shape[0]}"
            )
        if ids.dtype.kind in "OUS":
            ids = ids.astype(str).astype(object)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= table.shape[0]:
        raise ValueError(
            f"`k` must be an integer in [1, num_candidates={table.shape[0]}]. Received: k={k!r}"
        )
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1
    ):
        raise ValueError(
            f"`chunk_size` must be a positive integer. Received: chunk_size={chunk_size!r}"
        )
    signature = input_signature if input_signature is not None else input_signature_of(query_model)
    server = _RetrievalServer(
        query_model,
        table,
        tf.constant(ids),
        int(k),
        int(min(chunk_size, table.shape[0])),
        signature,
    )
    return _save(server, path)
