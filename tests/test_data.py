"""Ratings readers (format by content), synthetic data, ranking encoding, the TFDS adapter's errors."""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest

from tfsmooth.data import (
    RankingData,
    Ratings,
    default_data_path,
    encode_ranking,
    load_ratings,
    load_tfds,
    synthetic_ratings,
)

# Five ratings as (user, item, rating, timestamp), written below in each MovieLens layout.
ROWS = [(1, 10, 4.0, 964982703), (1, 20, 3.5, 964982704), (2, 10, 5.0, 964982705),
        (2, 30, 1.0, 964982706), (3, 20, 4.5, 964982707)]  # fmt: skip
GENRES = {10: ["Comedy", "Drama"], 20: [], 30: ["Action"]}


def _expected_frame() -> pd.DataFrame:
    users, items, ratings, times = zip(*ROWS)
    return pd.DataFrame(
        {
            "user_id": np.asarray(users, np.int64),
            "item_id": np.asarray(items, np.int64),
            "rating": np.asarray(ratings, np.float32),
            "timestamp": np.asarray(times, np.int64),
        }
    )


def write_csv(directory: pathlib.Path, name: str = "ratings.csv") -> pathlib.Path:
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r},{t}" for u, i, r, t in ROWS]
    (directory / name).write_text("\n".join(lines) + "\n")
    movies = ["movieId,title,genres"] + [
        f'{i},"Movie {i}, The (1999)",{"|".join(g) or "(no genres listed)"}'
        for i, g in GENRES.items()
    ]
    (directory / "movies.csv").write_text("\n".join(movies) + "\n")
    return directory / name


def write_dat(directory: pathlib.Path, name: str = "ratings.dat") -> pathlib.Path:
    lines = [f"{u}::{i}::{int(r) if r == int(r) else r}::{t}" for u, i, r, t in ROWS]
    (directory / name).write_text("\n".join(lines) + "\n", encoding="latin-1")
    movies = [f"{i}::Café {i} (1999)::{'|'.join(g)}" for i, g in GENRES.items()]
    (directory / "movies.dat").write_text("\n".join(movies) + "\n", encoding="latin-1")
    return directory / name


ML100K_NAMES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                "Romance", "Sci-Fi", "Thriller", "War", "Western"]  # fmt: skip


def write_udata(directory: pathlib.Path, name: str = "u.data", genre_file: bool = True):
    lines = [f"{u}\t{i}\t{int(r) if r == int(r) else r}\t{t}" for u, i, r, t in ROWS]
    (directory / name).write_text("\n".join(lines) + "\n")
    items = []
    for i, genres in GENRES.items():
        flags = ["1" if g in genres else "0" for g in ML100K_NAMES]
        items.append("|".join([str(i), f"Film {i} (1995)", "01-Jan-1995", "", "http://x", *flags]))
    (directory / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    if genre_file:
        genre_lines = [f"{g}|{k}" for k, g in enumerate(ML100K_NAMES)]
        (directory / "u.genre").write_text("\n".join(genre_lines) + "\n")
    return directory / name


WRITERS = {"csv": write_csv, "dat": write_dat, "udata": write_udata}


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize("by_directory", [False, True])
def test_each_movielens_layout_reads_the_same_ratings_and_genres(tmp_path, kind, by_directory):
    path = WRITERS[kind](tmp_path)
    data = load_ratings(tmp_path if by_directory else str(path))
    pd.testing.assert_frame_equal(data.ratings.reset_index(drop=True), _expected_frame())
    genres = dict(zip(data.items["item_id"], data.items["genres"]))
    assert {int(k): sorted(v) for k, v in genres.items()} == {
        k: sorted(v) for k, v in GENRES.items()
    }
    assert data.name == tmp_path.name


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_format_is_detected_by_content_not_by_name(tmp_path, kind):
    path = WRITERS[kind](tmp_path, name="export.txt")
    data = load_ratings(path)
    pd.testing.assert_frame_equal(data.ratings.reset_index(drop=True), _expected_frame())


def test_u_item_without_u_genre_uses_the_ml100k_genre_names(tmp_path):
    write_udata(tmp_path, genre_file=False)
    genres = dict(
        zip(load_ratings(tmp_path).items["item_id"], load_ratings(tmp_path).items["genres"])
    )
    assert sorted(genres[10]) == ["Comedy", "Drama"]


def test_ratings_without_a_movie_file_have_no_items(tmp_path):
    path = write_csv(tmp_path)
    (tmp_path / "movies.csv").unlink()
    assert load_ratings(path).items is None


def test_string_ids_are_kept_raw(tmp_path):
    (tmp_path / "r.csv").write_text("userId,movieId,rating,timestamp\nu1,m9,4.5,10\nu2,m9,2,11\n")
    data = load_ratings(tmp_path / "r.csv")
    assert data.ratings["user_id"].tolist() == ["u1", "u2"]
    assert data.ratings["rating"].dtype == np.float32


@pytest.mark.parametrize(
    "content, message",
    [
        ("", r"is empty"),
        ("\n\n", r"is empty"),
        ("hello world\n", r"not a ratings file tfsmooth reads.*first line is 'hello world'"),
        ("userId,movieId,rating,timestamp\n", r"has no ratings"),
        (
            "userId,movieId,rating,timestamp\n1,2,four,5\n",
            r"rating 'four' on data row 1 is not a number",
        ),
        ("userId,movieId,rating,timestamp\n1,2,4,5\n1,2,3\n", r"data row 2 has missing fields"),
        ("userId,movieId,rating,timestamp\n1,2,4,5\n1,2,3,4,5\n", r"malformed: Expected 4 fields"),
        ("1::2::nan::5\n", r"rating 'nan' on data row 1 is not a number"),
        ("1\t2\t4\t5\n3\t4\t5\n", r"data row 2 has missing fields"),
        ("userId,itemX,rating,timestamp\n1,2,3,4\n", r"not a ratings file"),
    ],
)
def test_bad_files_give_one_line_errors_naming_the_problem(tmp_path, content, message):
    path = tmp_path / "ratings.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_ratings(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_missing_paths_and_binary_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such file or directory"):
        load_ratings(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds no ratings file"):
        load_ratings(tmp_path)
    (tmp_path / "ratings.csv").write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(ValueError, match="binary file"):
        load_ratings(tmp_path)
    with pytest.raises(TypeError, match="`path` must be a file or directory path"):
        load_ratings(42)


def test_tfds_without_tensorflow_datasets_is_a_clear_one_line_error():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip(
            "tensorflow-datasets is installed here; only the missing-package path is tested"
        )
    with pytest.raises(ImportError, match=r"pip install tensorflow-datasets") as info:
        load_ratings("tfds:movielens/100k-ratings")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"`name` must be one of the MovieLens ratings datasets"):
        load_tfds("mnist")


def test_ratings_checks_its_columns():
    with pytest.raises(ValueError, match=r"missing \['timestamp'\]"):
        Ratings(pd.DataFrame({"user_id": [1], "item_id": [1], "rating": [1.0]}))


def test_default_data_path_is_a_movielens_directory_or_none():
    path = default_data_path()
    assert path is None or (path / "ratings.csv").is_file()


# ----------------------------------------------------------------------------------------------------
# Synthetic data.


def test_synthetic_is_deterministic_and_well_formed():
    a = synthetic_ratings(n_users=300, n_items=200, n_ratings=6000, seed=3)
    b = synthetic_ratings(n_users=300, n_items=200, n_ratings=6000, seed=3)
    c = synthetic_ratings(n_users=300, n_items=200, n_ratings=6000, seed=4)
    pd.testing.assert_frame_equal(a.ratings, b.ratings)
    assert not a.ratings.equals(c.ratings)
    r = a.ratings
    assert len(r) == 6000 and a.name == "synthetic"
    assert r["rating"].dtype == np.float32 and r["timestamp"].dtype == np.int64
    assert set(np.unique(r["rating"])) <= set(np.arange(1, 11) / 2.0)
    assert not r.duplicated(["user_id", "item_id"]).any()
    assert r["user_id"].between(1, 300).all() and r["item_id"].between(1, 200).all()
    # Timestamps strictly increase within each user.
    assert (r.groupby("user_id")["timestamp"].diff().dropna() > 0).all()
    assert 0.3 < (r["rating"] >= 4).mean() < 0.7
    assert all(1 <= len(g) <= 4 for g in a.items["genres"])


def test_synthetic_has_popularity_skew_and_genre_signal():
    data = synthetic_ratings(n_users=1000, n_items=500, n_ratings=30000, seed=0)
    counts = np.sort(data.ratings["item_id"].value_counts().to_numpy())[::-1]
    assert counts[: len(counts) // 10].sum() / counts.sum() > 0.3  # top 10% of items: > 30%
    activity = data.ratings["user_id"].value_counts().to_numpy()
    assert activity.max() > 5 * np.median(activity)  # heavy users exist
    # Genres carry signal about ratings: mean ratings differ across genres beyond noise.
    exploded = data.ratings.merge(data.items, on="item_id").explode("genres")
    means = exploded.groupby("genres")["rating"].mean()
    assert means.max() - means.min() > 0.2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_users": 0}, r"`n_users` must be an integer >= 1. Received: n_users=0"),
        ({"n_ratings": 10**9}, r"`n_ratings` must be <= n_users \* \(n_items // 2\)"),
        # An odd item count: each user rates at most 5 of 11 items, so 20 users give at most 100
        # (this used to loop forever placing the 101st rating).
        (
            {"n_users": 20, "n_items": 11, "n_ratings": 101},
            r"`n_ratings` must be <= n_users \* \(n_items // 2\) = 100",
        ),
        ({"noise": float("nan")}, r"`noise` must be a finite number"),
        ({"n_genres": 40}, r"`n_genres` must be <= 18"),
        ({"seed": -1}, r"`seed` must be an integer >= 0.*Received: seed=-1"),
        ({"n_ratings": 5, "n_users": 20}, r"`n_ratings` must be >= n_users = 20"),
        ({"noise": -0.5}, r"`noise` must be >= 0"),
    ],
)
def test_synthetic_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic_ratings(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seed": 1.5}, r"`seed` must be an integer"),
        ({"noise": "0.5"}, r"`noise` must be a number"),
        ({"n_users": 2.0}, r"`n_users` must be an integer"),
    ],
)
def test_synthetic_wrong_kinds_are_type_errors(kwargs, message):
    with pytest.raises(TypeError, match=message):
        synthetic_ratings(**kwargs)


def test_synthetic_accepts_numpy_scalars():
    data = synthetic_ratings(
        n_users=np.int64(30), n_items=np.int32(20), n_ratings=np.int64(200), noise=np.float32(0.5),
        seed=np.int64(3),
    )  # fmt: skip
    assert len(data.ratings) == 200 and data.n_users <= 30


def test_synthetic_as_many_ratings_as_fit_works():
    data = synthetic_ratings(n_users=20, n_items=11, n_ratings=100, seed=0)
    assert (data.ratings.groupby("user_id").size() == 5).all()


def test_synthetic_as_few_ratings_as_users_works():
    data = synthetic_ratings(n_users=20, n_items=10, n_ratings=20, seed=0)
    assert len(data.ratings) == 20
    assert (data.ratings.groupby("user_id").size() == 1).all()


# ----------------------------------------------------------------------------------------------------
# Ranking encoding.


def test_encode_ranking_against_a_hand_encoding(tmp_path):
    write_csv(tmp_path)
    data = encode_ranking(load_ratings(tmp_path), test_fraction=0.4, seed=7, positive_threshold=4.0)
    assert isinstance(data, RankingData)
    # The split is the documented seeded permutation.
    permutation = np.random.default_rng(7).permutation(5)
    test_rows, train_rows = sorted(permutation[:2]), sorted(permutation[2:])
    frame = _expected_frame()
    train_users = sorted(frame["user_id"].iloc[train_rows].unique())
    train_items = sorted(frame["item_id"].iloc[train_rows].unique())
    assert data.user_vocabulary.tolist() == train_users
    assert data.item_vocabulary.tolist() == train_items
    assert (data.n_users, data.n_items) == (len(train_users) + 1, len(train_items) + 1)
    assert data.genre_names == ["Action", "Comedy", "Drama", "(no genres listed)"]
    for split, rows in (("train", train_rows), ("test", test_rows)):
        arrays = getattr(data, split)
        for position, row in enumerate(rows):
            user, item, rating, _ = ROWS[row]
            expected_user = train_users.index(user) + 1 if user in train_users else 0
            expected_item = train_items.index(item) + 1 if item in train_items else 0
            assert arrays["user"][position] == expected_user
            assert arrays["item"][position] == expected_item
            assert arrays["rating"][position] == rating
            assert arrays["label"][position] == float(rating >= 4.0)
            hot = [data.genre_names[k] for k in np.flatnonzero(arrays["genres"][position])]
            assert hot == (sorted(GENRES[item]) or ["(no genres listed)"])
        assert arrays["user"].dtype == np.int32 and arrays["genres"].dtype == np.float32
    assert data.features("test").keys() == {"user", "item", "genres"}
    assert data.targets("train", ("binary", "regression")).keys() == {"binary", "regression"}


def test_encode_ranking_split_is_seeded_disjoint_and_complete():
    ratings = synthetic_ratings(n_users=200, n_items=100, n_ratings=3000, seed=1)
    a = encode_ranking(ratings, seed=5)
    b = encode_ranking(ratings, seed=5)
    c = encode_ranking(ratings, seed=6)
    np.testing.assert_array_equal(a.test["user"], b.test["user"])
    assert not np.array_equal(a.test["rating"], c.test["rating"])
    assert len(a.train["label"]) + len(a.test["label"]) == 3000
    assert len(a.test["label"]) == 600
    pairs = lambda s: set(zip(s["user"].tolist(), s["item"].tolist(), s["rating"].tolist()))  # noqa: E731
    assert len(pairs(a.train) & pairs(a.test)) <= len(a.test["label"]) // 20  # only via id 0


def test_encode_ranking_without_items_uses_the_no_genre_column():
    frame = _expected_frame()
    data = encode_ranking(Ratings(frame), test_fraction=0.0)
    assert data.genre_names == ["(no genres listed)"] and data.n_genres == 1
    np.testing.assert_array_equal(data.train["genres"], np.ones((5, 1), np.float32))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"test_fraction": 1.0}, r"`test_fraction` must be >= 0 and < 1"),
        ({"seed": -1}, r"`seed` must be an integer >= 0.*Received: seed=-1"),
        ({"test_fraction": -0.1}, r"Received: test_fraction=-0.1"),
        ({"positive_threshold": float("inf")}, r"`positive_threshold` must be a finite number"),
    ],
)
def test_encode_ranking_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        encode_ranking(Ratings(_expected_frame()), **kwargs)


def test_encode_ranking_needs_ratings():
    with pytest.raises(TypeError, match=r"`ratings` must be a tfsmooth.data.Ratings"):
        encode_ranking(_expected_frame())
    with pytest.raises(ValueError, match=r"`split` must be 'train' or 'test'"):
        encode_ranking(Ratings(_expected_frame())).features("validation")


# ---------------------------------------------------------------------------------------------
# Issue 11: values that used to be converted silently; byte order marks.

BOM = b"\xef\xbb\xbf"


def test_a_utf8_byte_order_mark_is_read_like_any_csv(tmp_path):
    write_csv(tmp_path)
    for name in ("ratings.csv", "movies.csv"):
        (tmp_path / name).write_bytes(BOM + (tmp_path / name).read_bytes())
    data = load_ratings(tmp_path)
    pd.testing.assert_frame_equal(data.ratings, _expected_frame())
    assert data.items.set_index("item_id")["genres"].to_dict() == GENRES


def test_a_byte_order_mark_before_a_dat_file_is_read(tmp_path):
    path = write_dat(tmp_path)
    path.write_bytes(BOM + path.read_bytes())
    pd.testing.assert_frame_equal(load_ratings(path).ratings, _expected_frame())


@pytest.mark.parametrize(
    "value, reason",
    [
        ("1e30", "does not fit a 64-bit integer"),
        ("9.3e18", "does not fit a 64-bit integer"),
        ("964982703.5", "is not a whole number of seconds"),
    ],
)
def test_timestamps_are_never_wrapped_or_truncated(tmp_path, value, reason):
    path = write_csv(tmp_path)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + f",{value}"
    path.write_text("\n".join(lines) + "\n")
    message = rf"{path.name} is malformed: timestamp '{value}' on data row 3 {reason}"
    with pytest.raises(ValueError, match=message):
        load_ratings(path)


def test_whole_timestamps_keep_every_digit(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,10,4.0,9007199254740993\n1,20,3,1e3\n")
    assert load_ratings(path).ratings["timestamp"].tolist() == [9007199254740993, 1000]


def test_nan_ratings_in_a_file_name_the_file_column_and_row(tmp_path):
    path = write_csv(tmp_path)
    path.write_text(path.read_text().replace(",3.5,", ",nan,"))
    with pytest.raises(ValueError, match=rf"{path.name} is malformed: rating 'nan' on data row 2"):
        load_ratings(path)


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("rating", np.nan, r"column 'rating' must hold a finite number. Received: nan on row 1"),
        ("rating", np.inf, r"column 'rating' must hold a finite number. Received: inf on row 1"),
        ("timestamp", 1e30, r"column 'timestamp' must hold a whole number.*1e\+30 on row 1"),
        ("timestamp", 2.5, r"column 'timestamp' must hold a whole number.*2.5 on row 1"),
    ],
)
def test_ratings_frames_reject_values_that_would_become_wrong_labels(column, value, message):
    frame = _expected_frame()
    frame[column] = frame[column].astype(np.float64)
    frame.loc[1, column] = value
    with pytest.raises(ValueError, match=r"`ratings` \('mine'\): " + message):
        Ratings(frame, name="mine")


def test_encode_ranking_seed_follows_the_contract():
    data = Ratings(_expected_frame())
    with pytest.raises(TypeError, match=r"`seed` must be an integer"):
        encode_ranking(data, seed=1.0)
    encoded = encode_ranking(data, seed=np.int64(1), test_fraction=np.float32(0.2))
    assert len(encoded.test["label"]) == 1


def test_ratings_must_be_data_frames():
    with pytest.raises(TypeError, match=r"`ratings` must be a pandas DataFrame. Received: .*str"):
        Ratings("ratings.csv")
    with pytest.raises(TypeError, match=r"`items` must be a pandas DataFrame"):
        Ratings(_expected_frame(), items=[1, 2])
