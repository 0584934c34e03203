"""The training runs of ``stability.py``: the grid of optimizers, rates and seeds, and the ablation.

One run trains the benchmark's multitask ranking model with one optimizer at one rate and seed,
watched by a :class:`~tfsmooth.callbacks.StabilityMonitor` that only observes, and records its
losses, spikes and test metrics; :func:`classify` says whether it diverged or failed (the rules are
in ``stability.py``'s docstring).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from baselines import AdaptiveClippingAdagrad

from tfsmooth import data as tfsmooth_data
from tfsmooth import models
from tfsmooth._keras import keras
from tfsmooth.callbacks import StabilityMonitor
from tfsmooth.optimizers import Clippy, ClippyAdagrad

TASKS = ("binary", "regression")
DIVERGED_AUC = 0.55  # chance is 0.5: a binary head below this learned nothing
EXPLOSION_FACTOR = 10.0  # a batch loss above this many times the first batch's (at initialisation)

#: name -> (label, family, flavour). The family picks the base learning rate.
OPTIMIZERS = {
    "adagrad": ("Adagrad", "adagrad", "keras3"),
    "adagrad_gc": ("Adagrad + global-norm clipping", "adagrad", "keras3"),
    "adagrad_agc": ("Adagrad + AGC", "adagrad", "keras3"),
    "tfrs_clippy": ("TFRS ClippyAdagrad (tf-keras)", "adagrad", "tf_keras"),
    "clippy_adagrad": ("tfsmooth ClippyAdagrad", "adagrad", "keras3"),
    "clippy_adagrad_row": ("tfsmooth ClippyAdagrad, per row", "adagrad", "keras3"),
    "clippy_adagrad_row_wide": (
        "tfsmooth ClippyAdagrad, per row, relative threshold 5",
        "adagrad",
        "keras3",
    ),
    "clippy_adam": ("tfsmooth Clippy(Adam)", "adam", "keras3"),
}
BASELINES = ("adagrad", "adagrad_gc", "adagrad_agc", "tfrs_clippy")

#: (variable_relative_threshold, absolute_threshold) tried; the first is TFRS's default.
THRESHOLDS = ((0.1, 1e-7), (0.1, 1e-3), (0.1, 1e-2), (0.5, 1e-3), (0.5, 1e-2))
ABLATION_MULTIPLIERS = (1.0, 16.0)


def make_optimizer(name: str, learning_rate: float, settings: dict):
    if name == "adagrad":
        return keras.optimizers.Adagrad(learning_rate)
    if name == "adagrad_gc":
        return keras.optimizers.Adagrad(learning_rate, global_clipnorm=settings["clipnorm"])
    if name == "adagrad_agc":
        return AdaptiveClippingAdagrad(learning_rate, clipping=settings["agc"])
    if name == "tfrs_clippy":
        import tensorflow_recommenders as tfrs

        return tfrs.experimental.optimizers.ClippyAdagrad(learning_rate)
    if name == "clippy_adagrad":
        return ClippyAdagrad(learning_rate, **settings.get("clippy", {}))
    if name == "clippy_adagrad_row":
        return ClippyAdagrad(learning_rate, granularity="row")
    if name == "clippy_adagrad_row_wide":
        return ClippyAdagrad(learning_rate, granularity="row", variable_relative_threshold=5.0)
    if name == "clippy_adam":
        return Clippy(keras.optimizers.Adam(learning_rate))
    raise ValueError(f"`optimizer` unknown. Received: optimizer={name!r}")


def load_data(path: str, quick: bool):
    ratings = tfsmooth_data.load_ratings(path)
    data = tfsmooth_data.encode_ranking(ratings, test_fraction=0.2, seed=0)
    if quick:  # a quarter of the training set
        keep = len(data.train["label"]) // 4
        data.train = {k: v[:keep] for k, v in data.train.items()}
    return data


def build_model(data, seed: int):
    """The benchmark's multitask ranking model: DCN cross layer and LayerNorm, both heads."""
    return models.build_ranking_model(
        data.n_users,
        data.n_items,
        data.n_genres,
        cross=True,
        layer_norm=True,
        tasks=TASKS,
        seed=seed,
    )


def train_one(data, run: dict, epochs: int, batch_size: int) -> dict:
    """One training run; returns its losses, divergence, spikes and test metrics."""
    seed = run["seed"]
    keras.utils.set_random_seed(seed)
    model = build_model(data, seed)
    optimizer = make_optimizer(run["optimizer"], run["learning_rate"], run.get("settings", {}))
    thresholds = None
    if isinstance(optimizer, ClippyAdagrad):
        thresholds = [optimizer.variable_relative_threshold, optimizer.absolute_threshold]
    model.compile(
        optimizer=optimizer,
        loss=models.ranking_losses(TASKS),
        metrics=models.ranking_metrics(TASKS),
    )
    monitor = StabilityMonitor(
        stop_on_divergence=False, restore_on_divergence=False, log_every=50, verbose=0
    )
    began = time.perf_counter()
    history = model.fit(
        data.features("train"),
        data.targets("train", TASKS),
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        verbose=0,
        callbacks=[monitor],
    )
    seconds = time.perf_counter() - began
    results = model.evaluate(
        data.features("test"),
        data.targets("test", TASKS),
        batch_size=4096,
        verbose=0,
        return_dict=True,
    )
    losses = [float(r["loss"]) for r in monitor.history]
    auc = float(results.get("binary_auc", math.nan))
    rmse = float(results.get("regression_rmse", math.nan))
    nonfinite = not all(math.isfinite(x) for x in losses) or not math.isfinite(rmse)
    first = losses[0] if losses else math.nan  # the loss at initialisation
    finite = [x for x in losses if math.isfinite(x)]
    exploded = bool(finite) and max(finite) > EXPLOSION_FACTOR * first
    return classify(
        {
            "constant_rmse": constant_rmse(data),
            **{k: v for k, v in run.items() if k != "settings"},
            "auc": auc,
            "rmse": rmse,
            "nonfinite": nonfinite,
            "exploded": exploded,
            "thresholds": thresholds,
            "spikes": int(sum(1 for r in monitor.history if r["spike"])),
            "max_loss": float(max(losses)) if losses else math.nan,
            "epoch_loss": [float(x) for x in history.history["loss"]],
            "curve": [float(np.mean(losses[i : i + 25])) for i in range(0, len(losses), 25)],
            "seconds": seconds,
        },
        constant_rmse(data),
    )


def constant_rmse(data) -> float:
    """Test RMSE of predicting the training mean rating: a regression head no better is lost."""
    train = np.asarray(data.targets("train", TASKS)["regression"], np.float64)
    test = np.asarray(data.targets("test", TASKS)["regression"], np.float64)
    return float(np.sqrt(np.mean((test - train.mean()) ** 2)))


def classify(run: dict, constant: float) -> dict:
    """Adds ``diverged`` and ``failed`` (see ``stability.py``'s docstring) from a run's record;
    ``constant``: :func:`constant_rmse`."""
    lost_task = not run["auc"] >= DIVERGED_AUC or not run["rmse"] < constant
    diverged = bool(run["nonfinite"] or (lost_task and run["exploded"]))
    return {**run, "diverged": diverged, "failed": bool(lost_task and not diverged)}


def train_many(args, runs: list[dict]) -> list[dict]:
    data = load_data(args.data, args.quick)
    out = []
    for index, run in enumerate(runs):
        result = train_one(data, run, args.epochs, args.batch_size)
        out.append(result)
        print(
            f"[{index + 1}/{len(runs)}] {run['optimizer']} x{run['multiplier']:g} seed {run['seed']}: "
            f"AUC {result['auc']:.4f} RMSE {result['rmse']:.4f} spikes {result['spikes']}"
            f"{' DIVERGED' if result['diverged'] else ''}{' FAILED' if result['failed'] else ''}"
            f" ({result['seconds']:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    return out


def planned_runs(args) -> list[dict]:
    runs = []
    settings = {"clipnorm": args.clipnorm, "agc": args.agc}
    for seed in range(args.seeds):
        for multiplier in args.multipliers:
            for name, (_, family, _) in OPTIMIZERS.items():
                if args.optimizers and name not in args.optimizers:
                    continue
                base = args.adam_lr if family == "adam" else args.adagrad_lr
                runs.append(
                    {
                        "optimizer": name,
                        "multiplier": multiplier,
                        "learning_rate": base * multiplier,
                        "seed": seed,
                        "settings": settings,
                    }
                )
    return runs


def default_thresholds() -> tuple[float, float]:
    """ClippyAdagrad's current defaults: the main grid's ClippyAdagrad runs use them."""
    optimizer = ClippyAdagrad()
    return optimizer.variable_relative_threshold, optimizer.absolute_threshold


def ablation_runs(args) -> list[dict]:
    """ClippyAdagrad's thresholds at 1x and 16x, every seed: why the defaults are the defaults.

    The defaults themselves are not run again: the main grid's runs stand for them."""
    runs = []
    for seed in range(args.seeds):
        for multiplier in ABLATION_MULTIPLIERS:
            for relative, absolute in THRESHOLDS:
                if (relative, absolute) == default_thresholds():
                    continue
                runs.append(
                    {
                        "optimizer": "clippy_adagrad",
                        "multiplier": multiplier,
                        "learning_rate": args.adagrad_lr * multiplier,
                        "seed": seed,
                        "settings": {
                            "clippy": {
                                "variable_relative_threshold": relative,
                                "absolute_threshold": absolute,
                            }
                        },
                    }
                )
    return runs
