"""tfsmooth: reproducible, scalable and stable recommender training for TensorFlow/Keras.

Three problems of real recommender training, each from a published paper:

- **Reproducible** -- smooth activations (`tfsmooth.activations`, `tfsmooth.layers`) and the tools to
  measure irreproducibility (`tfsmooth.metrics`, `tfsmooth.reproducibility`).
- **Scalable** -- catalog-wide losses that never materialise the logits (`tfsmooth.losses`).
- **Stable** -- the Clippy optimizer and a stability monitor (`tfsmooth.optimizers`,
  `tfsmooth.callbacks`).

Subpackages load on first use, so ``import tfsmooth`` does not import TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "activations",
    "callbacks",
    "data",
    "layers",
    "losses",
    "metrics",
    "models",
    "ops",
    "optimizers",
    "reproducibility",
    "serving",
    "tasks",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
