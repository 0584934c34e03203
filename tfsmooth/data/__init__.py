"""Ratings data: MovieLens readers (format detected by content), TensorFlow Datasets, built-in
synthetic data, and the encoding ranking models use.

- :class:`Ratings`, :func:`load_ratings`, :func:`default_data_path`: read ``ratings.csv``,
  ``ratings.dat`` or ``u.data`` (with genres from the movie file beside them).
- :func:`load_tfds`: ``movielens/100k-ratings`` and friends from TensorFlow Datasets.
- :func:`synthetic_ratings`: realistic ratings generated in code (no download).
- :func:`encode_ranking` / :class:`RankingData`: id vocabularies, multi-hot genres, a seeded split.
"""

from tfsmooth.data.encoding import FEATURES, RankingData, encode_ranking
from tfsmooth.data.ratings import Ratings, default_data_path, load_ratings
from tfsmooth.data.sequences import SequenceSplits, build_sequences
from tfsmooth.data.synthetic import synthetic_ratings
from tfsmooth.data.tfds import load_tfds

__all__ = [
    "FEATURES",
    "RankingData",
    "Ratings",
    "SequenceSplits",
    "build_sequences",
    "default_data_path",
    "encode_ranking",
    "load_ratings",
    "load_tfds",
    "synthetic_ratings",
]
