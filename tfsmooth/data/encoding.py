"""Ratings to ranking-model features: id vocabularies, multi-hot genres, a seeded train/test split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from tfsmooth._validation import check_float, check_seed
from tfsmooth.data.ratings import Ratings

__all__ = ["FEATURES", "RankingData", "encode_ranking"]

#: The feature keys of :class:`RankingData` splits that a ranking model takes as inputs.
FEATURES = ("user", "item", "genres")

#: The genre column given to items that have no genre (or no item table at all).
NO_GENRE = "(no genres listed)"


@dataclasses.dataclass
class RankingData:
    """Encoded ranking data: train and test arrays plus what a model needs to size its embeddings.

    Each split is a dict of numpy arrays of the same length ``N``:

    - ``"user"``, ``"item"``: ``int32[N]`` indices into the vocabularies; ``0`` is reserved for ids
      not seen in training.
    - ``"genres"``: ``float32[N, n_genres]`` multi-hot genres of the item.
    - ``"label"``: ``float32[N]``, 1 where ``rating >= positive_threshold``.
    - ``"rating"``: ``float32[N]``, the raw rating.

    Attributes:
        train, test: the splits.
        n_users, n_items: rows the user / item embedding tables need: the number of distinct
            training ids plus one (index 0, unknown).
        n_genres: width of the multi-hot genre vector.
        genre_names: the genre of each column.
        user_vocabulary, item_vocabulary: raw ids; index ``i + 1`` encodes ``vocabulary[i]``.
        positive_threshold: the rating at or above which ``label`` is 1.
        name: the name of the source :class:`Ratings`.

    Build one with :func:`encode_ranking`; :meth:`features` and :meth:`targets` give the inputs
    and targets of a split in the form ``model.fit`` takes them for
    :func:`tfsmooth.models.build_ranking_model`.

    Example:

    >>> from tfsmooth.data import encode_ranking, synthetic_ratings
    >>> data = encode_ranking(synthetic_ratings(n_users=100, n_items=50, n_ratings=1000), seed=0)
    >>> len(data.train["label"]), len(data.test["label"])
    (800, 200)
    >>> sorted(data.features("train"))
    ['genres', 'item', 'user']
    >>> data.features("test")["genres"].shape == (200, data.n_genres)
    True
    >>> sorted(data.targets("train", tasks=("binary", "regression")))
    ['binary', 'regression']
    """

    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    n_users: int
    n_items: int
    n_genres: int
    genre_names: list[str]
    user_vocabulary: np.ndarray
    item_vocabulary: np.ndarray
    positive_threshold: float = 4.0
    name: str = "ratings"

    def features(self, split: str = "train") -> dict[str, np.ndarray]:
        """The model inputs of a split: ``{"user", "item", "genres"}`` (see :data:`FEATURES`).

        Args:
            split: ``"train"`` or ``"test"``.

        Returns:
            A dict of the split's ``user``, ``item`` and ``genres`` arrays.

        Raises:
            ValueError: for another ``split``.
        """
        data = self._split(split)
        return {key: data[key] for key in FEATURES}

    def targets(self, split: str = "train", tasks=("binary",)) -> dict[str, np.ndarray]:
        """The targets of a split keyed by task: ``"binary"`` -> label, ``"regression"`` -> rating.

        Args:
            split: ``"train"`` or ``"test"``.
            tasks: task names from ``("binary", "regression")``, as given to
                :func:`tfsmooth.models.build_ranking_model`.

        Returns:
            ``{task: float32[N]}``.

        Raises:
            ValueError: for another ``split`` or an unknown task.
        """
        data = self._split(split)
        source = {"binary": "label", "regression": "rating"}
        unknown = [t for t in tasks if t not in source]
        if unknown:
            raise ValueError(
                f"`tasks` must name tasks from {list(source)}. Received: tasks={list(tasks)!r}"
            )
        return {task: data[source[task]] for task in tasks}

    def _split(self, split: str) -> dict[str, np.ndarray]:
        if split not in ("train", "test"):
            raise ValueError(f"`split` must be 'train' or 'test'. Received: split={split!r}")
        return self.train if split == "train" else self.test

    def summary(self) -> str:
        """One line: name, split sizes, users, items, genres and the share of positive labels."""
        positives = float(self.train["label"].mean()) if len(self.train["label"]) else 0.0
        return (
            f"{self.name}: {len(self.train['label']):,} train / {len(self.test['label']):,} test "
            f"ratings, {self.n_users - 1:,} users, {self.n_items - 1:,} items, {self.n_genres} "
            f"genres, {positives:.0%} positive (rating >= {self.positive_threshold:g})"
        )


def _encode_ids(values: pd.Series, vocabulary: np.ndarray) -> np.ndarray:
    """Index ``i + 1`` for ``vocabulary[i]``, 0 for values not in the vocabulary."""
    index = pd.Index(vocabulary).get_indexer(values.to_numpy())
    return (index + 1).astype(np.int32)  # get_indexer gives -1 for unknown values -> 0


def _genre_matrix(ratings: Ratings, item_ids: pd.Series) -> tuple[np.ndarray, list[str]]:
    items = ratings.items
    genres_by_item: dict = {}
    if items is not None:
        genres_by_item = dict(zip(items["item_id"].tolist(), items["genres"].tolist()))
    names = sorted({g for genres in genres_by_item.values() for g in (genres or [])})
    names.append(NO_GENRE)
    column = {name: c for c, name in enumerate(names)}
    unique_items, inverse = np.unique(item_ids.to_numpy(), return_inverse=True)
    per_item = np.zeros((len(unique_items), len(names)), np.float32)
    for row, item in enumerate(unique_items.tolist()):
        genres = genres_by_item.get(item) or []
        if genres:
            per_item[row, [column[g] for g in genres]] = 1.0
        else:
            per_item[row, column[NO_GENRE]] = 1.0
    return per_item[inverse.reshape(-1)], names


def encode_ranking(
    ratings: Ratings,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    positive_threshold: float = 4.0,
) -> RankingData:
    """Encodes ratings for a ranking model (in the style of the TFRS ranking tutorial).

    **Split.** A random split of the *ratings* (not by user, not by time): a permutation drawn from
    ``numpy.random.default_rng(seed)`` puts ``round(test_fraction * N)`` ratings in ``test`` and the
    rest in ``train`` -- the split of the TFRS ranking tutorial. The same seed gives the same split.

    **Ids.** User and item vocabularies are the sorted distinct ids of the *training* split; index
    ``i + 1`` encodes ``vocabulary[i]`` and 0 any id unseen in training (test rows of new users or
    items get 0 rather than a leaked index).

    **Genres.** Multi-hot over the sorted genre names of the item table, plus a last column
    ``"(no genres listed)"`` for items without genres (every row has at least one 1).

    **Label.** ``label = rating >= positive_threshold`` (4 by default: "liked").

    Args:
        ratings: the :class:`Ratings` to encode.
        test_fraction: share of ratings held out, in ``[0, 1)``.
        seed: seed of the split.
        positive_threshold: the rating at or above which the binary label is 1.

    Returns:
        A :class:`RankingData`.

    Raises:
        TypeError: if ``ratings`` is not a :class:`Ratings`, a fraction or threshold is not a
            number, or ``seed`` is not an integer.
        ValueError: for ``test_fraction`` outside ``[0, 1)``, a non-finite threshold, a negative
            ``seed``, or no ratings.

    Example:

    >>> from tfsmooth.data import encode_ranking, synthetic_ratings
    >>> data = encode_ranking(synthetic_ratings(n_users=100, n_items=50, n_ratings=1000))
    >>> data.train["genres"].shape[1] == data.n_genres
    True
    """
    if not isinstance(ratings, Ratings):
        raise TypeError(
            f"`ratings` must be a tfsmooth.data.Ratings. Received: ratings of type "
            f"{type(ratings).__name__}"
        )
    test_fraction = check_float("test_fraction", test_fraction, 0.0, 1.0, max_inclusive=False)
    positive_threshold = check_float("positive_threshold", positive_threshold)
    seed = check_seed("seed", seed, allow_none=False)
    frame = ratings.ratings
    total = len(frame)
    if total == 0:
        raise ValueError(f"`ratings` has no ratings. Received: {ratings.name!r} with 0 rows")

    permutation = np.random.default_rng(seed).permutation(total)
    n_test = round(test_fraction * total)
    test_rows, train_rows = np.sort(permutation[:n_test]), np.sort(permutation[n_test:])
    if len(train_rows) == 0:
        raise ValueError(
            f"`test_fraction` leaves no training ratings. Received: test_fraction={test_fraction}, "
            f"{total} ratings"
        )

    train_frame = frame.iloc[train_rows]
    user_vocabulary = np.sort(train_frame["user_id"].unique())
    item_vocabulary = np.sort(train_frame["item_id"].unique())
    genres, genre_names = _genre_matrix(ratings, frame["item_id"])
    user = _encode_ids(frame["user_id"], user_vocabulary)
    item = _encode_ids(frame["item_id"], item_vocabulary)
    rating = frame["rating"].to_numpy(np.float32)
    label = (rating >= positive_threshold).astype(np.float32)

    def take(rows):
        return {
            "user": user[rows],
            "item": item[rows],
            "genres": genres[rows],
            "label": label[rows],
            "rating": rating[rows],
        }

    return RankingData(
        train=take(train_rows),
        test=take(test_rows),
        n_users=len(user_vocabulary) + 1,
        n_items=len(item_vocabulary) + 1,
        n_genres=len(genre_names),
        genre_names=genre_names,
        user_vocabulary=user_vocabulary,
        item_vocabulary=item_vocabulary,
        positive_threshold=float(positive_threshold),
        name=ratings.name,
    )
