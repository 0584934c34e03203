"""Keras layers: smooth activations as layers (optionally learnable, per channel)."""

from tfsmooth.layers.generalized_smelu import GeneralizedSmeLU
from tfsmooth.layers.smelu import SmeLU

__all__ = ["GeneralizedSmeLU", "SmeLU"]
