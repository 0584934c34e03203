"""The one place that decides which Keras tfsmooth uses.

TensorFlow routes ``tf.keras`` to Keras 3 unless ``TF_USE_LEGACY_KERAS`` is ``1``/``true``/``True``, in
which case it routes to the ``tf_keras`` package (Keras 2). tfsmooth asks ``tf.keras`` itself, so it
always agrees with the user's own ``tf.keras`` and with TensorFlow Recommenders, which needs tf-keras.

Every other module takes Keras from here::

    from tfsmooth._keras import keras, register_serializable
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

import tensorflow as tf

__all__ = [
    "IS_KERAS_3",
    "KERAS_FLAVOUR",
    "PACKAGE",
    "is_keras_tensor",
    "keras",
    "register_serializable",
]

#: The package name under which every public tfsmooth object is registered for serialization.
PACKAGE = "tfsmooth"


def _resolve():
    try:
        module = tf.keras
        layer_module = module.layers.Layer.__module__
    except ImportError as error:  # TF_USE_LEGACY_KERAS=1 without tf-keras, or no keras at all.
        legacy = os.environ.get("TF_USE_LEGACY_KERAS", "") in ("1", "true", "True")
        hint = (
            'TF_USE_LEGACY_KERAS is set, so tf-keras is needed: pip install "tfsmooth[tfrs]"'
            if legacy
            else "pip install keras"
        )
        raise ImportError(
            f"tfsmooth could not load Keras through tf.keras ({error}). {hint}"
        ) from error
    return module, not layer_module.startswith("tf_keras")


#: The Keras module in use: ``tf.keras`` as TensorFlow resolves it.
keras, IS_KERAS_3 = _resolve()

#: ``"keras3"`` or ``"tf_keras"``.
KERAS_FLAVOUR = "keras3" if IS_KERAS_3 else "tf_keras"

T = TypeVar("T")


def register_serializable(obj: T) -> T:
    """Registers a class or function for Keras serialization under the package ``tfsmooth``.

    Used as a decorator on every public layer, loss, metric, optimizer, callback and activation, so
    ``.keras`` files and configs that name them load in any process that imports tfsmooth.
    """
    return keras.utils.register_keras_serializable(package=PACKAGE)(obj)


def is_keras_tensor(x: Any) -> bool:
    """Whether ``x`` is a symbolic Keras tensor (an input of a functional model under construction)."""
    if IS_KERAS_3:
        return keras.utils.is_keras_tensor(x)
    try:
        return keras.backend.is_keras_tensor(x)
    except (TypeError, ValueError):  # tf-keras raises for anything that is not tensor-like.
        return False
