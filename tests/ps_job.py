"""A two-tower model trained under ParameterServerStrategy with a sharded item table.

Run by tests/test_parameter_server.py.

Modes:
  servers -- the cluster's servers (``--tasks ps:0 ps:1 worker:0``), all in this process: starts a
             ``tf.distribute.Server`` per task, prints ``READY`` and serves until killed. Imports
             TensorFlow only.
  chief   -- the coordinator (``TF_CONFIG`` task ``chief``): ``ParameterServerStrategy`` with a
             ``FixedShardsPartitioner(SHARDS)``, so every variable of more than one row (the item
             table above all) is a ``ShardedVariable`` over both parameter servers. Trains with a
             custom loop through a ``ClusterCoordinator`` (``schedule`` + ``join`` per step; one
             worker, so the steps run in order); under tf-keras then ``fit`` (``steps_per_epoch``).
  single  -- the same training in one process without any strategy: plain variables.

Both modes start from the same weights (drawn with numpy, assigned), see the same batches and the
same stateless Scalable Cross-Entropy seed per step, and print ``RESULT {json}``: the weights after
the custom loop (and after ``fit``), the losses, and where the item table's shards live.

The item rows are read through ``tfsmooth.ops.gather_rows`` and the losses read the table shard by
shard (never ``tf.convert_to_tensor`` of the whole table); Keras 3 layers concatenate a sharded
variable on every call, so under Keras 3 the gradient is taken with respect to the shard
variables themselves (``trainable_shards``), not the Keras variables.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

SHARDS = 3
STEPS = 4
FIT_STEPS = 2
N_USERS, N_ITEMS, DIM, BATCH = 40, 301, 16, 32
BUCKET_SIZE_Y = 32
#: The model's weights, by name: (the layer attribute, the variable attribute).
WEIGHTS = {
    "users": ("user_embedding", "embeddings"),
    "kernel": ("hidden", "kernel"),
    "bias": ("hidden", "bias"),
    "items": ("items", "embeddings"),
}


def batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch of step ``step``: users and their (noisy, deterministic) items."""
    rng = np.random.default_rng(1000 + step)
    users = rng.integers(0, N_USERS, size=BATCH).astype("int32")
    items = ((users * 7 + rng.integers(0, 5, size=BATCH)) % N_ITEMS).astype("int32")
    return users, items


def initial_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "users": rng.normal(0.0, 0.1, (N_USERS, DIM)).astype("float32"),
        "kernel": rng.normal(0.0, 0.3, (DIM, DIM)).astype("float32"),
        "bias": rng.normal(0.0, 0.1, (DIM,)).astype("float32"),
        "items": rng.normal(0.0, 0.1, (N_ITEMS, DIM)).astype("float32"),
    }


def make_model():
    from tfsmooth._keras import keras
    from tfsmooth.layers import SmeLU

    class TwoTower(keras.Model):
        """Query tower (user embedding, Dense, SmeLU); the item tower is the item table."""

        def __init__(self):
            super().__init__()
            self.user_embedding = keras.layers.Embedding(N_USERS, DIM)
            self.hidden = keras.layers.Dense(DIM)
            self.activation = SmeLU(beta=0.5)
            self.items = keras.layers.Embedding(N_ITEMS, DIM)
            self.items.build((None,))

        def call(self, users):
            return self.activation(self.hidden(self.user_embedding(users)))

    model = TwoTower()
    model(tf.zeros((1,), tf.int32))
    for name, value in initial_weights().items():
        variable(model, name).assign(value)
    return model


def variable(model, name: str):
    layer, attribute = WEIGHTS[name]
    return getattr(getattr(model, layer), attribute)


def trainable_shards(variables) -> list:
    """``tfsmooth.ops.trainable_shards``, imported on use (the servers import only TensorFlow)."""
    from tfsmooth.ops import trainable_shards as shards

    return shards(variables)


def weights_of(model) -> dict:
    from tfsmooth._keras import native_variable

    return {
        name: tf.convert_to_tensor(native_variable(variable(model, name))).numpy().tolist()
        for name in WEIGHTS
    }


def make_optimizer():
    from tfsmooth.optimizers import ClippyAdagrad

    return ClippyAdagrad(learning_rate=0.5, absolute_threshold=1e-2)


def make_train_step(model, optimizer, strategy):
    """One step (``strategy.run``, so it serves the default strategy too): SCE with a stateless
    seed ``(step, 0)``, ClippyAdagrad on the shard variables."""
    from tfsmooth.losses import scalable_cross_entropy

    @tf.function
    def train_step(users, items, step):
        def replica(users, items):
            with tf.GradientTape() as tape:
                seed = tf.stack([step, tf.constant(0, tf.int64)])
                loss = scalable_cross_entropy(
                    model(users), model.items, items, bucket_size_y=BUCKET_SIZE_Y, seed=seed
                )
            variables = trainable_shards(model.trainable_variables)
            gradients = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(gradients, variables))
            return loss

        return strategy.run(replica, args=(users, items))

    return train_step


def run_fit(model, optimizer) -> list[float]:
    """tf-keras ``fit`` for ``FIT_STEPS`` steps on the batches after the custom loop's (under a
    ParameterServerStrategy it schedules them through the model's ClusterCoordinator)."""
    from tfsmooth.losses import ScalableCrossEntropy

    users, items = zip(*(batch(STEPS + s) for s in range(FIT_STEPS)))
    data = tf.data.Dataset.from_tensor_slices((np.concatenate(users), np.concatenate(items)))
    data = data.batch(BATCH).repeat()
    loss = ScalableCrossEntropy(model.items, bucket_size_y=BUCKET_SIZE_Y, seed=7)
    model.compile(optimizer=optimizer, loss=loss, jit_compile=False)
    history = model.fit(data, epochs=1, steps_per_epoch=FIT_STEPS, verbose=0)
    return history.history["loss"]


def xla_call_devices(concrete) -> list[str]:
    """The devices of the calls of XLA-compiled functions in a traced step and its library."""
    graph = concrete.graph.as_graph_def()
    nodes = list(graph.node)
    compiled = set()
    for function in graph.library.function:
        nodes.extend(function.node_def)
        if function.attr["_XlaMustCompile"].b:
            compiled.add(function.signature.name)
    return sorted(
        node.device
        for node in nodes
        if node.op in ("PartitionedCall", "StatefulPartitionedCall")
        and (node.attr["_XlaMustCompile"].b or node.attr["f"].func.name in compiled)
    )


def run_chief(fit: bool) -> dict:
    from tfsmooth._keras import IS_KERAS_3, native_variable

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    partitioner = tf.distribute.experimental.partitioners.FixedShardsPartitioner(SHARDS)
    strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        model = make_model()
        optimizer = make_optimizer()
        optimizer.build(trainable_shards(model.trainable_variables))
    table = native_variable(model.items.embeddings)
    shards = list(table.variables) if getattr(table, "is_sharded_variable", False) else [table]
    train_step = make_train_step(model, optimizer, strategy)
    losses = []
    for step in range(STEPS):
        users, items = batch(step)
        args = (tf.constant(users), tf.constant(items), tf.constant(step, tf.int64))
        loss = coordinator.schedule(train_step, args=args)
        coordinator.join()
        losses.append(float(loss.fetch()))
    concrete = train_step.get_concrete_function(*args)
    result = {
        "weights": weights_of(model),
        "losses": losses,
        "shard_devices": [v.device for v in shards],
        "shard_rows": [int(v.shape[0]) for v in shards],
        "xla_call_devices": xla_call_devices(concrete),
    }
    if fit and not IS_KERAS_3:
        result["fit_losses"] = run_fit(model, optimizer)
        result["fit_weights"] = weights_of(model)
    return result


def run_single(fit: bool) -> dict:
    from tfsmooth._keras import IS_KERAS_3

    model = make_model()
    initial = weights_of(model)
    optimizer = make_optimizer()
    optimizer.build(trainable_shards(model.trainable_variables))
    train_step = make_train_step(model, optimizer, tf.distribute.get_strategy())
    losses = []
    for step in range(STEPS):
        users, items = batch(step)
        loss = train_step(tf.constant(users), tf.constant(items), tf.constant(step, tf.int64))
        losses.append(float(loss))
    result = {"weights": weights_of(model), "losses": losses, "initial": initial}
    if fit and not IS_KERAS_3:
        result["fit_losses"] = run_fit(model, optimizer)
        result["fit_weights"] = weights_of(model)
    return result


def run_servers(cluster: dict, tasks: list[str]) -> None:
    spec = tf.train.ClusterSpec(cluster)
    servers = []
    for task in tasks:
        job, index = task.split(":")
        servers.append(
            tf.distribute.Server(spec, job_name=job, task_index=int(index), protocol="grpc")
        )
    print("READY", flush=True)
    servers[0].join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["servers", "chief", "single"])
    parser.add_argument("--cluster", help="servers: the cluster spec (JSON)")
    parser.add_argument("--tasks", nargs="*", default=[], help="servers: job:index ...")
    parser.add_argument("--no-fit", action="store_true", help="skip the tf-keras fit part")
    args = parser.parse_args()
    if args.mode == "servers":
        run_servers(json.loads(args.cluster), args.tasks)
        return
    run = run_chief if args.mode == "chief" else run_single
    print("RESULT " + json.dumps(run(not args.no_fit)), flush=True)
    # The coordinator's threads can keep a finished process alive: leave at once.
    os._exit(0)


if __name__ == "__main__":
    main()
