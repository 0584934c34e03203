"""SnapshotStore: host copies of a model's weights and optimizer state, to roll back to."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np


class SnapshotStore:
    """Keeps the last few snapshots of a model's weights and optimizer state.

    A snapshot is taken *after* batch ``step``; it produced the loss of batch ``step + 1``, so it
    is good for a divergence whose onset is at batch ``t`` only if ``step + 1 < t``.
    :meth:`restore_before` puts back the newest good one (or the one taken before training) and
    forgets the newer ones. Optimizer state means every optimizer variable: accumulators,
    moments, the iteration count, clipping statistics.

    Args:
        keep: how many snapshots to keep besides the initial one.

    Example:

    >>> import numpy as np
    >>> from tfsmooth._keras import keras
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    >>> store = SnapshotStore()
    >>> store.take(model, -1, initial=True)
    >>> model.set_weights([np.ones((1, 1)), np.ones(1)])
    >>> store.restore_before(model, onset=0)
    -1
    >>> float(model.get_weights()[1][0])
    0.0
    """

    def __init__(self, keep: int = 3):
        self.keep = keep
        self._snapshots: deque = deque(maxlen=keep)
        self._initial: dict[str, Any] | None = None

    @staticmethod
    def _optimizer_variables(model: Any) -> list:
        optimizer = getattr(model, "optimizer", None)
        return list(getattr(optimizer, "variables", [])) if optimizer is not None else []

    def take(self, model: Any, step: int, *, initial: bool = False) -> None:
        """Copies the weights and the optimizer state after batch ``step`` (``-1``: before
        training) to the host."""
        snapshot = {
            "step": step,
            "weights": [np.array(w) for w in model.get_weights()],
            "optimizer": [np.array(v) for v in self._optimizer_variables(model)],
        }
        if initial:
            self._initial = snapshot
            self._snapshots.clear()
        else:
            self._snapshots.append(snapshot)

    def restore_before(self, model: Any, onset: int) -> int | None:
        """Restores the newest snapshot taken before the batch ``onset`` ran; returns its step
        (``None``: nothing to restore)."""
        candidates = [s for s in self._snapshots if s["step"] + 1 < onset]
        snapshot = candidates[-1] if candidates else self._initial
        if snapshot is None:
            return None
        model.set_weights(snapshot["weights"])
        variables = self._optimizer_variables(model)
        if len(variables) == len(snapshot["optimizer"]):
            for variable, value in zip(variables, snapshot["optimizer"]):
                variable.assign(value)
        restored = snapshot["step"]
        self._snapshots = deque(
            (s for s in self._snapshots if s["step"] <= restored), maxlen=self.keep
        )
        return restored
