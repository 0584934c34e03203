"""A small retrieval model trained data-parallel with SmeLU, Scalable Cross-Entropy and ClippyAdagrad.

Run by tests/test_multi_worker.py.

Modes:
  worker  -- one worker of a MultiWorkerMirroredStrategy cluster (TF_CONFIG set by the test);
  single  -- the same training in one process without any strategy: each step averages the loss
             of the two replica batches, which is what synchronous data parallelism computes.

Each replica r at step s trains on its own fixed batch, built from (s, r) alone, so every mode sees
the same data. Prints ``RESULT {json}`` with the final weights.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

from tfsmooth._keras import keras
from tfsmooth.layers import SmeLU
from tfsmooth.losses import scalable_cross_entropy
from tfsmooth.optimizers import ClippyAdagrad

REPLICAS = 2
STEPS = 6
N_USERS, N_ITEMS, DIM, BATCH = 50, 300, 16, 32


def replica_batch(step: int, replica: int):
    rng = np.random.default_rng(1000 * step + replica)
    users = rng.integers(0, N_USERS, size=BATCH).astype("int32")
    items = ((users * 7 + rng.integers(0, 5, size=BATCH)) % N_ITEMS).astype("int32")
    return users, items


class Retrieval(keras.Model):
    """Query tower with SmeLU; an item table scored against every query."""

    def __init__(self):
        super().__init__()
        init = keras.initializers.RandomNormal(stddev=0.1, seed=3)
        self.user_embedding = keras.layers.Embedding(N_USERS, DIM, embeddings_initializer=init)
        self.hidden = keras.layers.Dense(
            32, kernel_initializer=keras.initializers.GlorotUniform(seed=4)
        )
        self.activation = SmeLU(beta=0.5, learnable=True)
        self.projection = keras.layers.Dense(
            DIM, kernel_initializer=keras.initializers.GlorotUniform(seed=5)
        )
        self.item_embedding = keras.layers.Embedding(N_ITEMS, DIM, embeddings_initializer=init)
        self.item_embedding.build((None,))

    def call(self, users):
        return self.projection(self.activation(self.hidden(self.user_embedding(users))))

    def retrieval_loss(self, users, items, step, replica):
        # A stateless seed per (step, replica): every mode draws the same bucket centres.
        seed = tf.stack([tf.cast(step, tf.int64), tf.cast(replica, tf.int64)])
        return scalable_cross_entropy(
            self(users), self.item_embedding.embeddings, items, bucket_size_y=32, seed=seed
        )


def make_optimizer():
    return ClippyAdagrad(learning_rate=0.5, absolute_threshold=1e-2)


def weights_of(model) -> dict:
    return {v.name + f"#{i}": np.asarray(v).tolist() for i, v in enumerate(model.weights)}


def run_worker() -> dict:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == REPLICAS
    with strategy.scope():
        model = Retrieval()
        model(tf.zeros((1,), tf.int32))
        optimizer = make_optimizer()

    @tf.function
    def train_step(users, items, step):
        def replica_step(users, items):
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            with tf.GradientTape() as tape:
                loss = model.retrieval_loss(users, items, step, replica) / REPLICAS
            variables = model.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        losses = strategy.run(replica_step, args=(users, items))
        return strategy.reduce("SUM", losses, axis=None)

    for step in range(STEPS):
        users = strategy.experimental_distribute_values_from_function(
            lambda ctx, step=step: replica_batch(step, ctx.replica_id_in_sync_group)[0]
        )
        items = strategy.experimental_distribute_values_from_function(
            lambda ctx, step=step: replica_batch(step, ctx.replica_id_in_sync_group)[1]
        )
        train_step(users, items, tf.constant(step))
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    return {"task": task, "weights": weights_of(model)}


def run_single() -> dict:
    model = Retrieval()
    model(tf.zeros((1,), tf.int32))
    initial = weights_of(model)
    optimizer = make_optimizer()

    @tf.function
    def train_step(batches, step):
        with tf.GradientTape() as tape:
            losses = [model.retrieval_loss(u, i, step, r) for r, (u, i) in enumerate(batches)]
            loss = tf.add_n(losses) / REPLICAS
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    for step in range(STEPS):
        train_step([replica_batch(step, r) for r in range(REPLICAS)], tf.constant(step))
    return {"task": "single", "weights": weights_of(model), "initial": initial}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["worker", "single"])
    args = parser.parse_args()
    result = run_worker() if args.mode == "worker" else run_single()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
