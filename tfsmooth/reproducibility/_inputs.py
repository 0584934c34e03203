"""Checks and helpers for what :func:`train_replicas` is given: data structures and builders."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tfsmooth._keras import keras


def _length(structure: Any, name: str) -> int:
    leaves = tf.nest.flatten(structure)
    if not leaves:
        raise ValueError(f"`{name}` holds no arrays. Received: {name}={structure!r}")
    lengths = {len(np.asarray(leaf)) for leaf in leaves}
    if len(lengths) != 1:
        raise ValueError(
            f"All arrays of `{name}` must have the same length. Received lengths {sorted(lengths)}"
        )
    return lengths.pop()


def _take(structure: Any, rows: np.ndarray) -> Any:
    return tf.nest.map_structure(lambda leaf: np.asarray(leaf)[rows], structure)


def _split_xy(data: Any, name: str) -> tuple[Any, Any]:
    if isinstance(data, tuple) and len(data) == 2:
        return data
    raise TypeError(
        f"`{name}` must be a tuple (features, targets) of numpy arrays or dicts of them. "
        f"Received: {name} of type {type(data).__name__}"
    )


def _select(structure: Any, output: str | None, what: str) -> np.ndarray:
    if isinstance(structure, Mapping):
        if output is None:
            if len(structure) != 1:
                raise ValueError(
                    f"The {what} have several outputs {sorted(structure)}: pass `output` to pick "
                    f"the one to compare. Received: output=None"
                )
            output = next(iter(structure))
        if output not in structure:
            raise ValueError(
                f"`output` must be one of the {what}' keys {sorted(structure)}. "
                f"Received: output={output!r}"
            )
        structure = structure[output]
    elif isinstance(structure, (list, tuple)):
        raise TypeError(
            f"The {what} are a list; return a dict of named outputs (or one array) instead."
        )
    array = np.asarray(structure)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    return array


def _call_builder(build_model: Callable, init_seed: int):
    try:
        parameters = [
            p
            for p in inspect.signature(build_model).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        parameters = [None]
    model = build_model(init_seed) if parameters else build_model()
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`build_model` must return a compiled keras.Model. Received: {type(model).__name__}"
        )
    if getattr(model, "optimizer", None) is None:
        raise TypeError(
            "`build_model` must return a compiled keras.Model (call model.compile(...) in it). "
            "Received: a model that is not compiled"
        )
    return model


def _short_error(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    message = lines[0] if lines else ""
    return f"{type(error).__name__}: {message[:300]}".rstrip(": ")
