"""Embedding: Keras's embedding layer, looking up only the rows it needs."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfsmooth._keras import keras, native_variable, register_serializable
from tfsmooth._validation import check_int


@register_serializable
class Embedding(keras.layers.Embedding):
    """``keras.layers.Embedding`` whose lookup reads only the looked-up rows of the table.

    .. math::

        \\mathrm{Embedding}(i) = E_{i,:}, \\qquad E \\in \\mathbb{R}^{\\text{input\\_dim}
            \\times \\text{output\\_dim}}

    Keras 3's ``Embedding`` reads the whole table into a tensor and then takes the rows
    (``ops.take``), so every training step copies the table: O(table) time and memory however
    few rows the batch looks up, even with an optimizer whose sparse step is O(rows touched). This
    layer gathers the rows straight from the variable (``ResourceGather``, as tf-keras's
    ``Embedding`` does), so the forward pass costs O(rows looked up), and the gradient reaches the
    optimizer as a ``tf.IndexedSlices`` of those rows, as with Keras's layer. Everything else --
    arguments, weights, masking (``mask_zero``), serialization -- is Keras's ``Embedding``; with
    LoRA enabled or a quantized table (Keras 3), ``sparse=True`` (tf-keras), or ragged or sparse
    ids, it falls back to Keras's own lookup. A table sharded by ``ParameterServerStrategy`` is
    read shard by shard. The outputs are Keras's layer's for ids in ``[0, input_dim)``; float ids
    are cast to int32 as there; an id outside the range raises on CPU (TensorFlow's gather; on a
    GPU it gives zeros), where Keras 3's layer wraps a negative id around.

    Args:
        input_dim: the number of rows (the vocabulary size).
        output_dim: the embedding dimension.
        **kwargs: any other argument of ``keras.layers.Embedding`` (``embeddings_initializer``,
            ``mask_zero``, ...).

    Raises:
        ValueError: ``input_dim`` or ``output_dim`` below 1 (checked here: not every supported
            Keras version checks them).
        TypeError: ``input_dim`` or ``output_dim`` not an integer.

    Example:

    >>> import tensorflow as tf
    >>> from tfsmooth.layers import Embedding
    >>> layer = Embedding(1000, 4, embeddings_initializer="ones")
    >>> layer(tf.constant([[3, 7]])).shape.as_list()
    [1, 2, 4]

    References:
        - [Keras Embedding](https://keras.io/api/layers/core_layers/embedding/)
    """

    def __init__(self, input_dim: int, output_dim: int, **kwargs: Any):
        input_dim = check_int("input_dim", input_dim, 1)
        output_dim = check_int("output_dim", output_dim, 1)
        super().__init__(input_dim, output_dim, **kwargs)

    def call(self, inputs: Any) -> tf.Tensor:
        if (
            getattr(self, "lora_enabled", False)
            or getattr(self, "quantization_mode", None)
            or getattr(self, "sparse", False)
            or isinstance(inputs, (tf.RaggedTensor, tf.SparseTensor))
        ):
            return super().call(inputs)
        inputs = tf.convert_to_tensor(inputs)
        if inputs.dtype not in (tf.int32, tf.int64):
            inputs = tf.cast(inputs, tf.int32)
        # embedding_lookup: a gather from the variable (ResourceGather), and for a sharded table
        # (ParameterServerStrategy) one gather per shard, where the shard lives.
        outputs = tf.nn.embedding_lookup(native_variable(self.embeddings), inputs)
        return tf.cast(outputs, self.compute_dtype)
