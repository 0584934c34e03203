"""tfsmooth.models."""
