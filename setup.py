"""Packaging for tfsmooth."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "tfsmooth" / "__init__.py").read_text(), re.M
).group(1)

TFRS = ["tensorflow-recommenders>=0.7.3", "tf-keras>=2.16"]
NOTEBOOKS = ["nbclient>=0.9", "nbformat>=5.9", "ipykernel>=6"]

setup(
    name="tfsmooth",
    version=VERSION,
    description=(
        "Reproducible, scalable and stable recommender training for TensorFlow/Keras: "
        "smooth activations (SmeLU), Scalable Cross-Entropy and the Clippy optimizer."
    ),
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["tfsmooth", "tfsmooth.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3",
        "numpy>=1.23",
        "pandas>=1.5",
        "matplotlib>=3.6",
    ],
    extras_require={
        "tfrs": TFRS,
        "notebooks": NOTEBOOKS,
        "test": TFRS + NOTEBOOKS + ["pytest>=7", "psutil>=5.9", "ruff>=0.5"],
    },
    entry_points={"console_scripts": ["tfsmooth=tfsmooth.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
