"""Independent references the tests compare with: small numpy formulas, grouped by concept.

Each is written from the paper or the documented rule, never from tfsmooth's code, and computes in
float64. Test modules import them from here (no test module imports another); data makers and
shared assertions live in ``helpers.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import tensorflow as tf

#: The stateless seed pair the SCE tests draw bucket centres with.
SCE_SEED = (3, 4)

# --------------------------------------------------------------------------------------------------
# Activations: SmeLU and Generalized SmeLU.


def smelu_reference(x, beta):
    """SmeLU (Shamir et al. 2022) region by region in float64: 0, (x + b)^2 / 4b, x."""
    x = np.asarray(x, np.float64)
    return np.where(x <= -beta, 0.0, np.where(x >= beta, x, (x + beta) ** 2 / (4 * beta)))


def smelu_slope_reference(x, beta):
    """SmeLU's derivative (Shamir et al. 2022) in float64: 0, (x + b) / 2b, 1."""
    x = np.asarray(x, np.float64)
    return np.where(x <= -beta, 0.0, np.where(x >= beta, 1.0, (x + beta) / (2 * beta)))


def generalized_reference(x, alpha, beta, gn, gp, t):
    """Generalized SmeLU (Shamir et al. 2022; widths alpha, beta; slopes gn, gp; offset t)."""
    x = np.asarray(x, np.float64)
    left = gn * (x + alpha) + t
    mid = t + gn * (x + alpha) + (gp - gn) * (x + alpha) ** 2 / (2 * (alpha + beta))
    right = t + (alpha + beta) * (gn + gp) / 2 + gp * (x - beta)
    return np.where(x <= -alpha, left, np.where(x >= beta, right, mid))


def generalized_slope_reference(x, alpha, beta, gn, gp):
    """Generalized SmeLU's derivative (Shamir et al. 2022): gn, linear ramp, gp."""
    x = np.asarray(x, np.float64)
    mid = gn + (gp - gn) * (x + alpha) / (alpha + beta)
    return np.where(x <= -alpha, gn, np.where(x >= beta, gp, mid))


def smelu_reference_at_float32_width(x, beta):
    """(value, slope) of SmeLU at the float32-rounded width, in float64, as (x + b) / 2 * (x + b) / 2b so that float64 itself does not overflow."""
    b = float(np.float32(beta))  # the width the float32 kernel computes with
    x = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        inside = (np.clip(x, -b, b) + b) / 2 * ((np.clip(x, -b, b) + b) / (2 * b))
    value = np.where(x <= -b, 0.0, np.where(x >= b, x, inside))
    slope = np.where(x <= -b, 0.0, np.where(x >= b, 1.0, (np.clip(x, -b, b) + b) / (2 * b)))
    return value, slope


# --------------------------------------------------------------------------------------------------
# Layers and models: DCN cross, the ranking model's forward pass.


def cross_reference(x0, x, kernel, bias, diag_scale=0.0):
    """DCN-V2 cross layer (Wang et al. 2021, eq. 1): x0 * (x W + b + diag_scale * x) + x."""
    return x0 * (x @ kernel + bias + diag_scale * x) + x


def _layer_weights(model, name):
    """The named layer's weights as numpy arrays."""
    return [np.asarray(w) for w in model.get_layer(name).weights]


def numpy_forward(model, inputs, activation, hidden, cross=False, layer_norm=False):
    """The ranking model's documented architecture (``build_ranking_model``) in numpy, from the
    model's own weights: embeddings, optional cross and layer norm, hidden layers, heads."""
    (user_table,) = _layer_weights(model, "user_embedding")
    (item_table,) = _layer_weights(model, "item_embedding")
    (genre_kernel,) = _layer_weights(model, "genre_projection")
    x0 = np.concatenate(
        [user_table[inputs["user"]], item_table[inputs["item"]], inputs["genres"] @ genre_kernel],
        axis=1,
    ).astype(np.float64)
    x = x0
    if cross:
        kernel, bias = _layer_weights(model, "cross")
        x = x0 * (x0 @ kernel + bias) + x0
    if layer_norm:
        gamma, beta = _layer_weights(model, "layer_norm")
        mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
        x = (x - mean) / np.sqrt(var + 1e-3) * gamma + beta
    for index in range(len(hidden)):
        kernel, bias = _layer_weights(model, f"hidden_{index}")
        x = activation(x @ kernel + bias)
    outputs = {}
    kernel, bias = _layer_weights(model, "binary")
    outputs["binary"] = 1.0 / (1.0 + np.exp(-(x @ kernel + bias)))
    if "regression" in [layer.name for layer in model.layers]:
        kernel, bias = _layer_weights(model, "regression")
        outputs["regression"] = x @ kernel + bias
    return outputs


# --------------------------------------------------------------------------------------------------
# Losses: full-catalog cross-entropy, Scalable Cross-Entropy, sampled softmax.


def full_ce_reference(queries, items, labels, mask=None, temperature=1.0):
    """Full softmax cross-entropy over the catalog (mean over valid rows) and its gradients, float64.

    Returns ``(loss, d loss / d queries, d loss / d items)``; the textbook log-sum-exp formula.
    """
    q = np.asarray(queries, np.float64)
    w = np.asarray(items, np.float64)
    y = np.asarray(labels)
    valid = np.ones(len(y), bool) if mask is None else np.asarray(mask, bool)
    logits = q @ w.T / temperature
    top = logits.max(axis=1, keepdims=True)
    log_sum_exp = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    losses = log_sum_exp - logits[np.arange(len(y)), np.where(valid, y, 0)]
    count = max(valid.sum(), 1)
    loss = losses[valid].sum() / count
    softmax = np.exp(logits - log_sum_exp[:, None])
    softmax[np.arange(len(y)), np.where(valid, y, 0)] -= 1.0
    g = np.where(valid[:, None], softmax, 0.0) / count / temperature
    return loss, g @ w, g.T @ q


def sce_centres(queries, mask, n_buckets, mix_x, seed=SCE_SEED):
    """SCE's bucket centres as documented: stateless normals, or Omega^T X when ``mix_x``."""
    n, d = queries.shape
    if not mix_x:
        return (
            tf.random.stateless_normal([n_buckets, d], seed=seed, alg="philox")
            .numpy()
            .astype(np.float64)
        )
    omega = (
        tf.random.stateless_normal([n, n_buckets], seed=seed, alg="philox")
        .numpy()
        .astype(np.float64)
    )
    kept = np.where(mask[:, None], queries, 0.0)
    return omega.T @ kept


def sce_reference(
    queries, items, labels, *, n_buckets=None, bucket_size_x=None, bucket_size_y=256, mask=None,
    mix_x=False, seed=SCE_SEED, positions=None,
):  # fmt: skip
    """Scalable Cross-Entropy (Mezentsev et al. 2024) as documented, in float64 numpy.

    Returns (loss, selection). Defaults as documented: floor(2 sqrt(valid)) of floor(2 sqrt(N))."""
    q = np.asarray(queries, np.float64)
    w = np.asarray(items, np.float64)
    y = np.asarray(labels)
    n = len(y)
    valid = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
    cap = max(math.floor(2 * math.sqrt(n)), 1)
    active = max(math.floor(2 * math.sqrt(valid.sum())), 1)
    drawn = cap if n_buckets is None else n_buckets
    used = active if n_buckets is None else n_buckets
    size_x = min(active if bucket_size_x is None else bucket_size_x, n)
    size_y = min(bucket_size_y, len(w))
    centres = sce_centres(q, valid, drawn, mix_x, seed)[:used]
    best = np.full(n, -np.inf)
    x_sets, y_sets = [], []
    for centre in centres:
        x_scores = np.where(valid, q @ centre, -np.inf)
        chosen_x = [i for i in np.argsort(-x_scores, kind="stable")[:size_x] if valid[i]]
        chosen_y = np.argsort(-(w @ centre), kind="stable")[:size_y]
        x_sets.append(chosen_x)
        y_sets.append(set(chosen_y.tolist()))
        for i in chosen_x:
            negatives = [j for j in chosen_y if j != y[i]]
            logits = np.concatenate([q[i] @ w[negatives].T, [q[i] @ w[y[i]]]])
            top = logits.max()
            loss = top + np.log(np.exp(logits - top).sum()) - logits[-1]
            best[i] = max(best[i], loss)
    counted = np.isfinite(best)
    return best[counted].mean() if counted.any() else 0.0, (x_sets, y_sets, counted)


def proposal_reference(sampling, c):
    """Candidate probabilities: uniform 1/C; log-uniform (Zipfian, as in
    ``tf.random.log_uniform_candidate_sampler``): log((k + 2) / (k + 1)) / log(C + 1); or weights."""
    if isinstance(sampling, str) and sampling == "uniform":
        return np.full(c, 1.0 / c)
    if isinstance(sampling, str):
        k = np.arange(c)
        return np.log((k + 2) / (k + 1)) / np.log(c + 1)
    return np.asarray(sampling, np.float64) / np.sum(sampling)


def sampled_softmax_reference(queries, items, labels, ids, probabilities):
    """Sampled softmax with logQ correction (Bengio & Senecal 2008; Jean et al. 2015): the true
    item against the ``ids`` drawn, logits minus log(S q), accidental hits removed; float64 mean."""
    q, w = np.asarray(queries, np.float64), np.asarray(items, np.float64)
    labels, ids, p = np.asarray(labels), np.asarray(ids), np.asarray(probabilities, np.float64)
    s = len(ids)
    pos = np.sum(q * w[labels], 1) - np.log(s * p[labels])
    neg = q @ w[ids].T - np.log(s * p[ids])[None]
    neg = np.where(labels[:, None] == ids[None], -np.inf, neg)
    logits = np.concatenate([pos[:, None], neg], 1)
    top = logits.max(1, keepdims=True)
    return np.mean(top[:, 0] + np.log(np.exp(logits - top).sum(1)) - pos)


# --------------------------------------------------------------------------------------------------
# Metrics: prediction difference, top-k churn, catalog ranks.


def prediction_difference_reference(a, b, kind, w=None):
    """Prediction difference (Shamir & Lin 2022) per example in float64, weighted mean."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if kind in ("l1", "top1"):
        terms = (
            0.5 * np.abs(a - b).sum(axis=-1)
            if kind == "l1"
            else (a.argmax(-1) != b.argmax(-1)).astype(float)
        )
    else:
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        if kind == "absolute":
            terms = np.abs(a - b).mean(axis=1)
        elif kind == "l2":
            terms = ((a - b) ** 2).sum(axis=1)
        else:
            ratios = []
            for x, y in zip(a.ravel(), b.ravel()):
                num, den = 2 * abs(x - y), abs(x + y)
                ratios.append(0.0 if num < 1e-7 and den < 1e-7 else num / den)
            terms = np.asarray(ratios).reshape(a.shape).mean(axis=1)
    w = np.ones(len(terms)) if w is None else np.asarray(w, np.float64)
    mean = np.sum(w * terms) / np.sum(w)
    return np.sqrt(mean) if kind == "l2" else mean


def churn_reference(a, b, k, w=None):
    """Top-k churn: 1 - |top_k(a) & top_k(b)| / k per row, ties to the lower index, weighted mean."""
    values = []
    for row_a, row_b in zip(np.atleast_2d(a), np.atleast_2d(b)):
        top_a = set(np.argsort(-row_a, kind="stable")[:k])  # stable: ties to the lower index
        top_b = set(np.argsort(-row_b, kind="stable")[:k])
        values.append(1 - len(top_a & top_b) / k)
    w = np.ones(len(values)) if w is None else np.asarray(w)
    return float(np.sum(w * np.asarray(values)) / np.sum(w))


def reference_ranks(queries, items, labels, exclude=None):
    """Rank of each true item: how many other allowed items score >= it (float64 full scores)."""
    scores = queries.astype(np.float64) @ items.T.astype(np.float64)
    ranks = []
    for i, label in enumerate(labels):
        skip = {label}
        if exclude is not None:
            skip |= {int(e) for e in exclude[i] if 0 <= e < len(items)}
        others = [j for j in range(len(items)) if j not in skip]
        ranks.append(int(np.sum(scores[i, others] >= scores[i, label])))
    return np.asarray(ranks)


def nan_rule_reference(queries, items, labels, k, exclude=None):
    """The documented rule in numpy: NaN scores are -inf; a NaN true-item score is rank C, a miss."""
    with np.errstate(invalid="ignore"):
        scores = queries.astype(np.float64) @ items.T.astype(np.float64)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    ranks = []
    for i, label in enumerate(labels):
        skip = {label} | {int(e) for e in (exclude[i] if exclude is not None else ()) if e >= 0}
        others = [j for j in range(len(items)) if j not in skip]
        ranks.append(int(np.sum(scores[i, others] >= scores[i, label])))
    target_is_nan = np.isnan(np.einsum("bd,bd->b", queries, items[labels]))
    ranks = np.where(target_is_nan, len(items), ranks)
    hit = (ranks < k) & ~target_is_nan
    ndcg = np.where(hit, 1.0 / np.log2(np.minimum(ranks, len(items)) + 2.0), 0.0)
    return ranks, hit.astype(np.float32), ndcg


# --------------------------------------------------------------------------------------------------
# Optimizers: the Clippy rule, Clippy(optimizer), ClippyAdagrad, Adam, momentum.


def numpy_shrink(update, references, relative, absolute, per_row=False):
    """The Clippy rule (Tang et al. 2023, Algorithm 1) in float64: ratio = max |u| / b, factor = min(1, 1 / ratio)."""
    u = np.asarray(update, np.float64)
    bound = absolute + sum(
        r * np.abs(np.asarray(x, np.float64)) for x, r in zip(references, relative)
    )
    bound = np.broadcast_to(bound, u.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        elementwise = np.where(u == 0, 0.0, np.abs(u) / bound)
    axes = tuple(range(1, u.ndim)) if per_row else None
    ratio = elementwise.max(axis=axes) if elementwise.size else np.zeros(())
    with np.errstate(divide="ignore"):
        factor = np.minimum(1.0, np.where(ratio == 0, 1.0, 1.0 / ratio))
    scale = factor.reshape(factor.shape + (1,) * (u.ndim - factor.ndim)) if per_row else factor
    return u * scale, factor, ratio


def dense_gradient(gradient, shape):
    """A dense gradient, or ``(indices, values)`` summed into a dense float64 array."""
    if not isinstance(gradient, tuple):
        return np.asarray(gradient, np.float64)
    dense = np.zeros(shape)
    np.add.at(dense, gradient[0], gradient[1])
    return dense


def numpy_clipped(inner_step, variables, steps, *, relative, absolute, granularity="variable"):
    """Clippy around any optimizer (Tang et al. 2023): runs ``inner_step(t, index, w, g) -> w'``
    and clips each move by :func:`numpy_shrink`; returns the weights and per-variable statistics."""
    weights = [np.array(v, np.float64) for v in variables]
    statistics = None
    for t, gradients in enumerate(steps):
        statistics = []
        for i, (w, g) in enumerate(zip(weights, gradients)):
            per_row = granularity == "row" and isinstance(g, tuple)
            g = dense_gradient(g, w.shape)
            move = inner_step(t, i, w.copy(), g) - w
            shrunk, factor, ratio = numpy_shrink(move, [w], [relative], absolute, per_row)
            weights[i] = w + shrunk
            norms = (np.linalg.norm(g), np.linalg.norm(weights[i]))  # ||w|| read after the step
            statistics.append((np.min(factor), np.max(ratio), *norms))
    return weights, statistics


def numpy_clippy_adagrad(variables, steps, *, learning_rate, **config):
    """Algorithm 1 of Tang et al. (``use_standard_accumulator_update=True``) and TFRS's variant,
    in float64. ``steps``: per step, per variable, a dense gradient or ``(indices, values)``."""
    rel = config.get("variable_relative_threshold", 0.5)
    acc_rel = config.get("accumulator_relative_threshold", 0.0)
    absolute = config.get("absolute_threshold", 1e-3)
    eps = config.get("epsilon", 1e-7)
    standard = config.get("use_standard_accumulator_update", False)
    clip_acc = config.get("clip_accumulator_update", False)
    row = config.get("granularity", "variable") == "row"
    weights = [np.array(v, np.float64) for v in variables]
    accumulators = [
        np.full(v.shape, config.get("initial_accumulator_value", 0.1)) for v in variables
    ]
    factors = []
    for t, gradients in enumerate(steps):
        lr = learning_rate(t) if callable(learning_rate) else learning_rate
        step_factors = []
        for w, acc, g in zip(weights, accumulators, gradients):
            if isinstance(g, tuple):  # sparse: sum repeated rows first
                unique, positions = np.unique(g[0], return_inverse=True)
                values = np.zeros((len(unique), *w.shape[1:]))
                np.add.at(values, positions, g[1])
                rows, per_row = unique, row
            else:
                values, rows, per_row = np.asarray(g, np.float64), slice(None), False
            square = values**2
            used = acc[rows] + square if standard else acc[rows]
            precondition = 1.0 / np.sqrt(used + eps)
            delta = lr * values * precondition
            shrunk, factor, _ = numpy_shrink(
                delta, [w[rows], precondition], [rel, acc_rel], absolute, per_row
            )
            if clip_acc:
                scale = factor.reshape(factor.shape + (1,) * (values.ndim - factor.ndim))
                square = (values * scale) ** 2
            acc[rows] += square
            w[rows] -= shrunk
            step_factors.append(float(np.min(factor)))
        factors.append(step_factors)
    return weights, accumulators, factors


def adam_reference(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Adam (Kingma & Ba 2015, Algorithm 1, Keras's epsilon placement) as an ``inner_step``."""
    moments = {}

    def step(t, i, w, g):
        m, v = moments.get(i, (np.zeros_like(w), np.zeros_like(w)))
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        moments[i] = (m, v)
        alpha = learning_rate * math.sqrt(1 - beta_2 ** (t + 1)) / (1 - beta_1 ** (t + 1))
        return w - alpha * m / (np.sqrt(v) + epsilon)

    return step


def lazy_adam_reference(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Lazy Adam (TensorFlow Addons' ``LazyAdam``) as an ``inner_step``: Adam on the rows whose
    gradient is not all zero (the rows a sparse gradient touches); other rows, and their moments,
    stay as they were. The bias correction uses the global step. Returns ``(step, moments)``."""
    moments = {}

    def step(t, i, w, g):
        m, v = moments.get(i, (np.zeros_like(w), np.zeros_like(w)))
        rows = (
            np.any(g != 0, axis=tuple(range(1, g.ndim))) if g.ndim > 1 else np.ones(g.shape, bool)
        )
        m, v = m.copy(), v.copy()
        m[rows] = beta_1 * m[rows] + (1 - beta_1) * g[rows]
        v[rows] = beta_2 * v[rows] + (1 - beta_2) * g[rows] ** 2
        moments[i] = (m, v)
        alpha = learning_rate * math.sqrt(1 - beta_2 ** (t + 1)) / (1 - beta_1 ** (t + 1))
        w = w.copy()
        w[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + epsilon)
        return w

    return step, moments


def momentum_reference(learning_rate, momentum):
    """SGD with momentum (Keras's form: m = momentum * m - lr * g; w += m) as an ``inner_step``."""
    velocities = {}

    def step(t, i, w, g):
        m = momentum * velocities.get(i, np.zeros_like(w)) - learning_rate * g
        velocities[i] = m
        return w + m

    return step


# --------------------------------------------------------------------------------------------------
# Callbacks: the spike rule, the per-layer signals.


def reference_spikes(losses, factor, patience, decay, warmup):
    """The StabilityMonitor's spike rule, transcribed directly: the reference is the EMA of healthy losses once
    ``warmup`` healthy ones were seen, before that their plain mean (from the third on)."""
    healthy, average, streak, flags, diverged_at = [], None, 0, [], None
    for step, loss in enumerate(losses):
        if not math.isfinite(loss):
            spike = True
        else:
            if len(healthy) >= warmup:
                reference = average
            elif len(healthy) >= 3:
                reference = sum(healthy) / len(healthy)
            else:
                reference = None
            spike = reference is not None and reference > 0 and loss > factor * reference
        flags.append(spike)
        if spike:
            streak += 1
        else:
            streak = 0
            healthy.append(loss)
            average = loss if average is None else decay * average + (1 - decay) * loss
        if diverged_at is None and (not math.isfinite(loss) or streak >= patience):
            diverged_at = step
    return flags, average, diverged_at


def reference_update_signals(layers):
    """The StabilityMonitor's per-layer signals for a plain optimizer, from their definition:
    ``{layer: [(before, after), ...]}`` -> ``||dw||`` and ``||dw|| / ||w_before||`` of the layer's
    variables taken together (float64; ``inf`` for all-zero weights)."""
    signals = {}
    for layer, pairs in layers.items():
        moved = np.concatenate([(np.float64(a) - np.float64(b)).ravel() for b, a in pairs])
        weights = np.concatenate([np.float64(b).ravel() for b, _ in pairs])
        norm, weight = np.linalg.norm(moved), np.linalg.norm(weights)
        signals[layer] = {
            "update_norm": norm,
            "update_to_weight": norm / weight if weight > 0 else math.inf,
        }
    return signals


def reference_clippy_signals(layers):
    """The StabilityMonitor's per-layer signals with Clippy, from their definition:
    ``{layer: [per-variable statistics, ...]}`` -> the layer's ``||g||`` (the norm of its variables'
    gradients together), ``||g|| / ||w||``, the max update-to-bound ratio, the min clipping factor."""
    signals = {}
    for layer, stats in layers.items():
        gradient = np.linalg.norm([s["gradient_norm"] for s in stats])
        weight = np.linalg.norm([s["variable_norm"] for s in stats])
        signals[layer] = {
            "gradient_norm": gradient,
            "grad_to_weight": gradient / weight if weight > 0 else math.inf,
            "update_ratio": max(s["update_ratio"] for s in stats),
            "clipping_factor": min(s["clipping_factor"] for s in stats),
        }
    return signals


# --------------------------------------------------------------------------------------------------
# Data: the leave-last-out sequence split.


def reference_split(data: pd.DataFrame, max_length: int, min_interactions: int):
    """SASRec's leave-last-out split (Kang & McAuley 2018), plain Python, user by user."""
    vocabulary = {}
    users = {}
    for user, group in data.groupby("user_id"):
        if len(group) < min_interactions:
            continue
        ordered = sorted(zip(group["timestamp"], group.index, group["item_id"]))
        users[user] = [item for _, _, item in ordered]
    for item in sorted({i for s in users.values() for i in s}):
        vocabulary[item] = len(vocabulary) + 1

    def pad(values):
        values = [vocabulary[v] for v in values][-max_length:]
        return [0] * (max_length - len(values)) + values

    out = {"valid_labels": [], "test_labels": [], "train_inputs": [], "train_labels": []}
    out.update(valid_inputs=[], test_inputs=[])
    for user in sorted(users):
        s = users[user]
        out["train_inputs"].append(pad(s[:-3]))
        out["train_labels"].append(pad(s[1:-2]))
        out["valid_inputs"].append(pad(s[:-2]))
        out["test_inputs"].append(pad(s[:-1]))
        out["valid_labels"].append(vocabulary[s[-2]])
        out["test_labels"].append(vocabulary[s[-1]])
    return {k: np.asarray(v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------------
# Retrieval: brute-force scores and top-k.


def brute_force_scores(queries, candidates, exclude=None) -> np.ndarray:
    """Top-k reference: float64 inner products ``[B, C]``, each query's excluded indices at -inf.

    ``exclude`` is ``[B, M]`` candidate indices; entries outside ``[0, C)`` are padding.
    """
    scores = np.asarray(queries, np.float64) @ np.asarray(candidates, np.float64).T
    if exclude is not None:
        for row, ids in enumerate(np.asarray(exclude)):
            ids = ids[(ids >= 0) & (ids < scores.shape[1])]
            scores[row, ids] = -np.inf
    return scores


def reference_top_k(tower, table, users, k):
    """Brute-force top-k of a two-tower model: float64 scores, stable order, ``(ids, scores)``."""
    scores = tower(users).numpy().astype(np.float64) @ np.asarray(table, np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1)


def sasrec_reference(model, history, exclude=None, exclude_history=True):
    """Brute force over items 1..C (row 0 is padding), the history and ``exclude`` left out."""
    queries = np.asarray(model.last_hidden(history))
    table = np.asarray(model.item_embeddings)
    blocked = np.zeros((len(history), 1), int)
    if exclude_history:
        blocked = np.concatenate([blocked, history], axis=1)
    if exclude is not None:
        blocked = np.concatenate([blocked, exclude], axis=1)
    return brute_force_scores(queries, table, blocked)


# --------------------------------------------------------------------------------------------------
# Sharded tables: one table split along its rows, each shard a variable of its own.


def split_rows(gradient, sizes):
    """A table (or its gradient) split into shards of ``sizes`` rows, in row order: dense rows by
    shard, or ``(indices, values)`` as each shard's ``(local indices, values)``."""
    ends = np.cumsum(sizes)
    spans = [(end - size, end) for size, end in zip(sizes, ends)]
    if not isinstance(gradient, tuple):
        return [np.asarray(gradient)[a:b] for a, b in spans]
    indices, values = np.asarray(gradient[0]), np.asarray(gradient[1])
    parts = []
    for a, b in spans:
        mine = (indices >= a) & (indices < b)
        parts.append((indices[mine] - a, values[mine]))
    return parts


def per_shard_reference(run, table, steps, sizes):
    """A per-variable rule applied shard by shard, as if each shard of ``table`` were a variable
    of its own: ``run(variables, steps) -> weights`` is one of the references above, ``steps``
    holds the table's gradient of each step. Returns the shards' weights concatenated."""
    shards = split_rows(table, sizes)
    shard_steps = [split_rows(gradient, sizes) for gradient in steps]
    return np.concatenate(run(shards, shard_steps), axis=0)


# --------------------------------------------------------------------------------------------------
# Sharded item tables: the order of a maximum-inner-product selection.


def top_k_by_score_then_index(centres, items, k):
    """The ``k`` rows with the largest inner product per centre, in float64, by score descending and,
    among equal scores, by row index ascending (the lower index first, as ``tf.math.top_k`` documents).

    Returns ``(scores [n, k], indices [n, k])``."""
    scores = np.asarray(centres, np.float64) @ np.asarray(items, np.float64).T
    rows = np.arange(scores.shape[1])
    order = np.stack([np.lexsort((rows, -row))[:k] for row in scores])
    return np.take_along_axis(scores, order, 1), order
