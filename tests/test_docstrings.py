"""Every public symbol documents itself (CONTRIBUTING.md: Google docstrings with an example).

For each name in the ``__all__`` of every ``tfsmooth`` submodule:

- a function or class has an ``Example:`` section holding at least one ``>>>`` line;
- a function has ``Returns:`` (or ``Yields:``), and ``Args:`` when it takes parameters;
- a class has ``Args:`` or, for dataclasses and result classes, ``Attributes:``;
- anything else is a module constant with a ``#:`` comment on the line above its assignment.

These checks are pure inspection (well under a second once TensorFlow is imported);
``test_every_example_runs`` then runs every module's examples with doctest in a fresh process.
"""

from __future__ import annotations

import ast
import inspect
import os
import pathlib
import re
import subprocess
import sys

import pytest
from helpers import public_objects

import tfsmooth

PACKAGE_DIR = pathlib.Path(tfsmooth.__file__).parent


def _is_documented_kind(obj) -> bool:
    return inspect.isclass(obj) or inspect.isfunction(obj)


def _documented():
    return [pytest.param(q, obj, id=q) for q, obj in public_objects() if _is_documented_kind(obj)]


def _constants():
    return [
        pytest.param(q, obj, id=q) for q, obj in public_objects() if not _is_documented_kind(obj)
    ]


def _has_section(doc: str, *titles: str) -> bool:
    return any(re.search(rf"^\s*{title}:\s*$", doc, re.MULTILINE) for title in titles)


def _missing_sections(obj) -> list[str]:
    doc = inspect.getdoc(obj) or ""
    missing = []
    example = re.search(r"^\s*Examples?:\s*$(.*)", doc, re.MULTILINE | re.DOTALL)
    if not example or ">>>" not in example.group(1):
        missing.append("Example (with >>> lines)")
    if inspect.isclass(obj):
        if not _has_section(doc, "Args", "Attributes"):
            missing.append("Args or Attributes")
    else:
        # A function without parameters (``default_data_path()``) has nothing to list under Args.
        if inspect.signature(obj).parameters and not _has_section(doc, "Args"):
            missing.append("Args")
        if not _has_section(doc, "Returns", "Yields"):
            missing.append("Returns")
    return missing


@pytest.mark.parametrize("qualified, obj", _documented())
def test_public_symbol_has_example_and_arguments(qualified, obj):
    missing = _missing_sections(obj)
    assert not missing, f"{qualified} docstring lacks: {', '.join(missing)}"


def _lines_above_assignments(submodule: str, name: str) -> list[str]:
    """The line above each module-level assignment of ``name`` in the files of ``submodule``."""
    package = PACKAGE_DIR / submodule
    paths = sorted(package.rglob("*.py")) if package.is_dir() else [PACKAGE_DIR / f"{submodule}.py"]
    found = []
    for path in paths:
        lines = path.read_text().splitlines()
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found.append(lines[node.lineno - 2].strip() if node.lineno > 1 else "")
    return found


@pytest.mark.parametrize("qualified, obj", _constants())
def test_public_constant_has_a_comment(qualified, obj):
    name = qualified.split(".")[-1]
    assert isinstance(obj, (tuple, frozenset, str, int, float)), (
        f"{qualified} is public but neither a function, a class nor a constant: "
        f"{type(obj).__name__}"
    )
    submodule = qualified.split(".")[0]
    above = _lines_above_assignments(submodule, name)
    assert above, f"no module-level assignment of {name} found under tfsmooth/{submodule}"
    assert all(line.startswith("#:") for line in above), (
        f"{qualified} needs a `#:` comment on the line above its assignment. Received: {above!r}"
    )


def test_the_check_sees_the_whole_api():
    """Guards the test itself: it walks every submodule and recognises a complete docstring."""
    names = {q for q, obj in public_objects() if _is_documented_kind(obj)}
    assert {
        "activations.smelu",
        "layers.SmeLU",
        "data.RankingData",
        "serving.export_model",
    } <= names
    assert {q.split(".")[0] for q in names} >= set(tfsmooth._SUBMODULES) - {"tasks"}
    from tfsmooth.activations import smelu

    assert _missing_sections(smelu) == []

    def undocumented(x):
        """No sections here."""

    assert _missing_sections(undocumented) == ["Example (with >>> lines)", "Args", "Returns"]


_RUN_EXAMPLES = """
import doctest, importlib, pkgutil, sys
import tfsmooth

failed = 0
for info in pkgutil.walk_packages(tfsmooth.__path__, "tfsmooth."):
    if info.name.endswith(("__main__", ".cli")):
        continue
    try:
        module = importlib.import_module(info.name)
    except ImportError:  # needs TFRS, under Keras 3
        continue
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    failed += doctest.testmod(module, optionflags=flags).failed
sys.exit(1 if failed else 0)
"""


@pytest.mark.slow
def test_every_example_runs():
    """The docstrings' examples run and print what they say, in a fresh process (no state from
    other tests), in this process's Keras flavour."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", _RUN_EXAMPLES],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:]
