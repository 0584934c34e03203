"""export_model: any Keras model as a SavedModel with a ``serving_default`` signature."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from tfsmooth.serving._common import _as_list_signature, _save, input_signature_of

__all__ = ["export_model"]


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
