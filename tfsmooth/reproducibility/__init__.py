"""Replica training: measure how much identically trained models disagree, per configuration.

Train ``N`` replicas of a model-building function on the same data, differing only in the seed of
their initialisation, of their data order, or both; evaluate them on held-out data; report the mean
pairwise prediction difference (PD) with its standard error next to each replica's accuracy and the
ensemble's -- for several configurations side by side (ReLU vs SmeLU, with or without a cross
layer, ...). This is the experiment of the smooth-activation papers: accuracy against PD.

- :func:`train_replicas` runs it and returns a :class:`ReproducibilityReport`.
- :class:`ReproducibilityReport` gives a text table (:meth:`~ReproducibilityReport.table`), pandas
  DataFrames (:meth:`~ReproducibilityReport.to_dataframe`,
  :meth:`~ReproducibilityReport.replicas_dataframe`), the accuracy-vs-PD plot
  (:meth:`~ReproducibilityReport.plot`) and :meth:`~ReproducibilityReport.save`.

Seeds. Replica ``i`` of every configuration gets the same pair of seeds, so configurations are
compared on the same initialisation and data-order draws::

    init seed  = seed + i     if vary in ("init", "both")   else seed
    order seed = seed + i     if vary in ("order", "both")  else seed

``vary="none"`` trains identical replicas: with op determinism on (the default) their predictions
are bit-identical, a check that the pipeline itself adds no noise.

Modules: :mod:`~tfsmooth.reproducibility.training` (:func:`train_replicas`),
:mod:`~tfsmooth.reproducibility.stats` (pairwise PD with its jackknife error),
:mod:`~tfsmooth.reproducibility.report` (the result types) and
:mod:`~tfsmooth.reproducibility.determinism` (:func:`op_determinism`). The exact accuracy metrics
live in :mod:`tfsmooth.metrics` and are re-exported here.

References:
    - [Shamir, Lin, Coviello. Smooth activations and reproducibility in deep networks (2020)](
      https://arxiv.org/abs/2010.09931)
    - [Lin, Shamir. Real world large scale recommendation systems reproducibility and smooth
      activations (2022)](https://arxiv.org/abs/2202.06499)
"""

from tfsmooth.metrics.exact import auc_score, log_loss, rmse
from tfsmooth.reproducibility.determinism import op_determinism
from tfsmooth.reproducibility.report import ConfigurationResult, ReplicaRun, ReproducibilityReport
from tfsmooth.reproducibility.stats import pairwise_prediction_difference
from tfsmooth.reproducibility.training import TASKS as TASKS  # the constants stay importable
from tfsmooth.reproducibility.training import VARY as VARY
from tfsmooth.reproducibility.training import train_replicas

__all__ = [
    "ConfigurationResult",
    "ReplicaRun",
    "ReproducibilityReport",
    "auc_score",
    "log_loss",
    "op_determinism",
    "pairwise_prediction_difference",
    "rmse",
    "train_replicas",
]
