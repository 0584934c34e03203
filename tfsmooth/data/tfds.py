"""TensorFlow Datasets adapter: MovieLens ratings from ``tfds`` as :class:`Ratings`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfsmooth.data.ratings import Ratings

__all__ = ["SUPPORTED_TFDS", "load_tfds"]

#: The TFDS datasets this adapter understands (MovieLens "-ratings" configurations).
SUPPORTED_TFDS = (
    "movielens/100k-ratings",
    "movielens/1m-ratings",
    "movielens/20m-ratings",
    "movielens/25m-ratings",
    "movielens/latest-small-ratings",
)


def _decode(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "SO":
        return np.asarray([v.decode("utf-8") if isinstance(v, bytes) else v for v in values])
    return values


def _ids(values: np.ndarray) -> pd.Series:
    series = pd.Series(_decode(values))
    numeric = pd.to_numeric(series, errors="coerce")
    return numeric.astype(np.int64) if numeric.notna().all() else series.astype(str)


def load_tfds(name: str = "movielens/100k-ratings", *, data_dir: str | None = None) -> Ratings:
    """Loads MovieLens ratings from TensorFlow Datasets (downloads on first use).

    Needs the ``tensorflow-datasets`` package and, the first time, an internet connection. Reads
    the ``user_id``, ``movie_id``, ``user_rating``, ``timestamp`` and ``movie_genres`` features of the
    ``train`` split (the only one TFDS has for MovieLens) into a :class:`Ratings` whose ``items`` hold
    the genre names.

    Args:
        name: a MovieLens ratings dataset of TFDS, e.g. ``"movielens/100k-ratings"``.
        data_dir: where TFDS keeps its data (its default when ``None``).

    Returns:
        A :class:`Ratings` named after the dataset.

    Raises:
        ValueError: for a dataset this adapter does not read.
        ImportError: if ``tensorflow-datasets`` is not installed.
        OSError: if TFDS cannot download or read the data (e.g. offline).

    Example:

    >>> from tfsmooth.data import load_tfds
    >>> data = load_tfds("movielens/100k-ratings")  # doctest: +SKIP
    """
    if name not in SUPPORTED_TFDS:
        raise ValueError(
            f"`name` must be one of the MovieLens ratings datasets {list(SUPPORTED_TFDS)}. "
            f"Received: name={name!r}"
        )
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError(
            f"tfds:{name} needs TensorFlow Datasets: pip install tensorflow-datasets (and an "
            "internet connection for the first download), or pass a ratings file with --data"
        ) from None
    try:
        dataset, info = tfds.load(name, split="train", data_dir=data_dir, with_info=True)
        rows = tfds.as_dataframe(dataset)
    except Exception as error:  # TFDS raises many types for network and storage problems.
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise OSError(f"TensorFlow Datasets could not load {name}: {first_line[:200]}") from None

    genre_names = list(info.features["movie_genres"].feature.names)
    ratings = pd.DataFrame(
        {
            "user_id": _ids(rows["user_id"].to_numpy()),
            "item_id": _ids(rows["movie_id"].to_numpy()),
            "rating": rows["user_rating"].to_numpy(np.float32),
            "timestamp": rows["timestamp"].to_numpy(np.int64),
        }
    )
    genres = [
        [genre_names[int(g)] for g in np.asarray(v).reshape(-1)] for v in rows["movie_genres"]
    ]
    items = (
        pd.DataFrame({"item_id": ratings["item_id"], "genres": genres})
        .drop_duplicates("item_id")
        .reset_index(drop=True)
    )
    return Ratings(ratings=ratings, items=items, name=name.replace("/", "-"))
