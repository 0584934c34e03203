"""EventWriter: the StabilityMonitor's per-batch records as TensorBoard scalars."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf


def _scalar_metadata():
    metadata = tf.compat.v1.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    return metadata


def write_scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar, written with TensorFlow alone (``tf.summary.scalar`` needs the
    tensorboard package; this is what it writes)."""
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=_scalar_metadata())


class EventWriter:
    """Writes each record (``{"step", "loss", "loss_average", "spike", "layers": {...}}``) as
    scalars ``stability/loss``, ``stability/loss_average``, ``stability/spike`` and
    ``signal/layer`` under ``log_dir/stability``.

    Example:

    >>> import tempfile
    >>> writer = EventWriter(tempfile.mkdtemp())
    >>> writer.write({"step": 0, "loss": 1.5, "loss_average": 1.5, "spike": False})
    >>> writer.close()
    """

    def __init__(self, log_dir: str):
        self._writer = tf.summary.create_file_writer(os.path.join(log_dir, "stability"))

    def write(self, record: dict[str, Any]) -> None:
        step = record["step"]
        with self._writer.as_default():
            for name in ("loss", "loss_average"):
                if record.get(name) is not None:
                    write_scalar(f"stability/{name}", record[name], step)
            write_scalar("stability/spike", float(record["spike"]), step)
            for layer, values in record.get("layers", {}).items():
                for name, value in values.items():
                    write_scalar(f"{name}/{layer}", value, step)

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()
