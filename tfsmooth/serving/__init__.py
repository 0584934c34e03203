"""Export trained models as SavedModels that serve with plain TensorFlow (no tfsmooth import).

- :func:`export_retrieval`: a query tower plus a candidate table become one SavedModel that takes
  query features and returns the top-k candidate ids and scores; a request may choose ``k`` (up to
  the ``max_k`` fixed at export) and the ids to leave out (e.g. the items a user has seen). The
  scores are computed chunk by chunk over the catalog with a running top-k
  (:func:`tfsmooth.ops.exact_top_k`), so a million-item catalog never materialises a
  ``[batch, catalog]`` score matrix.
- :func:`export_sasrec`: the same for a SASRec model: item sequences in, the next items out, the
  items of each sequence left out.
- :func:`export_model`: any Keras model (e.g. a ranking model with SmeLU) as a SavedModel with a
  ``serving_default`` signature, the same way under Keras 3 and tf-keras.

Everything a served model computes is stored in the SavedModel as TensorFlow graphs (SmeLU's XLA
kernels included), so the serving process needs TensorFlow only.
"""

from tfsmooth.serving._common import input_signature_of
from tfsmooth.serving.model import export_model
from tfsmooth.serving.retrieval import export_retrieval
from tfsmooth.serving.sasrec import export_sasrec

__all__ = ["export_model", "export_retrieval", "export_sasrec", "input_signature_of"]
