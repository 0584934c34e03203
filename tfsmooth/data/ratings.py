"""Ratings files: the ``Ratings`` container and the MovieLens readers (format detected by content).

Three MovieLens layouts are read, whatever the files are called:

- ``ratings.csv`` (ml-latest, ml-latest-small, ml-20m, ml-25m, ml-32m): a header line
  ``userId,movieId,rating,timestamp``; genres from ``movies.csv`` beside it
  (``movieId,title,genres`` with genres joined by ``|``).
- ``ratings.dat`` (ml-1m, ml-10m): ``UserID::MovieID::Rating::Timestamp``; genres from ``movies.dat``
  beside it (``MovieID::Title::Genres``, latin-1).
- ``u.data`` (ml-100k): ``user id<TAB>item id<TAB>rating<TAB>timestamp``; genres from ``u.item``
  beside it (``|``-separated, 19 genre flags named by ``u.genre``), latin-1.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import re
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Ratings", "default_data_path", "load_ratings"]

#: Genre names of ml-100k, in the order of the 19 flags of ``u.item`` (used when ``u.genre`` is absent).
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

#: Items without any genre get an empty list; MovieLens writes this placeholder for them.
NO_GENRES = "(no genres listed)"

_RATINGS_NAMES = ("ratings.csv", "ratings.dat", "u.data")
_COLUMNS = ("user_id", "item_id", "rating", "timestamp")

#: The UTF-8 byte order mark some editors (and Excel) write at the start of a CSV file.
_BOM = b"\xef\xbb\xbf"


@dataclasses.dataclass
class Ratings:
    """Explicit ratings with optional item metadata.

    Attributes:
        ratings: one row per rating, columns ``user_id`` and ``item_id`` (the raw ids of the source,
            ``int64`` for MovieLens, any hashable otherwise), ``rating`` (``float32``) and
            ``timestamp`` (``int64``, seconds).
        items: one row per item, columns ``item_id`` and ``genres`` (a list of genre names, possibly
            empty), and ``title`` where the source has one; ``None`` when the source has no item file.
        name: a short label of the source (e.g. ``"ml-latest-small"``, ``"synthetic"``).

    :func:`load_ratings`, :func:`tfsmooth.data.load_tfds` and
    :func:`tfsmooth.data.synthetic_ratings` return one; wrap your own data by passing the frames.

    Raises:
        TypeError: if ``ratings`` (or ``items``, when given) is not a pandas DataFrame.
        ValueError: if ``ratings`` lacks one of the columns ``user_id``, ``item_id``, ``rating``,
            ``timestamp``, holds a rating that is not a finite number (NaN would silently become
            label 0) or a timestamp that is not a whole number of seconds fitting ``int64``
            (the message names the column, row and value), or ``items`` lacks ``item_id`` or
            ``genres``.

    Example:

    >>> import pandas as pd
    >>> from tfsmooth.data import Ratings, synthetic_ratings
    >>> data = synthetic_ratings(n_users=50, n_items=40, n_ratings=500)
    >>> list(data.ratings.columns)
    ['user_id', 'item_id', 'rating', 'timestamp']
    >>> frame = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 20, 10],
    ...                       "rating": [4.0, 3.0, 5.0], "timestamp": [100, 200, 300]})
    >>> Ratings(frame, name="mine").summary()
    'mine: 3 ratings, 2 users, 2 items, 67% rated >= 4'
    """

    ratings: pd.DataFrame
    items: pd.DataFrame | None = None
    name: str = "ratings"

    def __post_init__(self):
        for field in ("ratings", "items"):
            value = getattr(self, field)
            if not isinstance(value, pd.DataFrame) and not (field == "items" and value is None):
                raise TypeError(
                    f"`{field}` must be a pandas DataFrame. Received: {field} of type "
                    f"{type(value).__name__}"
                )
        missing = [c for c in _COLUMNS if c not in self.ratings.columns]
        if missing:
            raise ValueError(
                f"`ratings` needs the columns {list(_COLUMNS)}. Received columns: "
                f"{list(self.ratings.columns)} (missing {missing})"
            )
        _check_values(self.ratings, self.name)
        if self.items is not None and not {"item_id", "genres"} <= set(self.items.columns):
            raise ValueError(
                "`items` needs the columns ['item_id', 'genres']. Received columns: "
                f"{list(self.items.columns)}"
            )

    @property
    def n_ratings(self) -> int:
        """Number of ratings (rows of ``ratings``)."""
        return len(self.ratings)

    @property
    def n_users(self) -> int:
        """Number of distinct users that rated."""
        return int(self.ratings["user_id"].nunique())

    @property
    def n_items(self) -> int:
        """Number of distinct items rated."""
        return int(self.ratings["item_id"].nunique())

    def summary(self) -> str:
        """One line: name, counts, the share of ratings >= 4."""
        share = float((self.ratings["rating"] >= 4.0).mean()) if len(self.ratings) else 0.0
        return (
            f"{self.name}: {self.n_ratings:,} ratings, {self.n_users:,} users, "
            f"{self.n_items:,} items, {share:.0%} rated >= 4"
        )


def _check_values(frame: pd.DataFrame, name: str) -> None:
    """Ratings must be finite numbers and timestamps whole seconds that fit int64."""
    for column, whole in (("rating", False), ("timestamp", True)):
        values = frame[column]
        numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(numeric)
        if whole:
            bad |= (numeric != np.floor(numeric)) | (np.abs(numeric) >= 2.0**63)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = values.iloc[row]
            value = value.item() if isinstance(value, np.generic) else value
            what = "a whole number of seconds that fits int64" if whole else "a finite number"
            raise ValueError(
                f"`ratings` ({name!r}): column {column!r} must hold {what}. Received: "
                f"{value!r} on row {row} (index {values.index[row]!r})"
            )


def default_data_path() -> pathlib.Path | None:
    """The shared MovieLens directory benchmarks and examples default to, if it exists.

    Looks for ``../shared/data/ml-latest-small`` (a directory holding ``ratings.csv``) next to the
    repository that holds this package, then relative to the current directory. Takes no arguments;
    the benchmarks use it as the default of their ``--data PATH`` option.

    Returns:
        The directory as an absolute ``pathlib.Path``, or ``None`` when neither exists.

    Example:

    >>> from tfsmooth.data import default_data_path
    >>> path = default_data_path()
    >>> path is None or (path / "ratings.csv").is_file()
    True
    """
    repository = pathlib.Path(__file__).resolve().parents[2]
    candidates = [
        repository.parent / "shared" / "data" / "ml-latest-small",
        pathlib.Path.cwd().parent / "shared" / "data" / "ml-latest-small",
        pathlib.Path.cwd() / ".." / "shared" / "data" / "ml-latest-small",
    ]
    for candidate in candidates:
        if (candidate / "ratings.csv").is_file():
            return candidate.resolve()
    return None


# ----------------------------------------------------------------------------------------------------
# Format detection.


def _first_line(path: pathlib.Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if not head.strip():
        raise ValueError(f"The ratings file {path} is empty")
    if b"\x00" in head:
        raise ValueError(f"{path} is a binary file, not a ratings file (csv, ::, or tab separated)")
    text = head[len(_BOM) :].decode("latin-1") if head.startswith(_BOM) else head.decode("latin-1")
    return next(line for line in text.splitlines() if line.strip())


def _detect_format(path: pathlib.Path) -> str:
    """``"csv"``, ``"dat"`` or ``"udata"`` from the first line of the file."""
    line = _first_line(path).strip()
    lowered = line.lower().replace('"', "").replace(" ", "")
    if lowered.startswith("userid,movieid,rating") or lowered.startswith("user_id,item_id,rating"):
        return "csv"
    if "::" in line and len(line.split("::")) == 4:
        return "dat"
    if "\t" in line and len(line.split("\t")) == 4:
        return "udata"
    if "," in line and len(line.split(",")) == 4 and _looks_numeric(line.split(",")):
        return "csv_headerless"
    raise ValueError(
        f"{path} is not a ratings file tfsmooth reads: expected MovieLens ratings.csv "
        f"(header userId,movieId,rating,timestamp), ratings.dat (UserID::MovieID::Rating::Timestamp) "
        f"or u.data (tab separated); its first line is {line[:80]!r}"
    )


def _looks_numeric(fields: list[str]) -> bool:
    try:
        [float(f) for f in fields]
    except ValueError:
        return False
    return True


def _resolve_ratings_file(path: pathlib.Path) -> pathlib.Path:
    if not path.exists():
        raise FileNotFoundError(f"No such file or directory: {path}")
    if path.is_file():
        return path
    for name in _RATINGS_NAMES:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(
        f"{path} holds no ratings file (looked for {', '.join(_RATINGS_NAMES)})"
    )


# ----------------------------------------------------------------------------------------------------
# Ratings readers.


def _read_table(path: pathlib.Path, text: Any, *, sep: str, header: Any) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            text,
            sep=sep,
            encoding="utf-8-sig" if isinstance(text, pathlib.Path) else None,
            header=header,
            names=None if header == 0 else list(_COLUMNS),
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            engine="c",
            skip_blank_lines=True,
            on_bad_lines="error",
        )
    except pd.errors.ParserError as error:
        detail = str(error).strip().splitlines()[-1].split("C error: ")[-1]
        raise ValueError(f"{path} is malformed: {detail}") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"The ratings file {path} has no ratings") from None
    return frame


def _to_ids(column: pd.Series, path: pathlib.Path, what: str) -> pd.Series:
    if column.isna().any():
        row = int(np.flatnonzero(column.isna().to_numpy())[0])
        raise ValueError(f"{path} is malformed: a missing {what} on data row {row + 1}")
    numeric = pd.to_numeric(column, errors="coerce")
    if numeric.notna().all() and (numeric == np.floor(numeric)).all():
        return numeric.astype(np.int64)
    return column.astype(str)


def _to_numbers(column: pd.Series, path: pathlib.Path, what: str, dtype) -> pd.Series:
    numeric = pd.to_numeric(column, errors="coerce")
    bad = numeric.isna() | ~np.isfinite(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"{path} is malformed: {what} {column.iloc[row]!r} on data row {row + 1} is not a number"
        )
    return numeric.astype(dtype)


def _to_timestamps(column: pd.Series, path: pathlib.Path) -> pd.Series:
    """Whole seconds as ``int64``: a fractional or out-of-range timestamp is an error, not rounded."""
    numeric = _to_numbers(column, path, "timestamp", np.float64)
    values = numeric.to_numpy()
    # Floats at or beyond 2**63 do not fit int64 (casting them gives -9.2e18, silently).
    bad = (values != np.floor(values)) | (np.abs(values) >= 2.0**63)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        reason = (
            "does not fit a 64-bit integer of seconds"
            if abs(values[row]) >= 2.0**63
            else "is not a whole number of seconds"
        )
        raise ValueError(
            f"{path} is malformed: timestamp {column.iloc[row]!r} on data row {row + 1} {reason}"
        )
    # Integer literals are parsed as integers (exact beyond 2**53, where float64 is not).
    result = numeric.astype(np.int64)
    text = column.astype(str).str.strip()
    literal = text.str.fullmatch(r"[+-]?\d+").to_numpy(dtype=bool)
    if literal.any():
        result[literal] = text[literal].astype(np.int64).to_numpy()
    return result


def _normalise(frame: pd.DataFrame, path: pathlib.Path) -> pd.DataFrame:
    frame = frame.rename(columns=lambda c: str(c).strip().lower().replace("_", ""))
    rename = {"userid": "user_id", "movieid": "item_id", "itemid": "item_id"}
    frame = frame.rename(columns=rename)
    missing = [c for c in _COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} is malformed: no column {missing[0]!r} in its header")
    if frame[list(_COLUMNS)].isna().any(axis=None):
        row = int(np.flatnonzero(frame[list(_COLUMNS)].isna().any(axis=1).to_numpy())[0])
        raise ValueError(f"{path} is malformed: data row {row + 1} has missing fields")
    if not len(frame):
        raise ValueError(f"The ratings file {path} has no ratings")
    return pd.DataFrame(
        {
            "user_id": _to_ids(frame["user_id"], path, "user id"),
            "item_id": _to_ids(frame["item_id"], path, "item id"),
            "rating": _to_numbers(frame["rating"], path, "rating", np.float32),
            "timestamp": _to_timestamps(frame["timestamp"], path),
        }
    )


def _read_ratings(path: pathlib.Path, kind: str) -> pd.DataFrame:
    if kind == "csv":
        frame = _read_table(path, path, sep=",", header=0)
    elif kind == "csv_headerless":
        frame = _read_table(path, path, sep=",", header=None)
    elif kind == "udata":
        frame = _read_table(path, path, sep="\t", header=None)
    else:  # "::" is not a single character; pandas' fast parser needs one.
        raw = path.read_bytes()
        raw = raw[len(_BOM) :] if raw.startswith(_BOM) else raw
        text = raw.decode("latin-1").replace("::", "\t")
        frame = _read_table(path, io.StringIO(text), sep="\t", header=None)
    return _normalise(frame, path)


# ----------------------------------------------------------------------------------------------------
# Item (genre) readers.


def _split_genres(value: Any) -> list[str]:
    if not isinstance(value, str):
        return []
    genres = [g.strip() for g in value.split("|") if g.strip()]
    return [g for g in genres if g != NO_GENRES]


def _read_movies_csv(path: pathlib.Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    columns = {c.lower(): c for c in frame.columns}
    if "movieid" not in columns or "genres" not in columns:
        raise ValueError(f"{path} is malformed: expected the header movieId,title,genres")
    return pd.DataFrame(
        {
            "item_id": _to_ids(frame[columns["movieid"]], path, "movie id"),
            "title": frame[columns["title"]] if "title" in columns else "",
            "genres": [_split_genres(g) for g in frame[columns["genres"]]],
        }
    )


def _read_movies_dat(path: pathlib.Path) -> pd.DataFrame:
    rows = [
        line.split("::") for line in path.read_text(encoding="latin-1").splitlines() if line.strip()
    ]
    if not rows or any(len(r) != 3 for r in rows):
        raise ValueError(f"{path} is malformed: expected MovieID::Title::Genres on every line")
    ids = pd.Series([r[0] for r in rows])
    return pd.DataFrame(
        {
            "item_id": _to_ids(ids, path, "movie id"),
            "title": [r[1] for r in rows],
            "genres": [_split_genres(r[2]) for r in rows],
        }
    )


def _read_u_item(path: pathlib.Path) -> pd.DataFrame:
    genre_file = path.with_name("u.genre")
    names = list(ML100K_GENRES)
    if genre_file.is_file():
        pairs = [
            line.rsplit("|", 1)
            for line in genre_file.read_text(encoding="latin-1").splitlines()
            if "|" in line
        ]
        names = [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))] or names
    rows = [
        line.split("|") for line in path.read_text(encoding="latin-1").splitlines() if line.strip()
    ]
    if not rows or any(len(r) != 5 + len(names) for r in rows):
        raise ValueError(
            f"{path} is malformed: expected id|title|date|video date|url and {len(names)} genre flags"
        )
    ids = pd.Series([r[0] for r in rows])
    genres = [[n for n, flag in zip(names, r[5:]) if flag.strip() == "1"] for r in rows]
    return pd.DataFrame(
        {"item_id": _to_ids(ids, path, "item id"), "title": [r[1] for r in rows], "genres": genres}
    )


_ITEM_FILES = {
    "csv": ("movies.csv", _read_movies_csv),
    "csv_headerless": ("movies.csv", _read_movies_csv),
    "dat": ("movies.dat", _read_movies_dat),
    "udata": ("u.item", _read_u_item),
}


def _dataset_name(path: pathlib.Path) -> str:
    name = path.parent.name
    return name if re.match(r"^[\w.\-]+$", name or "") else path.stem


def load_ratings(path: str | os.PathLike) -> Ratings:
    """Reads MovieLens ratings (and genres, when the movie file is beside them).

    The format is detected from the file's content, not its name: a ``userId,movieId,rating,...``
    header means ``ratings.csv``; ``::`` separators ``ratings.dat`` (ml-1m, ml-10m); four tab-separated
    fields ``u.data`` (ml-100k). ``path`` may be the ratings file or the directory holding it. Genres
    come from ``movies.csv`` / ``movies.dat`` / ``u.item`` in the same directory when present.

    A string ``"tfds:<name>"`` (e.g. ``"tfds:movielens/100k-ratings"``) reads TensorFlow Datasets
    instead, see :func:`tfsmooth.data.load_tfds`.

    Args:
        path: a ratings file or a directory holding one.

    Returns:
        A :class:`Ratings`.

    Raises:
        FileNotFoundError: if the path or the ratings file in a directory does not exist.
        TypeError: if ``path`` is neither a string nor a path.
        ValueError: if the file is empty, of an unknown format, or malformed (the message names the
            file and the first bad row).

    Example:

    >>> import pathlib, tempfile
    >>> from tfsmooth.data import load_ratings
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "ml-tiny"
    >>> folder.mkdir()
    >>> _ = (folder / "ratings.csv").write_text(
    ...     "userId,movieId,rating,timestamp\\n1,10,4.0,100\\n1,20,2.5,200\\n2,10,5.0,300\\n")
    >>> _ = (folder / "movies.csv").write_text(
    ...     "movieId,title,genres\\n10,Heat (1995),Action|Crime\\n20,Babe (1995),Children\\n")
    >>> data = load_ratings(folder)
    >>> data.summary()
    'ml-tiny: 3 ratings, 2 users, 2 items, 67% rated >= 4'
    >>> data.items["genres"].tolist()
    [['Action', 'Crime'], ['Children']]
    """
    if isinstance(path, str) and path.startswith("tfds:"):
        from tfsmooth.data.tfds import load_tfds

        return load_tfds(path[len("tfds:") :])
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file or directory path. Received: path={path!r}")
    ratings_file = _resolve_ratings_file(pathlib.Path(path).expanduser())
    kind = _detect_format(ratings_file)
    ratings = _read_ratings(ratings_file, kind)
    item_name, reader = _ITEM_FILES[kind]
    item_file = ratings_file.with_name(item_name)
    items = reader(item_file) if item_file.is_file() else None
    return Ratings(ratings=ratings, items=items, name=_dataset_name(ratings_file))
