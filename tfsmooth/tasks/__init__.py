"""TensorFlow Recommenders integration: a retrieval task that trains against the whole item catalog.

``tfrs.tasks.Retrieval`` scores each query against the candidates of its batch. :class:`CatalogRetrieval`
holds the item table (or the layer that makes it) and one of tfsmooth's catalog losses instead, so a
``tfrs.Model.compute_loss`` trains a two-tower or sequential model against every item -- exactly
(:class:`~tfsmooth.losses.CatalogCrossEntropy`, chunked or not), or approximately at a fraction of
the memory (:class:`~tfsmooth.losses.ScalableCrossEntropy`, sampled softmax).

The class lives in :mod:`tfsmooth.tasks.catalog_retrieval`, which imports TensorFlow Recommenders;
this package imports that module when ``CatalogRetrieval`` is first used, not when it is imported:
``import tfsmooth.tasks`` works without TFRS and under Keras 3. TFRS 0.7 needs tf-keras
(``pip install "tfsmooth[tfrs]"``, and tf-keras chosen as the README says); using
``CatalogRetrieval`` without it raises an ``ImportError`` saying what to install and set.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["CatalogRetrieval"]


def __getattr__(name: str) -> Any:
    if name == "CatalogRetrieval":
        module = importlib.import_module(f"{__name__}.catalog_retrieval")
        return module.CatalogRetrieval
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "CatalogRetrieval"])
