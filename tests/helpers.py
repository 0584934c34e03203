"""Assertions shared by the test files: whole-config round trips and serving without tfsmooth."""

from __future__ import annotations

import json
import os
import pathlib
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
