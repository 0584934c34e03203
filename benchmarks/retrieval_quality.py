"""Part 2 of ``retrieval.py``: SASRec trained with each catalog loss, ranked against the catalog.

Each (loss, seed) trains in a fresh process (:func:`quality_worker`), started by
:func:`run_quality_part` through ``retrieval.py``'s hidden worker flags; the popularity ranking
(:func:`popularity_baseline`) sets the scale.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time

import numpy as np
from _common import run_script_in_fresh_process

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "retrieval.py")

QUALITY_LOSSES = {
    "catalog": "full CE",
    "scalable": "SCE",
    "sampled": "sampled softmax",
    "bce": "BCE, 1 negative",
}


def quality_worker(loss: str, seed: int, config: dict) -> dict:
    from tfsmooth import data as tfsmooth_data
    from tfsmooth._keras import keras
    from tfsmooth.losses import SampledSoftmaxCrossEntropy, ScalableCrossEntropy
    from tfsmooth.models import SASRec

    splits = tfsmooth_data.build_sequences(
        tfsmooth_data.load_ratings(config["data"]), max_length=config["max_length"]
    )
    keras.utils.set_random_seed(seed)
    if loss == "scalable":
        loss_object = ScalableCrossEntropy(bucket_size_y=config["sce_bucket_size_y"])
    elif loss == "sampled":
        loss_object = SampledSoftmaxCrossEntropy(
            num_sampled=config["num_sampled"], sampling="uniform"
        )
    else:
        loss_object = loss
    model = SASRec(
        splits.num_items,
        max_length=config["max_length"],
        embedding_dim=config["embedding_dim"],
        num_blocks=2,
        num_heads=1,
        dropout_rate=config["dropout"],
        loss=loss_object,
    )
    model.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]))
    curve = []
    began = time.perf_counter()
    done = 0
    for epochs in config["eval_epochs"]:
        model.fit(
            splits.train_inputs,
            splits.train_labels,
            batch_size=config["batch_size"],
            epochs=epochs,
            initial_epoch=done,
            shuffle=True,
            verbose=0,
        )
        done = epochs
        valid = model.evaluate_ranking(splits.valid_inputs, splits.valid_labels, k=10)
        curve.append({"epoch": epochs, "valid_ndcg": valid["ndcg"], "valid_hr": valid["hit_rate"]})
    seconds = time.perf_counter() - began
    test = model.evaluate_ranking(splits.test_inputs, splits.test_labels, k=10)
    return {
        "loss": loss,
        "seed": seed,
        "test_ndcg": test["ndcg"],
        "test_hr": test["hit_rate"],
        "valid_ndcg": curve[-1]["valid_ndcg"],
        "valid_hr": curve[-1]["valid_hr"],
        "curve": curve,
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "summary": splits.summary(),
    }


def popularity_baseline(config: dict) -> dict:
    """HR@10 / NDCG@10 of ranking by training popularity (history excluded, ties against the target)."""
    from tfsmooth import data as tfsmooth_data

    splits = tfsmooth_data.build_sequences(
        tfsmooth_data.load_ratings(config["data"]), max_length=config["max_length"]
    )
    counts = splits.train_item_counts.astype(float)
    hits, gains = [], []
    for history, target in zip(splits.test_inputs, splits.test_labels):
        scores = counts.copy()
        scores[0] = -np.inf
        scores[history[history > 0]] = -np.inf
        scores[target] = counts[target]  # the target is never excluded
        others = np.delete(scores, target)
        rank = int(np.sum(others >= counts[target]))
        hits.append(rank < 10)
        gains.append(1 / math.log2(rank + 2) if rank < 10 else 0.0)
    return {"ndcg": float(np.mean(gains)), "hr": float(np.mean(hits))}


def run_quality_part(config: dict) -> dict:
    started = time.perf_counter()
    runs = []
    for seed in config["seeds"]:  # seed-major: a slow phase of the machine hits every loss
        for loss in QUALITY_LOSSES:
            result = run_script_in_fresh_process(
                SCRIPT,
                ["--quality-worker", loss, "--seed", str(seed), "--settings", json.dumps(config)],
            )
            runs.append(result)
            curve = " ".join(f"{p['epoch']}:{p['valid_ndcg']:.4f}" for p in result["curve"])
            print(
                f"  {loss:9s} seed {seed}: test NDCG@10 {result['test_ndcg']:.4f} "
                f"HR@10 {result['test_hr']:.4f} ({result['seconds']:.0f} s; valid NDCG {curve})",
                flush=True,
            )
    return {
        "runs": runs,
        "popularity": popularity_baseline(config),
        "minutes": (time.perf_counter() - started) / 60,
    }
