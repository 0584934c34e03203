"""Models used by the benchmarks, the demo and the notebooks.

- :func:`build_ranking_model`: user/item embeddings, genres, optional DCN cross layer, a shared MLP
  with any activation, binary and regression heads (the TFRS ranking / DCN tutorials' model).
"""

from tfsmooth.models.ranking import (
    ACTIVATIONS,
    TASKS,
    build_ranking_model,
    make_activation,
    ranking_losses,
    ranking_metrics,
)
from tfsmooth.models.sasrec import SASRec

__all__ = [
    "ACTIVATIONS",
    "TASKS",
    "SASRec",
    "build_ranking_model",
    "make_activation",
    "ranking_losses",
    "ranking_metrics",
]
