"""Shared by the test files: data makers, small training loops and assertions (whole-config round
trips, serving without tfsmooth, the top-k property). Independent references live in
``references.py``."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

from tfsmooth._keras import IS_KERAS_3, keras


def assert_config_roundtrip(obj) -> None:
    """``from_config(get_config())`` and Keras (de)serialization give back the whole config.

    Compares full config dicts (not field by field), after a JSON round trip, so nothing is dropped
    and everything is JSON-serializable.
    """
    config = obj.get_config()
    json_config = json.loads(json.dumps(config))
    clone = obj.__class__.from_config(json_config)
    assert clone.get_config() == config, (clone.get_config(), config)
    serialized = json.loads(json.dumps(keras.utils.serialize_keras_object(obj)))
    revived = keras.utils.deserialize_keras_object(serialized)
    assert type(revived) is type(obj)
    assert revived.get_config() == config


def export_saved_model(model, directory: pathlib.Path) -> pathlib.Path:
    """Exports a Keras model as a SavedModel the way each flavour does it."""
    path = pathlib.Path(directory) / "saved_model"
    if IS_KERAS_3:
        model.export(str(path), verbose=False)
    else:
        tf.saved_model.save(model, str(path))
    return path


_SERVE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    path, inputs_file, signature = sys.argv[1], sys.argv[2], sys.argv[3]
    loaded = tf.saved_model.load(path)
    data = np.load(inputs_file)
    if len(data.files) == 1 and data.files[0] == "__single__":
        inputs = tf.constant(data["__single__"])
    else:
        inputs = {k: tf.constant(data[k]) for k in data.files}
    if signature:
        fn = loaded.signatures[signature]
        out = fn(**inputs) if isinstance(inputs, dict) else fn(inputs)
    else:
        fn = loaded.serve if hasattr(loaded, "serve") else loaded
        out = fn(inputs)
    def plain(value):
        array = np.asarray(value)
        if array.dtype == object:  # tf.string outputs arrive as bytes
            array = np.char.decode(array.astype(bytes), "utf-8")
        return array.tolist()

    if isinstance(out, dict):
        result = {k: plain(v) for k, v in out.items()}
    else:
        result = {"output": plain(out)}
    loaded_modules = sorted(m for m in sys.modules if m == "tfsmooth" or m.startswith("tfsmooth."))
    print("RESULT" + json.dumps({"outputs": result, "tfsmooth_modules": loaded_modules}))
    """
)


def serve_in_clean_process(path, inputs, signature: str = "") -> dict:
    """Loads a SavedModel with plain TensorFlow in a fresh process that never imports tfsmooth.

    ``inputs`` is one array or a dict of arrays. Returns the outputs as a dict of numpy arrays
    (``{"output": ...}`` for a single output). The process runs from a temporary directory with
    ``PYTHONPATH`` cleared, so it could not import tfsmooth from the source tree even by accident.
    """
    path = pathlib.Path(path)
    inputs_file = path.parent / "serving_inputs.npz"
    if isinstance(inputs, dict):
        np.savez(inputs_file, **{k: np.asarray(v) for k, v in inputs.items()})
    else:
        np.savez(inputs_file, __single__=np.asarray(inputs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.pop("TF_USE_LEGACY_KERAS", None)
    result = subprocess.run(
        [sys.executable, "-c", _SERVE, str(path), str(inputs_file), signature],
        capture_output=True,
        text=True,
        cwd=str(path.parent),
        env=env,
        timeout=300,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    payload = json.loads(lines[-1][len("RESULT") :])
    assert payload["tfsmooth_modules"] == [], payload["tfsmooth_modules"]
    return {k: np.asarray(v) for k, v in payload["outputs"].items()}


def public_objects():
    """``("submodule.name", object)`` for every name in a tfsmooth submodule's ``__all__``.

    Subpackages and names that need TFRS are skipped under Keras 3 (``tasks.CatalogRetrieval`` is
    built on first use and raises ``ImportError`` there).
    """
    import importlib

    import tfsmooth

    for submodule in tfsmooth._SUBMODULES:
        try:
            module = importlib.import_module(f"tfsmooth.{submodule}")
        except ImportError:
            continue
        for name in getattr(module, "__all__", []):
            try:
                obj = getattr(module, name)
            except ImportError:
                continue
            yield f"{submodule}.{name}", obj


def assert_exact_top_k(indices, scores, reference, k, tol=1e-5) -> None:
    """The top-k property against ``references.brute_force_scores``, robust to float rounding.

    Each row holds ``k`` distinct allowed candidates (reference score > -inf), best first, with the
    reference's scores, and no candidate left out scores above the last one returned -- so two
    candidates whose scores differ by less than the rounding may come in either order.
    """
    indices, scores = np.asarray(indices), np.asarray(scores)
    assert indices.shape == scores.shape == (reference.shape[0], k), (indices.shape, k)
    for row in range(reference.shape[0]):
        ids = indices[row]
        assert len(set(ids.tolist())) == k, ids
        assert np.all(np.isfinite(reference[row, ids])), "an excluded candidate was returned"
        np.testing.assert_allclose(scores[row], reference[row, ids], rtol=tol, atol=tol)
        assert np.all(np.diff(scores[row]) <= tol), "not best first"
        left_out = np.delete(reference[row], ids)
        assert left_out.max(initial=-np.inf) <= scores[row, -1] + tol


# ----------------------------------------------------------------------------------------------------
# Catalog losses: queries, an item table and labels.


def make_inputs(rng, n=64, c=500, d=16, scale=1.0, dtype=np.float32):
    """``(queries [n, d], items [c, d], labels [n])`` drawn from ``rng`` for the catalog losses."""
    queries = (rng.normal(size=(n, d)) * scale).astype(dtype)
    items = (rng.normal(size=(c, d)) * 0.5).astype(dtype)
    labels = rng.integers(0, c, size=n).astype(np.int32)
    return queries, items, labels


# ----------------------------------------------------------------------------------------------------
# Optimizers: a dense kernel, a sparse table and a bias, stepped with apply_gradients or fit.

#: The dense kernel's and the embedding table's shapes the optimizer step helpers use.
KERNEL_SHAPE, TABLE_SHAPE = (5, 3), (12, 3)


def make_steps(rng, count, duplicates=True):
    """``count`` steps of ``[dense kernel gradient, (table indices, values), bias gradient]``."""
    steps = []
    for _ in range(count):
        dense = rng.normal(size=KERNEL_SHAPE) * 10 ** rng.uniform(-2, 1)
        indices = rng.integers(0, TABLE_SHAPE[0], size=6 if duplicates else 4)
        if not duplicates:
            indices = rng.choice(TABLE_SHAPE[0], size=4, replace=False)
        values = rng.normal(size=(len(indices), TABLE_SHAPE[1])) * 10 ** rng.uniform(-2, 1)
        bias = rng.normal(size=KERNEL_SHAPE[1])
        steps.append([dense, (indices, values), bias])
    return steps


def initial_values(rng):
    """Initial kernel, table and a zero-initialised bias for :func:`make_steps`."""
    return [
        rng.normal(size=KERNEL_SHAPE),
        rng.normal(size=TABLE_SHAPE) * 0.05,
        np.zeros(KERNEL_SHAPE[1]),  # a zero-initialised bias
    ]


def dense_steps(rng, initial, count):
    """``count`` steps of dense gradients (the table's summed into a dense array)."""
    steps = []
    for step in make_steps(rng, count):
        dense = []
        for g, w in zip(step, initial):
            if isinstance(g, tuple):
                g_dense = np.zeros(np.shape(w))
                np.add.at(g_dense, g[0], g[1])
                g = g_dense
            dense.append(np.asarray(g))
        steps.append(dense)
    return steps


def run_steps(optimizer, initial, steps, dtype="float32", sparse=True, jit_compile=False):
    """Applies ``steps`` in a tf.function (with ``sparse``, table gradients given as
    ``(indices, values)`` go in as ``tf.IndexedSlices``; else every gradient is dense; with
    ``jit_compile``, sparse steps compiled by XLA); the weights."""
    variables = [tf.Variable(np.asarray(v, dtype)) for v in initial]

    @tf.function(jit_compile=jit_compile)
    def apply(dense, indices, values, bias):
        sparse = tf.IndexedSlices(values, indices, tf.constant(TABLE_SHAPE, tf.int64))
        optimizer.apply_gradients(zip([dense, sparse, bias], variables))

    @tf.function
    def apply_dense(*gradients):
        optimizer.apply_gradients(zip(gradients, variables))

    for step in steps:
        if not sparse:
            apply_dense(*(tf.constant(g, dtype) for g in step))
            continue
        dense, (indices, values), bias = step
        apply(
            tf.constant(dense, dtype),
            tf.constant(indices, tf.int32),
            tf.constant(values, dtype),
            tf.constant(bias, dtype),
        )
    return [v.numpy() for v in variables]


def make_data(rng, n=96):
    """``({"user", "features"}, labels)`` for :func:`make_model`."""
    users = rng.integers(0, 20, size=n).astype("int32")
    features = rng.normal(size=(n, 3)).astype("float32")
    labels = (features.sum(1, keepdims=True) + 0.1 * (users[:, None] % 3)).astype("float32")
    return {"user": users, "features": features}, labels


def make_model(seed=0):
    """A small model with an embedding (sparse gradients) and two dense layers, seeded."""
    user = keras.Input(shape=(), dtype="int32", name="user")
    features = keras.Input(shape=(3,), name="features")
    embedded = keras.layers.Embedding(
        20, 4, embeddings_initializer=keras.initializers.RandomUniform(seed=seed), name="embedding"
    )(user)
    x = keras.layers.Concatenate()([embedded, features])
    x = keras.layers.Dense(
        8, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1)
    )(x)
    out = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2))(
        x
    )
    return keras.Model({"user": user, "features": features}, out)


def fit(model, data, steps, batch_size=16):
    """``steps`` batches of ``data`` through ``model.fit``, in order."""
    x, y = data
    count = steps * batch_size
    x = {k: v[:count] for k, v in x.items()}
    model.fit(x, y[:count], batch_size=batch_size, epochs=1, shuffle=False, verbose=0)


def free_ports(count: int) -> list[int]:
    """``count`` free TCP ports on the loopback interface (for clusters of processes)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def logical_shards(values, sizes) -> list:
    """Variables holding consecutive row blocks of ``values`` (``sizes`` rows each), alternating
    between the logical CPUs: the shards of a table, each on a device of its own."""
    from conftest import LOGICAL_CPUS

    shards, start = [], 0
    for i, rows in enumerate(sizes):
        with tf.device(LOGICAL_CPUS[i % len(LOGICAL_CPUS)]):
            shards.append(tf.Variable(values[start : start + rows], name=f"shard_{i}"))
        start += rows
    return shards


def shard_splitter(sizes):
    """A variable creator (for ``tf.variable_creator_scope``) that builds a table as a
    ``ShardedVariable`` of ``sizes`` rows per shard, each on its own logical CPU: what a
    ``ParameterServerStrategy`` partitioner does, in one process."""
    from conftest import LOGICAL_CPUS

    def split(next_creator, **kwargs):
        initial = kwargs.pop("initial_value")
        value = tf.convert_to_tensor(initial() if callable(initial) else initial)
        kwargs.pop("shape", None)
        parts = []
        for i, block in enumerate(tf.split(value, list(sizes))):
            with tf.device(LOGICAL_CPUS[i % len(LOGICAL_CPUS)]):
                parts.append(next_creator(initial_value=block, **{**kwargs, "name": f"part_{i}"}))
        return tf.__internal__.distribute.ShardedVariable(parts)

    return split


def whole_tensors(graph, rows) -> list[str]:
    """The tensors of ``graph`` with ``rows`` rows (or an unknown first axis) and as many elements
    as a whole table: what a step costing O(rows touched) must not hold. Fails on a conditional
    or loop, which could hide one."""
    rows = tuple(rows) if isinstance(rows, (tuple, list)) else (rows,)
    whole = []
    for op in graph.get_operations():
        assert op.type not in ("If", "StatelessIf", "While", "StatelessWhile"), op.type
        for tensor in list(op.inputs) + list(op.outputs):
            if (
                tensor.shape.rank
                and tensor.shape.as_list()[0] in (*rows, None)
                and (tensor.shape.num_elements() or 0) >= min(rows)
            ):
                whole.append(f"{op.type} {op.name} {tensor.shape}")
    return whole


def assert_restarts_continue_exactly(make_optimizer, rng, tmp_path) -> None:
    """Three ``fit`` steps straight equal two steps, a save, and one more step, bit for bit (weights
    and optimizer state), whether resumed from a ``tf.train.Checkpoint`` (into a model with other
    initial weights) or from a ``.keras`` file (the optimizer's whole config and statistics too)."""
    from tfsmooth.optimizers import clipping_statistics

    data = make_data(rng)
    rest = ({k: v[32:] for k, v in data[0].items()}, data[1][32:])

    def compiled(seed=0):
        model = make_model(seed)
        model.compile(optimizer=make_optimizer(), loss="mse")
        return model

    straight = compiled()
    fit(straight, data, 3)
    first = compiled()
    fit(first, data, 2)
    path = tf.train.Checkpoint(model=first, optimizer=first.optimizer).save(str(tmp_path / "c"))
    first.save(tmp_path / "model.keras")
    from_checkpoint = compiled(seed=7)
    tf.train.Checkpoint(model=from_checkpoint, optimizer=from_checkpoint.optimizer).restore(path)
    from_file = keras.models.load_model(tmp_path / "model.keras")
    assert type(from_file.optimizer) is type(first.optimizer)
    assert from_file.optimizer.get_config() == first.optimizer.get_config()
    assert clipping_statistics(from_file.optimizer) == clipping_statistics(first.optimizer)
    for resumed in (from_checkpoint, from_file):
        fit(resumed, rest, 1)
        assert int(resumed.optimizer.iterations) == 3
        assert_same_state(straight, resumed)


def assert_same_state(a, b):
    """Two models' weights and optimizer variables are equal, bit for bit."""
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.optimizer.variables, b.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
