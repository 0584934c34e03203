"""Keras layers: smooth activations as layers (optionally learnable, per channel), the DCN cross
layer, and an ``Embedding`` whose lookup reads only the looked-up rows (O(rows), not O(table))."""

from tfsmooth.layers.cross import Cross
from tfsmooth.layers.embedding import Embedding
from tfsmooth.layers.generalized_smelu import GeneralizedSmeLU
from tfsmooth.layers.smelu import SmeLU

__all__ = ["Cross", "Embedding", "GeneralizedSmeLU", "SmeLU"]
