"""What every served model shares: signatures read off Keras models, in-graph checks, saving."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

__all__ = ["input_signature_of"]


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


def _save(module: tf.Module, path: str | os.PathLike, signatures: dict | None = None) -> str:
    path = os.fspath(path)
    if signatures is None:
        signatures = {"serving_default": module.serve.get_concrete_function()}
    tf.saved_model.save(module, path, signatures=signatures)
    return path


def _checked(value: tf.Tensor, condition: tf.Tensor, data: list, summarize: int = 3) -> tf.Tensor:
    """``value``, computed only once ``condition`` holds; else ``InvalidArgumentError`` with ``data``.

    ``tf.debugging.Assert`` inside the served graph: plain TensorFlow raises it, and the control
    dependency makes sure the check runs before anything reads the value.
    """
    with tf.control_dependencies([tf.debugging.Assert(condition, data, summarize=summarize)]):
        return tf.identity(value)
