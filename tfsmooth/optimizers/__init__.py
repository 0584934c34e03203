"""tfsmooth.optimizers."""
