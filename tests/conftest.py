"""Test configuration shared by the whole suite.

The suite runs once per Keras flavour (``python tests/run_both_keras.py`` does both): Keras 3, and
tf-keras with ``TF_USE_LEGACY_KERAS=1``, where TensorFlow Recommenders imports. The CPU is split into
two logical devices before TensorFlow starts, so ``tf.distribute.MirroredStrategy`` tests run on any
machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

from tfsmooth import _keras  # noqa: E402

LOGICAL_CPUS = ["/cpu:0", "/cpu:1"]


def pytest_report_header(config):
    return f"tfsmooth tests under {_keras.KERAS_FLAVOUR}; TensorFlow {tf.__version__}"


def tfrs_available() -> bool:
    if _keras.IS_KERAS_3:
        return False
    try:
        import tensorflow_recommenders  # noqa: F401
    except ImportError:
        return False
    return True


requires_tfrs = pytest.mark.skipif(
    not tfrs_available(),
    reason="TensorFlow Recommenders needs tf-keras: runs in the TF_USE_LEGACY_KERAS=1 pass",
)


@pytest.fixture
def keras():
    return _keras.keras


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def mirrored_strategy():
    """MirroredStrategy over the two logical CPU devices, reducing through one device.

    TensorFlow gives every new MirroredStrategy of a process the same collective group and instance
    keys, and its collective runtime remembers the shapes of earlier strategies' ops, so a second
    strategy trained with collectives in the same pytest process aborts with "Shape mismatch in the
    collective instance 100" (tensorflow/tensorflow#62790). Reduction to one device uses no
    collectives, so a test neither suffers from nor leaves that state, whatever runs before it. The
    collective path itself is covered by the multi-worker test, which runs in its own processes.
    """
    return tf.distribute.MirroredStrategy(
        LOGICAL_CPUS, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
