"""Models used by the benchmarks, the demo and the notebooks.

- :func:`build_ranking_model`: user/item embeddings, genres, optional DCN cross layer, a shared MLP
  with any activation, binary and regression heads (the TFRS ranking / DCN tutorials' model);
  :data:`ACTIVATIONS` is the one list of activation names (the demo CLI offers these).
- :class:`SASRec`: a causal self-attention model over item sequences, trained with any catalog loss
  (a name from :data:`tfsmooth.losses.LOSSES` or a loss instance).
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
