"""LayerOnsetTracker: which layer's signal left its own baseline first."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

#: Readings a layer needs before it has a baseline.
MIN_BASELINE_READINGS = 5


class LayerOnsetTracker:
    """Finds the layer that moved first, from one signal per layer per logged step; pure Python.

    Each layer's baseline is the median of its recent healthy readings (in log space, over the
    last ``window``): robust to the first steps' transient and to single outliers. A reading above
    ``layer_factor`` times the baseline (or non-finite) marks the layer's *onset* at that step;
    ``calm_steps`` normal readings in a row clear it again. :meth:`first_layer` names the layer
    with the earliest onset (the largest jump breaks ties; equal jumps, e.g. two layers whose
    readings turned non-finite in the same step, go to the layer read first, which for a Keras
    model is the one nearer the input) or, with none, the largest jump now.

    Args:
        layer_factor: a reading above this many times the baseline is anomalous (> 1).
        window: healthy readings the baseline is taken over.
        calm_steps: normal readings in a row that clear an onset.

    Example:

    >>> tracker = LayerOnsetTracker(layer_factor=10.0, window=50, calm_steps=3)
    >>> for step in range(6):
    ...     tracker.track({"bottom": 1.0, "top": 1.0}, step, ready=True)
    >>> tracker.track({"bottom": 100.0, "top": 2.0}, 6, ready=True)
    >>> tracker.track({"bottom": 500.0, "top": 80.0}, 7, ready=True)
    >>> tracker.first_layer({"bottom": 500.0, "top": 80.0}, 7)
    ('bottom', 6)

    References:
        - [Tang et al. (2023)](https://arxiv.org/abs/2302.09178): bottom layers move first.
    """

    def __init__(self, layer_factor: float, window: int, calm_steps: int):
        self.layer_factor = layer_factor
        self.window = window
        self.calm_steps = calm_steps
        self._history: dict[str, deque] = {}
        #: ``layer -> (step, jump)`` of the layers whose onset is open.
        self.onsets: dict[str, tuple[int, float]] = {}
        self._calm: dict[str, int] = {}

    def baseline(self, layer: str) -> float | None:
        """The median of the layer's recent healthy readings; ``None`` until there are a few."""
        values = self._history.get(layer)
        if not values or len(values) < MIN_BASELINE_READINGS:
            return None
        return 10.0 ** float(np.median(values))

    def track(self, signals: dict[str, float], step: int, *, ready: bool) -> None:
        """Takes one reading per layer at ``step``; ``ready``: whether onsets may be marked yet
        (the loss's warmup is over)."""
        for layer, signal in signals.items():
            baseline = self.baseline(layer)
            anomalous = not math.isfinite(signal) or (
                ready and baseline is not None and signal > self.layer_factor * baseline
            )
            if anomalous:
                self._calm[layer] = 0
                if layer not in self.onsets:
                    self.onsets[layer] = (step, signal / baseline if baseline else math.inf)
                continue
            if layer in self.onsets:
                self._calm[layer] = self._calm.get(layer, 0) + 1
                if self._calm[layer] >= self.calm_steps:
                    del self.onsets[layer]
            if signal > 0:
                self._history.setdefault(layer, deque(maxlen=self.window)).append(
                    math.log10(signal)
                )

    def first_layer(
        self, last_signals: dict[str, float], last_step: int | None
    ) -> tuple[str | None, int | None]:
        """``(layer, step)`` of the earliest open onset; with none, the layer whose last reading
        (``last_signals``, taken at ``last_step``) is furthest above its baseline."""
        if self.onsets:
            layer, (onset, _) = min(self.onsets.items(), key=lambda item: (item[1][0], -item[1][1]))
            return layer, onset
        if not last_signals:
            return None, None
        best, score = None, -math.inf
        for layer, signal in last_signals.items():
            baseline = self.baseline(layer)
            jump = signal / baseline if baseline else signal
            if not math.isfinite(jump):
                jump = math.inf
            if jump > score:
                best, score = layer, jump
        return best, last_step

    def onset_steps(self) -> dict[str, int]:
        """``layer -> onset step`` of the open onsets, earliest first."""
        return {k: v[0] for k, v in sorted(self.onsets.items(), key=lambda item: item[1][0])}

    def clear_onsets(self) -> None:
        """Forgets the open onsets (after a divergence was handled); baselines stay."""
        self.onsets, self._calm = {}, {}
