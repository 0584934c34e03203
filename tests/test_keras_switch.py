"""The Keras switch: one module decides, exactly as TensorFlow does, and everything is registered."""

from __future__ import annotations

import ast
import inspect
import os
import pathlib
import subprocess
import sys

import pytest
import tensorflow as tf
from helpers import public_objects

import tfsmooth
from tfsmooth import _keras

PACKAGE_DIR = pathlib.Path(tfsmooth.__file__).parent


def _python(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    environment.update(env, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_keras_is_what_tf_keras_resolves_to():
    assert _keras.keras.layers.Layer is tf.keras.layers.Layer
    legacy = os.environ.get("TF_USE_LEGACY_KERAS", "") in ("1", "true", "True")
    assert _keras.IS_KERAS_3 is not legacy
    assert ("tf_keras" if legacy else "keras3") == _keras.KERAS_FLAVOUR


@pytest.mark.parametrize(
    "value, flavour", [(None, "keras3"), ("0", "keras3"), ("1", "tf_keras"), ("True", "tf_keras")]
)
def test_flavour_follows_tensorflow_rule_in_a_fresh_process(value, flavour):
    env = {} if value is None else {"TF_USE_LEGACY_KERAS": value}
    code = (
        "import tensorflow as tf; from tfsmooth import _keras; "
        "assert _keras.keras.layers.Dense is tf.keras.layers.Dense; print(_keras.KERAS_FLAVOUR)"
    )
    assert _python(code, **env) == flavour


def test_import_tfsmooth_does_not_import_tensorflow():
    code = "import sys, tfsmooth; print(tfsmooth.__version__, 'tensorflow' in sys.modules)"
    version, imported = _python(code).split()
    assert version == tfsmooth.__version__ and imported == "False"


#: The switch's answers: reading any of them outside ``_keras.py`` is asking which Keras is loaded.
FLAVOUR_NAMES = ("IS_KERAS_3", "KERAS_FLAVOUR", "TF_USE_LEGACY_KERAS")


def _keras_questions(tree: ast.AST):
    """Code (not docs) that asks which Keras is loaded: imports of keras/tf_keras, ``tf.keras``,
    the environment variable, or a read of the switch's flavour flags in any form."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("keras", "tf_keras"):
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in ("keras", "tf_keras"):
                yield node.lineno, f"from {node.module} import ..."
            for alias in node.names:
                if alias.name in FLAVOUR_NAMES:
                    yield node.lineno, f"imports {alias.name}"
        elif isinstance(node, ast.Attribute):
            value = node.value
            if (
                node.attr == "keras"
                and isinstance(value, ast.Name)
                and value.id in ("tf", "tensorflow")
            ):
                yield node.lineno, "tf.keras"
            if node.attr in FLAVOUR_NAMES:
                yield node.lineno, f"reads .{node.attr}"
        elif isinstance(node, ast.Name) and node.id in FLAVOUR_NAMES:
            yield node.lineno, f"reads {node.id}"
        elif isinstance(node, ast.Constant) and node.value in FLAVOUR_NAMES:
            yield node.lineno, f"names {node.value!r}"


def _offenders(package_dir: pathlib.Path) -> list[str]:
    return [
        f"{path.relative_to(package_dir)}:{line}: {what}"
        for path in sorted(package_dir.rglob("*.py"))
        if path.name != "_keras.py"
        for line, what in _keras_questions(ast.parse(path.read_text()))
    ]


def test_only_the_switch_module_asks_which_keras():
    offenders = _offenders(PACKAGE_DIR)
    assert not offenders, offenders
    switch = ast.parse((PACKAGE_DIR / "_keras.py").read_text())
    assert any(what == "tf.keras" for _, what in _keras_questions(switch))


@pytest.mark.parametrize(
    "planted",
    [
        "from tfsmooth._keras import IS_KERAS_3",
        "from tfsmooth import _keras\nif _keras.IS_KERAS_3:\n    pass",
        "from tfsmooth import _keras as k\nflavour = k.KERAS_FLAVOUR == 'keras3'",
        "import os\nlegacy = os.environ.get('TF_USE_LEGACY_KERAS')",
        "from tfsmooth import _keras\nflag = getattr(_keras, 'IS_KERAS_3')",
        "import tf_keras",
        "import tensorflow as tf\nlayer = tf.keras.layers.Dense",
    ],
)
def test_the_guard_catches_a_planted_read(tmp_path, planted):
    """A copy of the package with one flavour read planted in a module: the guard must name it."""
    import shutil

    copy = tmp_path / "tfsmooth"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "losses" / "_planted.py"
    target.write_text(planted + "\n")
    planted_offenders = [o for o in _offenders(copy) if o.startswith("losses/_planted.py")]
    assert planted_offenders, planted


def _needs_registration(obj) -> bool:
    keras = _keras.keras
    bases = (
        keras.layers.Layer,
        keras.losses.Loss,
        keras.metrics.Metric,
        keras.optimizers.Optimizer,
        keras.callbacks.Callback,
        keras.constraints.Constraint,
    )
    return inspect.isclass(obj) and issubclass(obj, bases)


def test_every_public_keras_object_is_registered_under_tfsmooth():
    keras = _keras.keras
    checked = []
    for qualified, obj in public_objects():
        is_activation = qualified.startswith("activations.") and inspect.isfunction(obj)
        if not (is_activation or _needs_registration(obj)):
            continue
        assert keras.utils.get_registered_name(obj) == f"tfsmooth>{obj.__name__}", qualified
        assert keras.utils.get_registered_object(f"tfsmooth>{obj.__name__}") is obj
        checked.append(qualified)
    assert {"activations.smelu", "layers.SmeLU", "layers.GeneralizedSmeLU"} <= set(checked)
