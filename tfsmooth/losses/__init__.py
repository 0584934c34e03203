"""tfsmooth.losses."""
