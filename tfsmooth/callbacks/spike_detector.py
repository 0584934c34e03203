"""SpikeDetector: flags batch losses far above the moving average of the healthy ones."""

from __future__ import annotations

import math

#: Healthy batches before spikes count at all: during the warmup a loss is compared with the
#: plain mean of the healthy losses so far, once there are this many.
MIN_REFERENCE_STEPS = 3


class SpikeDetector:
    """Flags loss spikes against a moving average of the healthy losses; pure Python.

    A loss ``l_t`` is a *spike* when ``l_t > k * reference`` (``k = spike_factor``), with the
    reference the exponential moving average of the healthy losses,
    ``a_t = decay * a_{t-1} + (1 - decay) * l_t``; during the first ``warmup_steps`` healthy
    batches the plain mean of the healthy losses so far is the reference instead (from the
    third on), so an explosion in the first steps is a spike too. A NaN/Inf loss is always a
    spike. Spikes never enter the average. ``spike_patience`` spikes in a row, or one NaN/Inf
    loss, are a divergence (:attr:`diverged`).

    Args:
        spike_factor: ``k`` (> 1).
        spike_patience: spikes in a row that make a divergence (>= 1).
        average_decay: the moving average's decay, in ``[0, 1)``.
        warmup_steps: healthy batches before the moving average is the reference.

    Example:

    >>> detector = SpikeDetector(spike_factor=3.0, spike_patience=2, average_decay=0.9,
    ...                          warmup_steps=0)
    >>> [detector.update(loss, step) for step, loss in enumerate([1.0, 1.0, 10.0, 10.0])]
    [False, False, True, True]
    >>> detector.diverged, detector.streak_start
    (True, 2)

    References:
        - [Tang et al. (2023)](https://arxiv.org/abs/2302.09178)
    """

    def __init__(
        self, spike_factor: float, spike_patience: int, average_decay: float, warmup_steps: int
    ):
        self.spike_factor = spike_factor
        self.spike_patience = spike_patience
        self.average_decay = average_decay
        self.warmup_steps = warmup_steps
        #: The moving average of the healthy losses (``None`` before the first).
        self.average: float | None = None
        #: Healthy batches so far.
        self.healthy_steps = 0
        self._healthy_sum = 0.0
        #: Spikes in a row, and the step of the first of them.
        self.streak = 0
        self.streak_start: int | None = None
        self._nonfinite = False

    @property
    def diverged(self) -> bool:
        """Whether the last loss was NaN/Inf or the current streak of spikes is long enough."""
        return self._nonfinite or self.streak >= self.spike_patience

    @property
    def settled(self) -> bool:
        """Whether the warmup is over (the moving average is the reference)."""
        return self.healthy_steps >= self.warmup_steps

    def reference(self) -> float | None:
        """What the next loss is compared with (``None``: too early to compare)."""
        if self.settled:
            return self.average
        if self.healthy_steps >= MIN_REFERENCE_STEPS:
            return self._healthy_sum / self.healthy_steps
        return None

    def update(self, loss: float, step: int) -> bool:
        """Takes the loss of batch ``step``; returns whether it is a spike."""
        self._nonfinite = not math.isfinite(loss)
        if not self._nonfinite:
            reference = self.reference()
            spike = reference is not None and reference > 0 and loss > self.spike_factor * reference
        else:
            spike = True
        if spike:
            self.streak += 1
            if self.streak_start is None:
                self.streak_start = step
            return True
        self.clear_streak()
        self.healthy_steps += 1
        self._healthy_sum += loss
        if self.average is None:
            self.average = loss
        else:
            self.average = self.average_decay * self.average + (1 - self.average_decay) * loss
        return False

    def clear_streak(self) -> None:
        """Forgets the current streak of spikes (after a divergence was handled)."""
        self.streak, self.streak_start, self._nonfinite = 0, None, False
