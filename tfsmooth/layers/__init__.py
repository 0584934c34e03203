"""Keras layers: smooth activations as layers (optionally learnable, per channel)."""

from tfsmooth.layers.cross import Cross
from tfsmooth.layers.generalized_smelu import GeneralizedSmeLU
from tfsmooth.layers.smelu import SmeLU

__all__ = ["Cross", "GeneralizedSmeLU", "SmeLU"]
