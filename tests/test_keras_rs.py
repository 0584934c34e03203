"""tfsmooth inside keras-rs (Keras 3 recommenders), with no glue code.

- The README's keras-rs example runs as written: a retrieval model trained with
  ``ScalableCrossEntropy`` and ``ClippyAdagrad``, served with ``keras_rs.layers.BruteForceRetrieval``.
- tfsmooth's full-catalog HR@k / NDCG@k equal keras-rs's ``RecallAtK`` / ``NDCG`` on the same scores.

keras-rs is Keras 3 only: the module is skipped in the tf-keras pass and where keras-rs is absent.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest
from helpers import assert_exact_top_k
from references import brute_force_scores

from tfsmooth._keras import IS_KERAS_3

if not IS_KERAS_3:
    pytest.skip("keras-rs is Keras 3 only: runs in the Keras 3 pass", allow_module_level=True)
keras_rs = pytest.importorskip("keras_rs")

import tensorflow as tf  # noqa: E402

from tfsmooth.metrics.ranking import catalog_ranking_metrics  # noqa: E402

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("<!-- section: keras-rs -->", 1)[1]
    section = section.split("<!-- end: keras-rs -->", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


@pytest.mark.slow
def test_readme_example_trains_with_sce_and_clippy_and_serves_with_brute_force_retrieval():
    tf.keras.utils.set_random_seed(0)
    namespace: dict = {"__name__": "readme_keras_rs"}
    exec(compile(readme_example(), str(README), "exec"), namespace)
    model, users, items = namespace["model"], namespace["users"], namespace["items"]

    losses = namespace["history"].history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
    from tfsmooth.optimizers import ClippyAdagrad

    assert isinstance(model.optimizer, ClippyAdagrad)

    # BruteForceRetrieval over the table SCE trained returns the exact top 10.
    queries = np.asarray(model(np.arange(5, dtype="int32")))
    table = np.asarray(model.item_embedding.embeddings)
    top_items = np.asarray(namespace["top_items"])
    reference = brute_force_scores(queries, table)
    top_scores = np.take_along_axis(reference, top_items, 1)
    assert_exact_top_k(top_items, top_scores, reference, 10)

    # It learned: far above the 10 / 1000 hit rate of a random ranking.
    hit_rate = float(np.mean(namespace["metrics"]["hit_rate"]))
    assert hit_rate > 0.1, hit_rate
    # catalog_ranking_metrics agrees with a numpy rank on the README's own users.
    scores = np.asarray(model(users[:1000]), np.float64) @ table.astype(np.float64).T
    target = scores[np.arange(1000), items[:1000]]
    ranks = (scores >= target[:, None]).sum(1) - 1
    np.testing.assert_allclose(hit_rate, np.mean(ranks < 10), atol=2e-3)


def keras_rs_metrics(scores, labels, k, mask=None) -> tuple[float, float]:
    """keras-rs's RecallAtK (= HR@k with one relevant item) and NDCG@k, ties not shuffled."""
    y_true = np.eye(scores.shape[1], dtype="float32")[labels]
    if mask is not None:
        y_true = {"labels": y_true, "mask": mask}
    recall = keras_rs.metrics.RecallAtK(k=k, shuffle_ties=False)
    ndcg = keras_rs.metrics.NDCG(k=k, shuffle_ties=False)
    recall.update_state(y_true, scores)
    ndcg.update_state(y_true, scores)
    return float(recall.result()), float(ndcg.result())


@pytest.mark.parametrize("k", [1, 5, 10])
def test_hr_and_ndcg_equal_keras_rs_ranking_metrics(k):
    rng = np.random.default_rng(k)
    queries = rng.normal(size=(64, 4)).astype("float32")
    items = rng.normal(size=(50, 4)).astype("float32")
    scores = queries @ items.T  # float32 scores: both sides rank the same numbers
    # Labels spread over ranks 0..~15, so HR@k and NDCG@k are neither 0 nor 1.
    order = np.argsort(-scores, axis=1)
    labels = order[np.arange(64), rng.integers(0, 16, size=64)]
    ours = catalog_ranking_metrics(queries, items, labels, k=k, chunk_size=16)
    hit_rate, ndcg = float(np.mean(ours["hit_rate"])), float(np.mean(ours["ndcg"]))
    assert 0.0 < hit_rate < 1.0
    expected_hr, expected_ndcg = keras_rs_metrics(scores, labels, k)
    np.testing.assert_allclose([hit_rate, ndcg], [expected_hr, expected_ndcg], rtol=1e-5)

    # Excluded items (each query's own best few, padded with -1, the label itself kept):
    # keras-rs masks them out of the list.
    exclude = np.where(rng.random((64, 6)) < 0.7, order[:, :6], -1)
    ours = catalog_ranking_metrics(queries, items, labels, k=k, exclude=exclude, chunk_size=16)
    mask = np.ones(scores.shape, bool)
    for row in range(64):
        dropped = exclude[row][(exclude[row] >= 0) & (exclude[row] != labels[row])]
        mask[row, dropped] = False
    expected_hr, expected_ndcg = keras_rs_metrics(scores, labels, k, mask)
    np.testing.assert_allclose(
        [float(np.mean(ours["hit_rate"])), float(np.mean(ours["ndcg"]))],
        [expected_hr, expected_ndcg],
        rtol=1e-5,
    )
