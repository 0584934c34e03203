"""The ``tfsmooth`` command: ``python -m tfsmooth demo`` (also installed as ``tfsmooth demo``).

The demo trains replicas of a small ranking model with several activations on the same data and
shows how much the replicas disagree (prediction difference) next to their accuracy -- the
experiment of the smooth-activation papers -- then saves the table and the accuracy-vs-PD plot.
TensorFlow is imported only after the arguments are parsed, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import sys
import time
from collections.abc import Sequence

DEFAULT_ACTIVATIONS = "relu,smelu:2,gelu,swish"
DEFAULT_OUTPUT = "tfsmooth-demo"

DESCRIPTION = """\
Measure reproducibility: train replicas of a ranking model with each activation on the same data,
differing only in random initialisation and data order, and report how much their predictions on
held-out ratings disagree (prediction difference, PD) next to their accuracy (AUC of "rating >= 4").

Without --data or --dataset the data is generated in code (users and items with latent tastes,
popular and niche items, genres, noisy ratings): nothing is downloaded. The defaults finish in about
a minute on 2 CPU cores."""

EPILOG = """\
examples:
  python -m tfsmooth demo
  python -m tfsmooth demo --data ~/data/ml-latest-small --replicas 5
  python -m tfsmooth demo --activations relu,smelu:0.5,smelu:2,gelu --vary init --cross
  python -m tfsmooth demo --dataset tfds:movielens/100k-ratings

outputs (in --output-dir): reproducibility.png (AUC against PD), reproducibility_summary.csv
(one row per activation), reproducibility_replicas.csv (one row per replica)."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; every option's help states its own default."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


#: The fewest built-in ratings the demo accepts: below it the test split (a fifth) is too small to
#: score replicas on.
MIN_SYNTHETIC_RATINGS = 100

#: The test split of the demo (as in the TFRS ranking tutorial).
TEST_FRACTION = 0.2


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_replicas = _int_at_least(2, "an integer >= 2")
_synthetic_count = _int_at_least(
    MIN_SYNTHETIC_RATINGS, f"an integer >= {MIN_SYNTHETIC_RATINGS} (the demo's minimum)"
)
_seed = _int_at_least(0, "an integer >= 0")


def _number(text: str, *, positive: bool = False) -> float:
    """A finite number representable in float32 (``> 0`` when ``positive``), for argparse."""
    from tfsmooth._validation import FLOAT32_MAX, FLOAT32_TINY

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or abs(value) == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if positive and not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    if abs(value) > FLOAT32_MAX or 0 < abs(value) < FLOAT32_TINY:
        raise argparse.ArgumentTypeError(
            f"expected a number representable in float32 (a magnitude between "
            f"{FLOAT32_TINY:.3g} and {FLOAT32_MAX:.3g}), got {text!r}"
        )
    return value


def _finite(text: str) -> float:
    return _number(text)


def _positive_finite(text: str) -> float:
    return _number(text, positive=True)


def _units(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths like 64,32, got {text!r}"
        ) from None
    if not units or any(u < 1 for u in units):
        raise argparse.ArgumentTypeError(f"expected positive layer widths, got {text!r}")
    return units


def parse_activation(spec: str) -> tuple[str, str, float | None]:
    """``"smelu:2"`` -> ``("smelu(beta=2)", "smelu", 2.0)``; ``"gelu"`` -> ``("gelu", "gelu", None)``."""
    name, _, parameter = spec.strip().partition(":")
    name = name.strip().lower()
    # The one list of names, tfsmooth.models.ACTIVATIONS (imported here: it imports TensorFlow,
    # which --help does not need).
    from tfsmooth.models import ACTIVATIONS

    if name not in ACTIVATIONS:
        raise argparse.ArgumentTypeError(
            f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)} "
            "(smelu:BETA and generalized_smelu:NEGATIVE_SLOPE take a parameter)"
        )
    if not parameter:
        return name, name, None
    if name not in ("smelu", "generalized_smelu"):
        raise argparse.ArgumentTypeError(f"{name} takes no parameter, got {spec!r}")
    try:
        value = float(parameter)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number after ':' in {spec!r}") from None
    if name == "smelu" and not value > 0:
        raise argparse.ArgumentTypeError(f"smelu's beta must be > 0, got {spec!r}")
    try:
        _number(parameter)
    except argparse.ArgumentTypeError as error:
        what = "smelu's beta" if name == "smelu" else "generalized_smelu's negative slope"
        raise argparse.ArgumentTypeError(f"{what}: {error} in {spec!r}") from None
    label = f"smelu(beta={value:g})" if name == "smelu" else f"gsmelu(slope={value:g})"
    return label, name, value


def _activations(text: str) -> list[tuple[str, str, float | None]]:
    specs = [parse_activation(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise argparse.ArgumentTypeError("give at least one activation")
    labels = [label for label, _, _ in specs]
    if len(set(labels)) != len(labels):
        raise argparse.ArgumentTypeError(f"activations repeat: {text!r}")
    return specs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tfsmooth",
        description="tfsmooth: reproducible, scalable and stable recommender training.",
    )
    from tfsmooth import __version__

    parser.add_argument("--version", action="version", version=f"tfsmooth {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    demo = commands.add_parser(
        "demo",
        help="replicas of a ranking model per activation: prediction difference and AUC",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    data = demo.add_argument_group("data (default: built-in synthetic ratings, no download)")
    source = data.add_mutually_exclusive_group()
    source.add_argument(
        "--data",
        metavar="PATH",
        help="a MovieLens ratings file or its directory: ratings.csv (ml-latest, ml-25m), "
        "ratings.dat (ml-1m) or u.data (ml-100k), detected by content; genres are read from the "
        "movie file beside it",
    )
    source.add_argument(
        "--dataset",
        metavar="NAME",
        help="tfds:movielens/100k-ratings (or another MovieLens ratings dataset of TensorFlow "
        "Datasets); needs tensorflow-datasets and an internet connection the first time",
    )
    data.add_argument(
        "--synthetic-ratings",
        type=_synthetic_count,
        default=None,
        metavar="N",
        help=f"number of built-in ratings, >= {MIN_SYNTHETIC_RATINGS}, with about N/25 users and "
        "N/50 items (at least 20 users and enough items for N ratings) (default: 40000, i.e. "
        "1,600 users and 800 items)",
    )
    data.add_argument(
        "--max-ratings",
        type=_positive_int,
        metavar="N",
        help="use a random sample of N ratings of --data/--dataset (a quicker look at big files; "
        "default: all)",
    )
    data.add_argument(
        "--positive-threshold",
        type=_finite,
        default=4.0,
        metavar="R",
        help="a rating at or above R counts as liked, the binary label (default: 4)",
    )
    experiment = demo.add_argument_group("experiment")
    experiment.add_argument(
        "--activations",
        type=_activations,
        default=DEFAULT_ACTIVATIONS,
        metavar="LIST",
        help="comma-separated activations of the hidden layers: relu, smelu, smelu:BETA, "
        "generalized_smelu, generalized_smelu:NEGATIVE_SLOPE, gelu, swish, softplus "
        f"(default: {DEFAULT_ACTIVATIONS})",
    )
    experiment.add_argument(
        "--replicas",
        type=_replicas,
        default=None,
        metavar="N",
        help="replicas per activation, >= 2 (default: 5)",
    )
    experiment.add_argument(
        "--vary",
        choices=("both", "init", "order", "none"),
        default="both",
        help="what differs between replicas: initialisation seed, data-order seed, both, or "
        "nothing (a check: replicas are then bit-identical) (default: both)",
    )
    experiment.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="training epochs (default: 3)",
    )
    experiment.add_argument(
        "--batch-size",
        type=_positive_int,
        default=512,
        metavar="N",
        help="training batch size (default: 512)",
    )
    experiment.add_argument(
        "--learning-rate",
        type=_positive_finite,
        default=2e-3,
        metavar="LR",
        help="Adam learning rate, a finite number > 0 (default: 0.002)",
    )
    experiment.add_argument(
        "--hidden-units",
        type=_units,
        default=(64, 32),
        metavar="W1,W2,...",
        help="MLP widths (default: 64,32)",
    )
    experiment.add_argument(
        "--embedding-dim",
        type=_positive_int,
        default=16,
        metavar="D",
        help="embedding width (default: 16)",
    )
    experiment.add_argument(
        "--cross", action="store_true", help="add a DCN cross layer before the MLP"
    )
    experiment.add_argument(
        "--seed",
        type=_seed,
        default=0,
        metavar="S",
        help="first seed, >= 0; replica i uses S + i (default: 0)",
    )
    experiment.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: defaults become 3 replicas, 2 epochs, 8,000 built-in ratings (or "
        "--max-ratings 8000); options given explicitly still win",
    )
    output = demo.add_argument_group("output")
    output.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT,
        metavar="DIR",
        help=f"where the plot and the CSV files go, created if needed (default: ./{DEFAULT_OUTPUT})",
    )
    output.add_argument(
        "--quiet", action="store_true", help="no per-replica progress lines on stderr"
    )
    return parser


def _load(args):
    """The encoded ranking data of the chosen source (ValueError/OSError on bad input)."""
    from tfsmooth import data as tfdata

    if args.data is not None:
        ratings = tfdata.load_ratings(pathlib.Path(args.data).expanduser())
    elif args.dataset is not None:
        name = args.dataset[len("tfds:") :] if args.dataset.startswith("tfds:") else args.dataset
        ratings = tfdata.load_tfds(name)
    else:
        size = args.synthetic_ratings or (8_000 if args.quick else 40_000)
        n_users, n_items = synthetic_shape(size)
        ratings = tfdata.synthetic_ratings(
            n_users=n_users, n_items=n_items, n_ratings=size, seed=args.seed
        )
    limit = args.max_ratings or (8_000 if args.quick and (args.data or args.dataset) else None)
    if limit and limit < len(ratings.ratings):
        sample = ratings.ratings.sample(n=limit, random_state=args.seed).sort_index()
        ratings = tfdata.Ratings(sample.reset_index(drop=True), ratings.items, ratings.name)
    data = tfdata.encode_ranking(
        ratings,
        test_fraction=TEST_FRACTION,
        seed=args.seed,
        positive_threshold=args.positive_threshold,
    )
    if len(data.test["label"]) < 2:
        source = "--data" if args.data is not None else "--dataset"
        raise ValueError(
            f"{source} {args.data or args.dataset}: {len(ratings.ratings)} ratings leave "
            f"{len(data.test['label'])} for the test split (a fifth); the demo needs at least "
            f"{math.ceil(1.5 / TEST_FRACTION)} ratings"
            + (" (raise --max-ratings)" if args.max_ratings else "")
        )
    return ratings, data


def synthetic_shape(n_ratings: int) -> tuple[int, int]:
    """Users and items for ``n_ratings`` built-in ratings: about N/25 users (at least 20) and N/50
    items, with enough items that each user's share of the ratings fits half of them (the most
    :func:`tfsmooth.data.synthetic_ratings` lets one user rate)."""
    n_users = max(20, n_ratings // 25)
    n_items = max(10, n_ratings // 50, 2 * math.ceil(n_ratings / n_users))
    return n_users, n_items


def _builder(data, args, name: str, parameter: float | None):
    from tfsmooth._keras import keras
    from tfsmooth.layers import GeneralizedSmeLU, SmeLU
    from tfsmooth.models import build_ranking_model, ranking_losses

    if name == "smelu" and parameter is not None:
        activation = lambda: SmeLU(beta=parameter)  # noqa: E731
    elif name == "generalized_smelu" and parameter is not None:
        activation = lambda: GeneralizedSmeLU(negative_slope=parameter)  # noqa: E731
    else:
        activation = name

    def build(seed: int):
        model = build_ranking_model(
            data.n_users,
            data.n_items,
            data.n_genres,
            activation=activation,
            hidden_units=args.hidden_units,
            embedding_dim=args.embedding_dim,
            cross=args.cross,
            seed=seed,
        )
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=ranking_losses())
        return model

    return build


def _comparison(report) -> list[str]:
    frame = report.to_dataframe().set_index("configuration")
    if "relu" not in frame.index or len(frame) < 2:
        return []
    base = frame.loc["relu"]
    lines = ["Against ReLU (PD ratio < 1: replicas agree more; AUC difference > 0: more accurate):"]
    for name, row in frame.iterrows():
        if name == "relu" or not row["pd_relative"] > 0 or not base["pd_relative"] > 0:
            continue
        ratio = row["pd_relative"] / base["pd_relative"]
        lines.append(f"  {name:<18} PD x{ratio:.2f}   AUC {row['auc'] - base['auc']:+.4f}")
    return lines


def run_demo(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    began = time.perf_counter()
    args.replicas = args.replicas or (3 if args.quick else 5)
    args.epochs = args.epochs or (2 if args.quick else 3)
    output_dir = pathlib.Path(args.output_dir).expanduser()
    try:
        ratings, data = _load(args)
    except (ValueError, TypeError, OSError, ImportError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"python -m tfsmooth demo: error: {message}", file=sys.stderr)
        return 2
    try:  # only once the data is good: a failed run leaves no empty directory behind
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(
            f"python -m tfsmooth demo: error: cannot create --output-dir: {error}", file=sys.stderr
        )
        return 2

    from tfsmooth.reproducibility import train_replicas

    replicas, epochs = args.replicas, args.epochs
    print(ratings.summary())
    print(data.summary())
    print(
        f"Model: embeddings {args.embedding_dim}, MLP {list(args.hidden_units)}"
        f"{', DCN cross layer' if args.cross else ''}; Adam {args.learning_rate:g}, "
        f"{epochs} epochs, batch {args.batch_size}. {replicas} replicas per activation, "
        f"varying {args.vary} (seeds {args.seed}..{args.seed + replicas - 1}).",
        flush=True,
    )
    configurations = {
        label: _builder(data, args, name, parameter) for label, name, parameter in args.activations
    }
    report = train_replicas(
        configurations,
        (data.features("train"), data.targets("train")),
        (data.features("test"), data.targets("test")),
        replicas=replicas,
        vary=args.vary,
        epochs=epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.quiet,
        data_name=ratings.name,
    )
    print()
    print(report.table())
    for line in _comparison(report):
        print(line)
    paths = report.save(output_dir)
    print()
    print(f"Saved to {output_dir.resolve()}:")
    for key in ("plot", "summary", "replicas"):
        print(f"  {paths[key].name}")
    print(f"Done in {time.perf_counter() - began:.0f} s.")
    return 1 if report.failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tfsmooth`` and the ``tfsmooth`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args)
    parser.print_help()  # pragma: no cover -- argparse requires a command
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
