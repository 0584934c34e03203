"""Helpers shared by the activation layers."""

from __future__ import annotations

import tensorflow as tf

from tfsmooth._keras import keras


def parameter_shape(input_shape, per_channel: bool, layer: str) -> tuple:
    """() for one shared parameter, (channels,) for one per channel (the last axis)."""
    if not per_channel:
        return ()
    channels = tuple(input_shape)[-1] if input_shape is not None and len(input_shape) else None
    if channels is None:
        raise ValueError(
            f"`{layer}(per_channel=True)` needs a known last (channel) dimension. "
            f"Received: input_shape={tuple(input_shape) if input_shape is not None else None}"
        )
    return (int(channels),)


class MinValue(keras.constraints.Constraint):
    """Keeps a variable at or above ``minimum`` after each optimizer step."""

    def __init__(self, minimum: float):
        self.minimum = float(minimum)

    def __call__(self, w):
        return tf.maximum(w, tf.cast(self.minimum, w.dtype))

    def get_config(self) -> dict:
        return {"minimum": self.minimum}
