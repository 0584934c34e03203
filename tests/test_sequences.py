"""build_sequences: time order, leave-last-out, padding and truncation, against hand-built cases."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from references import reference_split

from tfsmooth.data import Ratings, synthetic_ratings
from tfsmooth.data.sequences import build_sequences


def frame(rows):
    data = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return data.astype({"rating": "float32", "timestamp": "int64"})


def test_hand_built_split():
    # User 7 rates 5 items out of time order; user 3 rates 3 items with a timestamp tie (file order
    # decides); user 9 has only 2 ratings and is dropped.
    data = frame(
        [
            (7, 50, 4.0, 30),
            (3, 10, 3.0, 5),
            (7, 20, 5.0, 10),
            (9, 10, 1.0, 1),
            (7, 40, 2.0, 20),
            (3, 30, 4.0, 5),
            (7, 10, 3.0, 50),
            (3, 20, 1.0, 9),
            (7, 30, 3.0, 40),
            (9, 20, 1.0, 2),
        ]
    )
    splits = build_sequences(Ratings(data, name="hand"), max_length=3)
    # Catalog of the kept users, by raw id: 10 -> 1, 20 -> 2, 30 -> 3, 40 -> 4, 50 -> 5.
    np.testing.assert_array_equal(splits.item_ids, [10, 20, 30, 40, 50])
    np.testing.assert_array_equal(splits.user_ids, [3, 7])
    # User 3: 10, 30 (tie at t=5, file order), 20.   User 7: 20, 40, 50, 30, 10.
    np.testing.assert_array_equal(splits.train_inputs, [[0, 0, 0], [0, 2, 4]])
    np.testing.assert_array_equal(splits.train_labels, [[0, 0, 0], [0, 4, 5]])
    np.testing.assert_array_equal(splits.valid_inputs, [[0, 0, 1], [2, 4, 5]])
    np.testing.assert_array_equal(splits.valid_labels, [3, 3])
    np.testing.assert_array_equal(splits.test_inputs, [[0, 1, 3], [4, 5, 3]])  # truncated to 3
    np.testing.assert_array_equal(splits.test_labels, [2, 1])
    np.testing.assert_array_equal(splits.train_item_counts, [0, 0, 0, 0, 1, 1])
    assert splits.num_items == 5 and splits.num_users == 2 and splits.max_length == 3


def test_synthetic_ratings_match_a_plain_python_split():
    data = synthetic_ratings(n_users=60, n_items=80, n_ratings=1500, seed=3)
    splits = build_sequences(data, max_length=12, min_interactions=5)
    expected = reference_split(data.ratings, 12, 5)
    for name, values in expected.items():
        np.testing.assert_array_equal(getattr(splits, name), values, err_msg=name)
    assert splits.train_inputs.dtype == np.int32
    # Each label is the next position's input, wherever there is a label.
    has_label = splits.train_labels[:, :-1] > 0
    np.testing.assert_array_equal(
        splits.train_inputs[:, 1:][has_label], splits.train_labels[:, :-1][has_label]
    )
    assert np.all((splits.train_labels > 0) == (splits.train_inputs > 0))


def test_min_rating_keeps_only_high_ratings():
    data = synthetic_ratings(n_users=40, n_items=30, n_ratings=600, seed=1)
    splits = build_sequences(data, max_length=8, min_rating=4.0)
    high = data.ratings[data.ratings["rating"] >= 4.0]
    expected = reference_split(high, 8, 3)
    np.testing.assert_array_equal(splits.test_inputs, expected["test_inputs"])


def test_bad_arguments():
    data = synthetic_ratings(n_users=10, n_items=10, n_ratings=40, seed=0)
    with pytest.raises(
        ValueError, match=re.escape("`max_length` must be an integer >= 1. Received: max_length=0")
    ):
        build_sequences(data, max_length=0)
    with pytest.raises(ValueError, match="`min_interactions` must be an integer >= 3"):
        build_sequences(data, min_interactions=2)
    with pytest.raises(
        TypeError, match=re.escape("must be a tfsmooth.data.Ratings or a pandas DataFrame")
    ):
        build_sequences([1, 2, 3])
    with pytest.raises(ValueError, match="must have columns"):
        build_sequences(data.ratings.drop(columns=["timestamp"]))
    with pytest.raises(ValueError, match="No user has `min_interactions`=1000"):
        build_sequences(data, min_interactions=1000)
