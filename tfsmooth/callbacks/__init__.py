"""Callbacks: :class:`StabilityMonitor` sees divergence coming and puts the last good state back."""

from tfsmooth.callbacks.stability_monitor import StabilityMonitor

__all__ = ["StabilityMonitor"]
