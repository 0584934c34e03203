"""tfsmooth.data."""
