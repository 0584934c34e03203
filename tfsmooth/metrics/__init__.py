"""tfsmooth.metrics."""
