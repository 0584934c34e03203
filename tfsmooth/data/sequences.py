"""Per-user, time-ordered item sequences with the leave-last-out split of sequential recommendation."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from tfsmooth._validation import check_int

__all__ = ["SequenceSplits", "build_sequences"]

#: The index of padding in every sequence array; items are ``1..num_items``.
PADDING = 0


@dataclasses.dataclass
class SequenceSplits:
    """Item-index sequences of every user, split leave-last-out.

    Items are indexed ``1..num_items`` (``item_ids[i - 1]`` is the raw id of index ``i``) and ``0``
    is padding. Sequences are left-padded so the most recent item is in the last column, and
    truncated to the most recent ``max_length`` items. For a user with time-ordered items
    ``s_1 .. s_n``:

    - training: inputs ``s_1 .. s_{n-3}``, labels ``s_2 .. s_{n-2}`` (next item at every position);
    - validation: inputs ``s_1 .. s_{n-2}``, label ``s_{n-1}`` (the second last);
    - test: inputs ``s_1 .. s_{n-1}``, label ``s_n`` (the last).

    Attributes:
        train_inputs: int32 ``[U, L]``.
        train_labels: int32 ``[U, L]``: the next item at each position, 0 where there is none.
        valid_inputs: int32 ``[U, L]``.
        valid_labels: int32 ``[U]``.
        test_inputs: int32 ``[U, L]``.
        test_labels: int32 ``[U]``.
        item_ids: ``[C]`` raw item ids, in index order (index ``i`` is ``item_ids[i - 1]``).
        user_ids: ``[U]`` raw user ids, in row order.
        train_item_counts: int64 ``[C + 1]``: how often each index is a training label (0 for
            padding), e.g. for a popularity (unigram) sampling proposal.

    Build one with :func:`build_sequences`.

    Example:

    >>> import pandas as pd
    >>> from tfsmooth.data import build_sequences
    >>> frame = pd.DataFrame({"user_id": [7, 7, 7, 7, 7], "item_id": [30, 10, 20, 40, 10],
    ...                       "timestamp": [1, 2, 3, 4, 5]})
    >>> splits = build_sequences(frame, max_length=4)
    >>> splits.item_ids.tolist()  # index i encodes item_ids[i - 1]
    [10, 20, 30, 40]
    >>> splits.train_inputs.tolist(), splits.train_labels.tolist()
    ([[0, 0, 3, 1]], [[0, 0, 1, 2]])
    >>> splits.valid_inputs.tolist(), splits.valid_labels.tolist()
    ([[0, 3, 1, 2]], [4])
    >>> splits.test_inputs.tolist(), splits.test_labels.tolist()
    ([[3, 1, 2, 4]], [1])

    References:
        - [Kang, McAuley. Self-Attentive Sequential Recommendation (2018)](
          https://arxiv.org/abs/1808.09781) (the leave-last-out protocol)
    """

    train_inputs: np.ndarray
    train_labels: np.ndarray
    valid_inputs: np.ndarray
    valid_labels: np.ndarray
    test_inputs: np.ndarray
    test_labels: np.ndarray
    item_ids: np.ndarray
    user_ids: np.ndarray
    train_item_counts: np.ndarray

    @property
    def num_items(self) -> int:
        """Catalog size ``C`` (item indices are ``1..C``; an item table needs ``C + 1`` rows)."""
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        """Number of users ``U`` (rows of every array)."""
        return len(self.user_ids)

    @property
    def max_length(self) -> int:
        """Sequence length ``L`` (columns of the input arrays)."""
        return self.train_inputs.shape[1]

    def summary(self) -> str:
        """One line: users, items, ``max_length``, and the median and largest number of items per
        user that the splits keep (at most ``max_length + 1``: older interactions are cut)."""
        lengths = (self.test_inputs > 0).sum(axis=1) + 1
        return (
            f"{self.num_users} users, {self.num_items} items, max_length {self.max_length}; "
            f"items kept per user (at most max_length + 1): median {int(np.median(lengths))}, "
            f"max {int(lengths.max())}"
        )


def _left_pad(sequence: np.ndarray, length: int) -> np.ndarray:
    row = np.zeros(length, np.int32)
    tail = sequence[-length:] if length else sequence[:0]
    row[length - len(tail) :] = tail
    return row


def build_sequences(
    ratings: Any,
    *,
    max_length: int = 200,
    min_interactions: int = 3,
    min_rating: float | None = None,
) -> SequenceSplits:
    """Turns ratings into per-user, time-ordered item sequences, split leave-last-out.

    Every rating is an interaction (implicit feedback), unless ``min_rating`` keeps only ratings at
    or above it. A user's interactions are ordered by timestamp; ties keep the order of the rows in
    the ratings table (a stable sort). Users with fewer than ``min_interactions`` interactions are
    dropped; the catalog is the items of the remaining users, indexed ``1..C`` by ascending raw id.

    Args:
        ratings: a :class:`tfsmooth.data.Ratings`, or a DataFrame with columns ``user_id``,
            ``item_id`` and ``timestamp`` (and ``rating`` when ``min_rating`` is given).
        max_length: int ``>= 1``. Sequences keep the most recent ``max_length`` items.
        min_interactions: int ``>= 3`` (one for training, validation and test each).
        min_rating: optional float: keep only ratings ``>= min_rating``.

    Returns:
        A :class:`SequenceSplits`.

    Raises:
        ValueError: for missing columns, bad sizes, or no user left.

    Example:

    >>> from tfsmooth.data import synthetic_ratings
    >>> from tfsmooth.data.sequences import build_sequences
    >>> splits = build_sequences(synthetic_ratings(n_users=50, n_items=40, n_ratings=600), max_length=20)
    >>> splits.train_inputs.shape, splits.test_labels.shape
    ((50, 20), (50,))

    References:
        - [Kang, McAuley. Self-Attentive Sequential Recommendation (2018)](
          https://arxiv.org/abs/1808.09781) (the leave-last-out protocol)
    """
    max_length = check_int("max_length", max_length, 1)
    min_interactions = check_int("min_interactions", min_interactions, 3)
    frame = getattr(ratings, "ratings", ratings)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            "`ratings` must be a tfsmooth.data.Ratings or a pandas DataFrame. "
            f"Received: ratings of type {type(ratings).__name__}"
        )
    needed = ["user_id", "item_id", "timestamp"] + (["rating"] if min_rating is not None else [])
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise ValueError(
            f"`ratings` must have columns {needed}. Received: columns {list(frame.columns)}"
        )
    if min_rating is not None:
        frame = frame[frame["rating"] >= min_rating]
    frame = frame[["user_id", "item_id", "timestamp"]].reset_index(drop=True)
    counts = frame.groupby("user_id", sort=False)["item_id"].transform("size")
    frame = frame[counts >= min_interactions]
    if frame.empty:
        raise ValueError(
            f"No user has `min_interactions`={min_interactions} interactions or more "
            f"(min_rating={min_rating!r})."
        )
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable")
    item_ids, item_index = np.unique(frame["item_id"].to_numpy(), return_inverse=True)
    items = (item_index + 1).astype(np.int32)
    user_ids, starts = np.unique(frame["user_id"].to_numpy(), return_index=True)
    ends = np.append(starts[1:], len(frame))

    n_users, length = len(user_ids), max_length
    arrays = {
        name: np.zeros((n_users, length), np.int32)
        for name in ("train_inputs", "train_labels", "valid_inputs", "test_inputs")
    }
    valid_labels = np.zeros(n_users, np.int32)
    test_labels = np.zeros(n_users, np.int32)
    for row, (start, end) in enumerate(zip(starts, ends)):
        sequence = items[start:end]
        train = sequence[:-2]
        arrays["train_inputs"][row] = _left_pad(train[:-1], length)
        arrays["train_labels"][row] = _left_pad(train[1:], length)
        arrays["valid_inputs"][row] = _left_pad(train, length)
        arrays["test_inputs"][row] = _left_pad(sequence[:-1], length)
        valid_labels[row] = sequence[-2]
        test_labels[row] = sequence[-1]
    train_counts = np.bincount(arrays["train_labels"].ravel(), minlength=len(item_ids) + 1)
    train_counts[PADDING] = 0
    return SequenceSplits(
        valid_labels=valid_labels,
        test_labels=test_labels,
        item_ids=item_ids,
        user_ids=user_ids,
        train_item_counts=train_counts.astype(np.int64),
        **arrays,
    )
